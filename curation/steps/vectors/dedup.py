"""Semantic dedup and multi-level structure: the `dedup` workflow (a global step, not per row).

    embeddings/<encoder> -> k-NN graph (faiss / cuVS, sharded over Ray actors)
        -> proximity graph: edges with similarity >= tau, symmetrised  -> graph_edges/<encoder>
        -> connected components, then Leiden inside each (components fanned out to Ray tasks)
        -> duplicate groups, merged with pHash near-duplicate groups (and exact copies: one pool
           id already holds every uri of identical bytes) into ONE group per item
        -> one keeper per group by the quality key (never by input order)
        -> community ids at several Leiden resolutions over the whole k-NN graph (the
           multi-level semantic structure used for balancing)               -> dedup

Leiden is used instead of connected components alone because components chain: A~B~C with
A and C far apart end up in one group (the field notes' 0.82-0.90 pairs at tau 0.9); Leiden
splits such chains into their dense cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage import schemas
from curation.storage.schemas import DEDUP, embeddings_table, graph_edges_table
from curation.storage.lake import Lake
from curation.steps.export.neardup import NearDupConfig, choose_keepers, near_duplicate_labels
from operators.nearhash import HASH_COLUMNS
from curation.steps.summary import StepSummary
from curation.steps.vectors.embeddings import read_embeddings, resolve_encoder
from curation.steps.vectors.index_store import save_stored
from graph.communities import communities_by_component, connected_components
from graph.knn import KnnResult, knn_graph, knn_graph_and_index, validate_vectors
from graph.proximity import edges_table, proximity_edges, saturation_rate



@dataclass
class DedupConfig:
    """dedup step options.

    encoder: which `embeddings/<encoder>` table to use; None = the only one in the lake.
    k: neighbours per item in the k-NN graph (the report uses 100; raise it if the summary's
        saturation rate is high).
    tau: cosine similarity at or above which two items are duplicates.
    resolution: Leiden resolution inside duplicate components (higher = smaller groups).
    levels: Leiden resolutions over the whole k-NN graph (edges >= level_tau), coarse to fine
        or any order; one `community_l<i>` column each.
    level_tau: minimum similarity of k-NN edges used for the levels.
    backend: k-NN backend ("auto", "faiss-flat", "faiss-ivf", "faiss-hnsw", "cuvs-brute",
        "cuvs-cagra"); knn_params: that backend's parameters (e.g. {ef_search: 64} for HNSW,
        {nprobe: 32} for IVF; see graph.knn); leiden_backend: "auto", "graspologic", "cugraph" (igraph / leidenalg
        are GPL and opt-in).
    shards: >1 splits the index over that many Ray actors (data larger than one worker).
    phash_max_distance: merge pHash near-duplicates within this many bits; None = off.
    window_distance: merge near-duplicates whose window hashes (`nearhash` operator: framed,
        cropped, slightly rotated copies) agree within this many bits (see
        `neardup.NearDupConfig`, whose strict distance applies); None = off. Both go through
        the export's decision (`neardup.near_duplicate_labels`).
    keep_by: quality key choosing each group's keeper ("column asc|desc"; `pixels` = w*h;
        columns from profiles and scores; ties by id).
    seed: Leiden seed.
    mode: "full" recomputes the whole pool; "incremental" decides only the items embedded since
        the last run and the groups they touch (`curation.steps.vectors.incremental`; needs a
        previous full run, and falls back to one when the lake has none). The nightly job uses
        incremental; run a full one now and then (community columns of old items drift).
    """

    encoder: str | None = None
    k: int = field(default=32, metadata={"min": 1})
    tau: float = field(default=0.9, metadata={"min": -1.0, "max": 1.0})
    resolution: float = field(default=1.0, metadata={"gt": 0})
    levels: list[float] = field(default_factory=lambda: [0.05, 0.5], metadata={"gt": 0})
    level_tau: float = field(default=0.5, metadata={"min": -1.0, "max": 1.0})
    backend: str = "auto"
    knn_params: dict[str, Any] = field(default_factory=dict)
    leiden_backend: str = "auto"
    shards: int = field(default=1, metadata={"min": 1})
    phash_max_distance: int | None = field(default=4, metadata={"min": 0, "max": 16})
    window_distance: int | None = field(default=10, metadata={"min": 0, "max": 16})
    keep_by: list[str] = field(default_factory=lambda: ["aesthetic desc", "pixels desc", "clip_alignment desc"])
    seed: int = 0
    mode: str = "full"

    def __post_init__(self) -> None:
        if not -1.0 <= self.tau <= 1.0 or not -1.0 <= self.level_tau <= 1.0:
            raise ValueError("tau and level_tau are cosine similarities in [-1, 1]")
        if self.k < 1 or self.shards < 1:
            raise ValueError("k and shards must be >= 1")

    def knn_setting(self) -> dict[str, Any]:
        """What a saved k-NN index must have been built with to be reused (`index_store`)."""
        return {"backend": self.backend, "params": dict(self.knn_params)}


@dataclass
class DedupResult:
    """In-memory result of `semantic_groups` (row numbers index the input vectors)."""

    knn: KnnResult
    src: np.ndarray
    dst: np.ndarray
    sim: np.ndarray
    groups: np.ndarray  # int64[n]: duplicate community label (smallest row of the community)
    levels: np.ndarray  # int64[n, len(cfg.levels)]
    saturation: float


def semantic_groups(vectors: np.ndarray, cfg: DedupConfig, *, knn: KnnResult | None = None,
                    map_fn: Callable[[Callable, Iterable], Iterable] = map) -> DedupResult:
    """Duplicate communities and levels of one vector set; pure apart from `map_fn` (pass a Ray
    map to fan components out). `knn` may be given (e.g. from the sharded builder)."""
    x = validate_vectors(vectors)
    n = x.shape[0]
    if knn is None:
        knn = knn_graph(x, min(cfg.k, max(n - 1, 1)), backend=cfg.backend, **cfg.knn_params)
    src, dst, sim = proximity_edges(knn.ids, knn.sims, cfg.tau)
    groups = communities_by_component(n, src, dst, sim, [cfg.resolution], seed=cfg.seed,
                                      backend=cfg.leiden_backend, map_fn=map_fn)[:, 0]
    if cfg.levels:
        lsrc, ldst, lsim = proximity_edges(knn.ids, knn.sims, cfg.level_tau)
        levels = communities_by_component(n, lsrc, ldst, lsim, list(cfg.levels), seed=cfg.seed,
                                          backend=cfg.leiden_backend, map_fn=map_fn)
    else:
        levels = np.zeros((n, 0), np.int64)
    return DedupResult(knn, src, dst, sim, groups, levels, saturation_rate(knn.sims, cfg.tau) if n > 1 else 0.0)


def ray_map(fn: Callable, items: Iterable, chunks: int | None = None) -> list:
    """`map` over Ray tasks, items batched into a few chunks (one task per tiny component
    would cost more in scheduling than the Leiden call itself)."""
    import ray

    from curation.runtime import cluster_cpus

    items = list(items)
    if not items:
        return []
    chunks = chunks or 4 * cluster_cpus()
    size = -(-len(items) // chunks)
    remote = ray.remote(_apply_chunk)
    parts = ray.get([remote.remote(fn, items[i:i + size]) for i in range(0, len(items), size)])
    return [r for part in parts for r in part]


def _apply_chunk(fn: Callable, items: list) -> list:
    return [fn(x) for x in items]


def _quality_table(lake: Lake, ids: pa.Array | None = None) -> pa.Table:
    """id + every profile and score column (for keep_by and pHash), one row per pool id (per
    pool id in `ids` when given)."""
    from curation.steps.export.export import StageConfig, evaluate
    from curation.steps.export.rules import RulesConfig

    neutral = StageConfig(rules=RulesConfig(drop_errors=False), neardup=NearDupConfig(enabled=False),
                          apply_dedup=False, apply_removals=False)
    table = evaluate(lake, neutral, ids=ids).table
    return table.drop_columns([c for c in ("keep", "reason", "dup_group") if c in table.column_names])


def dedup(lake: Lake, cfg: DedupConfig, *, map_fn: Callable[[Callable, Iterable], Iterable] | None = None) -> StepSummary:
    """Run the workflow over the lake; write `dedup` (overwrite) and `graph_edges/<encoder>`.
    map_fn: how Leiden fans out over components (default: Ray tasks, `ray_map`; the
        incremental mode keeps a small dirty subgraph in this process)."""
    if cfg.mode == "incremental" and lake.exists(DEDUP):
        return _incremental(lake, cfg, map_fn)  # None: Ray only for a large dirty subgraph
    t0 = time.perf_counter()
    name = resolve_encoder(lake, cfg.encoder, setting="dedup.encoder")
    emb_version = lake.version(embeddings_table(name))
    emb_ids, vectors = read_embeddings(lake, name, version=emb_version, dtype=np.float32)
    ids = emb_ids.to_numpy(zero_copy_only=False)
    knn = index = None
    if cfg.shards > 1 and len(ids) > 1:
        from curation.steps.vectors.sharded import sharded_knn_graph

        knn = sharded_knn_graph(validate_vectors(vectors), min(cfg.k, len(ids) - 1), cfg.shards,
                                backend=cfg.backend, **cfg.knn_params)
    elif len(ids):  # the index is kept: saved for the incremental runs
        knn, index = knn_graph_and_index(vectors, min(cfg.k, max(len(ids) - 1, 1)), backend=cfg.backend,
                                         **cfg.knn_params)
    result = semantic_groups(vectors, cfg, knn=knn, map_fn=map_fn or ray_map) if len(ids) else None
    quality = _quality_table(lake)
    table = decide(quality, ids, result, cfg)
    edges = edges_table(result.src, result.dst, result.sim) if result else edges_table(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    edges = edges.append_column("src_id", pa.array(ids[edges["src"].to_numpy()] if len(ids) else [], pa.string()))
    edges = edges.append_column("dst_id", pa.array(ids[edges["dst"].to_numpy()] if len(ids) else [], pa.string()))
    producer = {"step": "dedup", "encoder": name, "k": cfg.k, "tau": cfg.tau, "resolution": cfg.resolution,
                "levels": cfg.levels, "backend": cfg.backend, "leiden_backend": cfg.leiden_backend}
    lake.write(graph_edges_table(name), edges, mode="overwrite", producer=producer)
    lake.write(DEDUP, table, mode="overwrite", producer=producer)
    index_note = "not saved (sharded k-NN)" if index is None else (
        save_stored(lake, name, index, emb_ids, emb_version, cfg.knn_setting(), "dedup") or "saved for incremental runs")
    removed = int(table.num_rows - pc.sum(table["keep"]).as_py()) if table.num_rows else 0
    kinds = table.filter(pc.invert(table["keep"]))["dup_kind"].value_counts().to_pylist() if removed else []
    return StepSummary("dedup", table.num_rows, table.num_rows - removed, time.perf_counter() - t0, notes={
        "encoder": name, "embedded": len(ids), "edges": edges.num_rows, "index": index_note,
        "saturation_rate": round(result.saturation, 4) if result else 0.0,
        "removed_by_kind": {k["values"]: k["counts"] for k in kinds},
        "groups_with_duplicates": int(pc.sum(pc.greater(table["group_size"], 1)).as_py() or 0) if table.num_rows else 0,
        **({"WARNING": f"saturation {result.saturation:.1%}: many items still have a neighbour >= tau at rank k; raise k"}
           if result and result.saturation > 0.05 else {}),
    })


def hash_labels(quality: pa.Table, cfg: DedupConfig) -> np.ndarray | None:
    """pHash / window-hash near-duplicate label per row of `quality` (smallest row of its
    group), or None when the config or the table has no hash signal. Link-based (connected
    components of pairwise matches), so a subset of rows closed under these groups gets the
    same partition (what the incremental dedup relies on)."""
    signals = [c for c in (["phash"] if cfg.phash_max_distance is not None else [])
               + (list(HASH_COLUMNS) if cfg.window_distance is not None else []) if c in quality.column_names]
    if not signals:
        return None
    window = cfg.window_distance or 0
    decision = NearDupConfig(max_distance=cfg.phash_max_distance or 0, windows=cfg.window_distance is not None,
                             window_distance=window,
                             window_strict_distance=min(NearDupConfig().window_strict_distance, window))
    return near_duplicate_labels(quality.select(signals), decision)


def hash_table(lake: Lake, cfg: DedupConfig) -> pa.Table:
    """id (every pool id, sorted) + the profile columns `hash_labels` reads: what
    `_quality_table` holds of them, without joining every other table."""
    ids = lake.read("pool", columns=["id"]).sort_by("id")
    wanted = (["phash"] if cfg.phash_max_distance is not None else []) + \
        (list(HASH_COLUMNS) if cfg.window_distance is not None else [])
    if not wanted or not lake.exists("profiles"):
        return ids
    have = [c for c in wanted if c in lake.dataset("profiles").schema.names]
    if not have:
        return ids
    profiles = lake.read("profiles", columns=["id", *have])
    at = pc.index_in(ids["id"], value_set=profiles["id"])
    for c in have:
        ids = ids.append_column(profiles.schema.field(c), profiles[c].take(at))
    return ids


def decide(quality: pa.Table, emb_ids: np.ndarray, result: DedupResult | None, cfg: DedupConfig) -> pa.Table:
    """One decision per pool id: union of semantic and pHash duplicate relations, one keeper per
    group by `cfg.keep_by`. Items without an embedding or hash are their own group."""
    quality = quality.sort_by("id")
    n = quality.num_rows
    row_of = {v: i for i, v in enumerate(quality["id"].to_pylist())}
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    semantic = np.zeros(n, bool)
    phashed = np.zeros(n, bool)
    levels = np.full((n, len(cfg.levels)), None, object)  # community ids (representative item id)
    if result is not None and len(emb_ids):
        rows = np.array([row_of.get(i, -1) for i in emb_ids], np.int64)
        present = rows >= 0
        g = result.groups
        # link every embedded row to its community's representative row
        a, b = rows[present], rows[g[present]]
        ok = b >= 0
        a_parts.append(a[ok])
        b_parts.append(b[ok])
        semantic[a[ok & (a != b)]] = True
        semantic[b[ok & (a != b)]] = True
        if result.levels.size:
            levels[rows[present]] = np.asarray(emb_ids, object)[result.levels[present]]
    pg = hash_labels(quality, cfg)
    if pg is not None:
        a_parts.append(np.arange(n))
        b_parts.append(pg)
        multi = np.bincount(pg, minlength=n)[pg] > 1
        phashed[multi] = True
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, np.int64)
    groups = connected_components(n, a, b)
    # a key whose columns the lake lacks (no profiles: no width / height for `pixels`) is skipped
    have = set(quality.column_names) | ({"pixels"} if {"width", "height"} <= set(quality.column_names) else set())
    keep_by = [k for k in cfg.keep_by if k.split()[0] in have]
    keep = choose_keepers(quality, groups, keep_by)
    keeper = np.empty(n, np.int64)
    keeper[groups[keep]] = np.flatnonzero(keep)
    ids = quality["id"]
    size = np.bincount(groups, minlength=n)[groups]
    kind = np.where(semantic & phashed, "semantic+phash", np.where(semantic, "semantic", np.where(phashed, "phash", "")))
    copies = pc.list_value_length(quality["uris"]).fill_null(1) if "uris" in quality.column_names else pa.array(np.ones(n, np.int32))
    cols: dict[str, Any] = {
        "id": ids, "group_id": ids.take(pa.array(keeper[groups])),
        "group_size": pa.array(size.astype(np.int32)), "keep": pa.array(keep),
        "dup_kind": pa.array([k or None for k in kind.tolist()], pa.string()),
        "exact_copies": pa.array(np.asarray(copies, dtype=np.int32)),
    }
    for i in range(len(cfg.levels)):
        cols[f"community_l{i}"] = pa.array(levels[:, i], pa.string())
    return schemas.conform(pa.table(cols), schemas.dedup_schema(len(cfg.levels)))


def _incremental(lake: Lake, cfg: DedupConfig, map_fn) -> StepSummary:
    import datetime as dt

    from curation.steps.vectors.incremental import incremental_dedup

    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    report = incremental_dedup(lake, cfg, run_id, map_fn=map_fn)
    changed = report.get("changed_keep", {})
    notes = {k: v for k, v in report.items() if k not in ("changed_keep", "seconds")}
    notes["mode"] = "incremental"
    if changed.get("kept_to_duplicate"):
        notes["kept_to_duplicate_examples"] = changed["kept_to_duplicate"][:5]
    return StepSummary("dedup", rows_in=report.get("new_items", 0), rows_out=report.get("rows_written", 0),
                       seconds=report.get("seconds", 0.0), notes=notes,
                       changes={k: v for k, v in changed.items() if v})
