"""Incremental (nightly) semantic dedup: decide only the items a night's new embeddings touch.

    new ids   = ids of `embeddings/<encoder>` (and of the pool) that `dedup` does not hold yet
    k-NN      = new vs (old + new), same backend / k / tau as the full step, on the saved index
                plus the vectors appended since (see Index below)
                -> new edges, appended to `graph_edges/<encoder>` (pairs already stored skipped)
    dirty set = the new items, closed under (a) semantic connected components over old + new
                edges, (b) the old `dedup` groups and (c) the pHash / window-hash groups
    Leiden    = `communities_by_component` on the semantic components of the dirty set only
    decide    = `dedup.decide` (the full step's grouping and keep logic) on the dirty rows only
    write     = a MERGE on `id` (`lake.transact`) of the dirty rows whose values changed plus the
                new rows; every other row of `dedup` is left as stored.

Why the closure gives the full step's answer on the dirty rows: final groups are the connected
components of (Leiden communities of semantic components) joined with (hash groups). A set that
is a union of whole semantic components and whole hash groups is closed under that join, so
`decide` on it alone produces the same groups and keepers as `decide` on the whole pool.
An untouched row's stored decision stays exact because its stored group has no dirty member.
That already follows from the two closures above: an old group is joined through old communities
(inside old components, which only grow) and old hash links (which only grow). Closing under the
old `dedup` groups as well costs nothing and guards against what breaks that argument (hash
settings changed between runs, pool rows deleted). The closure
is the connected components of the three partitions together (cheap, linear in edges + pool);
Leiden, the expensive part, re-runs only on the semantic components inside it: those that
gained edges (they contain a new item) plus, rarely, components pulled in only because an old
group or hash group spans them (re-running those yields their old communities: Leiden input
is the same node order and edges as before). The report counts both.

Index: PERSISTED in the lake (`curation.steps.vectors.index_store`, `<lake>/_indexes/<encoder>/`).
The full step saves the index it built; a night loads it, reads the vectors appended to the
embeddings since it was saved (from the Delta files added since that version, not the whole
table), and searches only the new rows: against the saved index as it is, and against the
appended vectors exactly (faiss-flat), merged per query. Why: rebuilding meant reading, converting and
validating every vector and retraining / re-routing the IVF lists, ~3.5 s of a 5 s night at
200k x 256 and growing with the lake, for 1% new rows. The embeddings table stays the source of
truth: the saved index is used only when that table's history since the saved version is
appends alone, the k-NN settings match and "auto" would still pick the saved backend; otherwise
(a re-encode, an overwrite, a missing or unreadable index, cuVS) the index is rebuilt from the
table, and the report's `index` line says which and why. Saving writes every vector (and adding
the appended ones to the loaded index copies every list they touch), so both happen only after a
rebuild or once the appended vectors exceed 10% of the saved ones.

Differences from a full recomputation (why the test asks pair F1 >= 0.99, not identity):
- only new items are queried: an old item o gets the edge (o, n) when o is among n's k
  nearest; a full run would also add it when n is among o's k nearest only (matters only when
  n has k neighbours above tau, i.e. saturation, which the full step's summary warns about);
- old edges are never removed, while a full run can push an old neighbour out of an old
  item's top k once new closer items exist (again only in saturated neighbourhoods);
- the multi-level `community_l<i>` columns (Leiden over the whole k-NN graph at `level_tau`)
  are NOT recomputed: old items keep theirs; a new item takes the level communities of its
  most similar OLD neighbour with sim >= level_tau, else those of the smallest id among the
  new items it reaches through new-new edges >= level_tau (itself when alone). The levels
  drift from a full run over time; re-run the full `dedup` step periodically for them.
- an item that was already in `dedup` (e.g. without an embedding) and got an embedding later
  is not "new" here (dedup holds its id); the full step picks it up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.vectors.dedup import (
    DedupConfig,
    DedupResult,
    _quality_table,
    decide,
    hash_labels,
    hash_table,
    ray_map,
)
from curation.steps.vectors.embeddings import decode_vectors, read_embeddings, resolve_encoder, vector_dim
from curation.steps.vectors.index_store import RESAVE_FRACTION, StoredIndex, load_stored, save_stored
from curation.storage import schemas
from curation.storage.lake import Lake
from curation.storage.schemas import DEDUP, embeddings_table, graph_edges_table
from graph.communities import communities_by_component, connected_components
from graph.knn import KnnIndex, KnnResult, choose_backend, make_index
from graph.proximity import _threshold, edges_table

__all__ = ["Vectors", "incremental_dedup", "load_vectors", "search_new"]

DECISION_COLUMNS = ("group_id", "group_size", "keep", "dup_kind", "exact_copies")


@dataclass
class Vectors:
    """Every embedded id (its position is its k-NN row) and the index to search them with:
    `index` holds rows [0, indexed) already (a saved index), `fresh` the float32 vectors of
    rows [indexed, len(ids)); `how` says which (for the report)."""

    ids: pa.Array
    index: KnnIndex | None
    indexed: int
    fresh: np.ndarray
    version: int
    how: str


def load_vectors(lake: Lake, encoder: str, cfg: DedupConfig, rebuild: str | None = None) -> Vectors:
    """The saved index plus the vectors appended since it was saved, when that is sound (the
    embeddings' history since is appends only, and the backend "auto" would pick is still the
    saved one); otherwise, or when `rebuild` gives a reason, every vector, read from the
    table (a rebuild)."""
    table = embeddings_table(encoder)
    version = lake.version(table)
    stored = rebuild or load_stored(lake, encoder, cfg.knn_setting())
    if isinstance(stored, StoredIndex):
        added = lake.added_since(table, stored.embeddings_version, columns=["id", "vector"], until=version)
        if added is None:
            stored = "the embeddings were rewritten since the index was saved"
        else:
            added = added.filter(pc.invert(pc.is_in(added["id"], value_set=stored.ids)))
            ids = pa.concat_arrays([stored.ids, added["id"].combine_chunks()])
            backend = choose_backend(len(ids), override=cfg.backend)
            if backend != stored.index.name:
                stored = f"the lake outgrew the saved {stored.index.name} index ({backend} now)"
            else:
                dim = vector_dim(added.schema.field("vector")) or stored.index.dim
                fresh = decode_vectors(added["vector"], dim, dtype=np.float32) if added.num_rows else \
                    np.zeros((0, dim or 0), np.float32)
                return Vectors(ids, stored.index, len(stored.ids), fresh, version,
                               f"saved index of {len(stored.ids)} vectors + {len(added)} appended")
    ids, vectors = read_embeddings(lake, encoder, version=version, dtype=np.float32)
    return Vectors(ids, None, 0, vectors, version, f"rebuilt from the embeddings ({stored})")


class _Codes:
    """One integer code per distinct id over several id arrays, from a single hashing pass, so
    that membership and positions between them are numpy lookups (each `pc.is_in` /
    `index_in` against a 200k-id value set would hash that set again)."""

    def __init__(self, **arrays: pa.Array | pa.ChunkedArray) -> None:
        parts = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays.values()]
        parts = [p.cast(pa.string()) if not pa.types.is_string(p.type) else p for p in parts]
        encoded = pa.concat_arrays(parts).dictionary_encode()
        self.size = len(encoded.dictionary)  # one more slot, `size`, stands for null
        codes = encoded.indices.fill_null(self.size).to_numpy(zero_copy_only=False).astype(np.int64)
        bounds = np.cumsum([0] + [len(p) for p in parts])
        self.codes = {k: codes[a:b] for k, a, b in zip(arrays, bounds[:-1], bounds[1:])}

    def positions(self, values: str, universe: str) -> np.ndarray:
        """Row of each of `values` in `universe` (its ids unique), -1 where absent or null."""
        at = np.full(self.size + 1, -1, np.int64)
        at[self.codes[universe]] = np.arange(len(self.codes[universe]))
        at[self.size] = -1
        return at[self.codes[values]]

    def missing(self, values: str, universe: str) -> np.ndarray:
        """Whether each of `values` is absent from `universe` (null: absent)."""
        have = np.zeros(self.size + 1, bool)
        have[self.codes[universe]] = True
        have[self.size] = False
        return ~have[self.codes[values]]


def search_new(vectors: Vectors, new_rows: np.ndarray, cfg: DedupConfig) -> tuple[KnnResult, KnnIndex | None]:
    """k-NN of the rows `new_rows` (all in the fresh part) against every row (old + new),
    self excluded, with the full step's k; and, after a rebuild, the index over every row
    (for `_save_index`: built once).

    Rebuild (no saved index): one index of the backend a full run would choose, over every
    row, as `knn_graph` builds it. Saved index: the saved part is searched as saved, the
    appended part exactly (faiss-flat: it is small), and the two merged per query. Adding the
    appended vectors to the loaded index instead would grow every inverted list it touches
    (1M x 256: 1.6 s of copying for 10k vectors); they are added only when it is saved."""
    n = len(vectors.ids)
    k = min(cfg.k, max(n - 1, 1))
    built = None
    if vectors.index is None:
        built = make_index(choose_backend(n, override=cfg.backend), **cfg.knn_params)
        if len(vectors.fresh):
            built.add(vectors.fresh)
    if len(new_rows) == 0 or n < 2:
        return KnnResult.empty(len(new_rows), k), built
    queries = vectors.fresh[new_rows - vectors.indexed]
    if built is not None:
        return built.search(queries, k + 1).exclude_self(new_rows), built
    appended = make_index("faiss-flat")
    appended.add(vectors.fresh, ids=np.arange(vectors.indexed, n, dtype=np.int64))
    both = vectors.index.search(queries, k + 1).merge(appended.search(queries, k + 1), k + 1)
    return both.exclude_self(new_rows), None


def _save_index(lake: Lake, encoder: str, vectors: Vectors, built: KnnIndex | None, cfg: DedupConfig,
                run_id: str) -> str:
    """Save the index over every row: `built` after a rebuild, else the loaded one once its
    appended part has grown past RESAVE_FRACTION of it (a save writes every vector); the
    report's words for what happened."""
    index = built
    if index is None:
        if len(vectors.fresh) <= RESAVE_FRACTION * vectors.indexed:
            return ""
        index = vectors.index
        index.add(vectors.fresh)
    failed = save_stored(lake, encoder, index, vectors.ids, vectors.version, cfg.knn_setting(),
                         f"dedup-incremental {run_id}")
    return f"; not saved: {failed}" if failed else "; saved"


def _new_edges(knn: KnnResult, new_rows: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (lo < hi, one per pair) with sim >= tau from the new rows' k-NN lists."""
    src = np.repeat(np.asarray(new_rows, np.int64), knn.k)
    dst = knn.ids.reshape(-1)
    sim = knn.sims.reshape(-1)
    ok = (dst >= 0) & (sim >= _threshold(tau, knn.sims)) & (dst != src)
    src, dst, sim = src[ok], dst[ok], sim[ok]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    order = np.lexsort((-sim, hi, lo))  # per pair keep the largest sim (found from both ends)
    lo, hi, sim = lo[order], hi[order], sim[order]
    first = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])] if len(lo) else np.zeros(0, bool)
    return lo[first], hi[first], sim[first]


# Dirty subgraphs up to this many edges run Leiden in this process: shipping a few thousand
# small components to Ray tasks costs more (~0.6 s at 2k components) than solving them here.
LOCAL_LEIDEN_EDGES = 200_000


def incremental_dedup(lake: Lake, cfg: DedupConfig, run_id: str, *,
                      map_fn: Callable[[Callable, Iterable], Iterable] | None = None) -> dict[str, Any]:
    """Decide the items added since the last `dedup` (full or incremental) and the groups they
    touch; append their edges to `graph_edges/<encoder>` and MERGE the changed rows into
    `dedup`. Needs a previous full `dedup` run (its table and edges). Returns the run's report:
    new_items, edges_added, components_touched (semantic components that gained edges),
    components_reclosed (pulled in by group closure only), items_redecided, rows_written,
    changed_keep {"kept_to_duplicate": [...], "duplicate_to_kept": [...]}, seconds."""
    t0 = time.perf_counter()
    if not lake.exists(DEDUP):
        raise ValueError("incremental dedup needs a previous full `dedup` run (no `dedup` table)")
    name = resolve_encoder(lake, cfg.encoder, setting="dedup.encoder")
    edges_name = graph_edges_table(name)
    stored = lake.read(DEDUP)
    stored_version = lake.version(DEDUP)
    level_cols = [c for c in stored.column_names if c.startswith("community_l")]
    # only the hash signals of every pool row: the other quality columns are read for the
    # dirty rows alone, below
    hashes = hash_table(lake, cfg)
    q_id_arr = hashes["id"].combine_chunks()
    n = len(q_id_arr)
    old_edges = lake.read(edges_name, columns=["src_id", "dst_id", "sim"]) if lake.exists(edges_name) else None
    if old_edges is None:
        old_edges = pa.table({"src_id": pa.array([], pa.string()), "dst_id": pa.array([], pa.string()),
                              "sim": pa.array([], pa.float32())})
    vecs = load_vectors(lake, name, cfg)
    while True:
        codes = _Codes(emb=vecs.ids, pool=q_id_arr, dedup=stored["id"], group=stored["group_id"],
                       src=old_edges["src_id"], dst=old_edges["dst_id"])
        emb_new = codes.missing("emb", "dedup")
        new_rows = np.flatnonzero(emb_new)
        if not (len(new_rows) and new_rows.min() < vecs.indexed):
            break
        # a crash between saving the index and committing the decisions: the vectors of the
        # undecided items are inside the saved index; rebuild from the table
        vecs = load_vectors(lake, name, cfg, rebuild="the saved index is ahead of the stored dedup decisions")
    emb_ids_arr = vecs.ids
    emb_ids = np.asarray(emb_ids_arr.to_numpy(zero_copy_only=False), object)
    m_total = max(len(emb_ids), 1)
    pool_new = codes.missing("pool", "dedup")
    q_of_emb = codes.positions("emb", "pool")
    report: dict[str, Any] = {"run_id": run_id, "encoder": name, "index": vecs.how,
                              "dedup_version_before": stored_version,
                              "new_items": int(pool_new.sum() + np.sum(q_of_emb[new_rows] < 0)),
                              "new_embedded": len(new_rows), "edges_added": 0, "components_touched": 0,
                              "components_reclosed": 0, "items_redecided": 0, "rows_written": 0,
                              "changed_keep": {"kept_to_duplicate": [], "duplicate_to_kept": []}}
    if not len(new_rows) and not pool_new.any():
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return report

    # ---- k-NN of the new rows against everything, new edges appended -------------------------
    knn, built = search_new(vecs, new_rows, cfg)
    lo, hi, sim = _new_edges(knn, new_rows, cfg.tau)
    if old_edges.num_rows:
        o_src = codes.positions("src", "emb")
        o_dst = codes.positions("dst", "emb")
        o_sim = old_edges["sim"].to_numpy()
        ok = (o_src >= 0) & (o_dst >= 0)  # edges to ids no longer embedded are ignored
        o_src, o_dst, o_sim = o_src[ok], o_dst[ok], o_sim[ok]
        o_lo, o_hi = np.minimum(o_src, o_dst), np.maximum(o_src, o_dst)
        # pairs stored already: a rerun after a crash between the two writes
        fresh = ~np.isin(lo * m_total + hi, o_lo * m_total + o_hi)
        lo, hi, sim = lo[fresh], hi[fresh], sim[fresh]
    else:
        o_lo = o_hi = np.zeros(0, np.int64)
        o_sim = np.zeros(0, np.float32)
    if len(lo):
        added = edges_table(lo, hi, sim)
        added = added.append_column("src_id", pa.array(emb_ids[lo], pa.string()))
        added = added.append_column("dst_id", pa.array(emb_ids[hi], pa.string()))
        lake.write(edges_name, added, mode="append",
                   producer={"step": "dedup-incremental", "run_id": run_id, "encoder": name, "k": cfg.k,
                             "tau": cfg.tau, "backend": cfg.backend})
    report["edges_added"] = len(lo)
    a_all = np.concatenate([o_lo, lo])
    b_all = np.concatenate([o_hi, hi])
    w_all = np.concatenate([o_sim.astype(np.float32), sim])

    # ---- dirty set: new items closed under semantic components, old groups, hash groups ------
    m_emb = len(emb_ids)
    sem_comp = connected_components(m_emb, a_all, b_all) if m_emb else np.zeros(0, np.int64)
    in_pool = q_of_emb >= 0
    links_a = [np.arange(n)]
    links_b = [np.arange(n)]
    # semantic components, expressed on pool rows: link each embedded row to its component's
    # first pool row
    comp_rep = np.full(m_emb, -1, np.int64)
    comp_rep[sem_comp[in_pool]] = q_of_emb[in_pool]  # any pool row of the component will do
    links_a.append(q_of_emb[in_pool])
    links_b.append(comp_rep[sem_comp[in_pool]])
    old_rows = codes.positions("dedup", "pool")
    old_group_rows = codes.positions("group", "pool")
    ok = (old_rows >= 0) & (old_group_rows >= 0)
    links_a.append(old_rows[ok])
    links_b.append(old_group_rows[ok])
    hl = hash_labels(hashes, cfg)
    if hl is not None:
        links_a.append(np.arange(n))
        links_b.append(hl)
    closure = connected_components(n, np.concatenate(links_a), np.concatenate(links_b))
    seeds = pool_new.copy()
    seeds[q_of_emb[new_rows][q_of_emb[new_rows] >= 0]] = True
    dirty = np.isin(closure, np.unique(closure[seeds]))

    # ---- Leiden on the dirty semantic components only ----------------------------------------
    sub = np.flatnonzero(in_pool & dirty[np.maximum(q_of_emb, 0)])  # ascending embedding rows
    local = np.full(m_emb, -1, np.int64)
    local[sub] = np.arange(len(sub))
    keep_e = (local[a_all] >= 0) & (local[b_all] >= 0) if len(a_all) else np.zeros(0, bool)
    s_src, s_dst, s_sim = local[a_all[keep_e]], local[b_all[keep_e]], w_all[keep_e]
    groups = communities_by_component(len(sub), s_src, s_dst, s_sim, [cfg.resolution], seed=cfg.seed,
                                      backend=cfg.leiden_backend,
                                      map_fn=map_fn or (map if len(s_src) <= LOCAL_LEIDEN_EDGES else ray_map))[:, 0]
    sub_comps = np.unique(sem_comp[sub])
    gained = np.unique(sem_comp[new_rows])
    multi = np.bincount(sem_comp, minlength=m_emb) > 1 if m_emb else np.zeros(0, bool)
    report["components_touched"] = len(gained)
    report["components_reclosed"] = int(np.sum(~np.isin(sub_comps, gained) & multi[sub_comps]))

    # ---- decide the dirty rows with the full step's logic ------------------------------------
    q_dirty = _quality_table(lake, ids=q_id_arr.filter(pa.array(dirty))).sort_by("id")
    result = DedupResult(knn=KnnResult.empty(len(sub), 0), src=s_src, dst=s_dst, sim=s_sim, groups=groups,
                         levels=np.zeros((len(sub), 0), np.int64), saturation=0.0)
    table = decide(q_dirty, emb_ids[sub], result, cfg)
    table = table.drop_columns([c for c in table.column_names if c.startswith("community_l")])

    # levels: old rows keep theirs; new rows inherit from their best old neighbour
    new_level = _new_item_levels(emb_ids, new_rows, knn, emb_new, cfg.level_tau, stored,
                                 codes.positions("emb", "dedup"), level_cols)
    ids_dirty = table["id"].to_pylist()
    at_old = pc.index_in(table["id"], value_set=stored["id"])
    for c in level_cols:
        fresh_vals = pa.array([new_level.get(i, {}).get(c) for i in ids_dirty], pa.string())
        table = table.append_column(c, pc.if_else(pc.is_valid(at_old), stored[c].take(at_old), fresh_vals))
    table = schemas.conform(table, schemas.dedup_schema(len(level_cols)))

    # ---- what changed, and the MERGE ----------------------------------------------------------
    before = {r["id"]: r for r in stored.filter(pc.is_in(stored["id"], value_set=pa.array(ids_dirty, pa.string())))
              .to_pylist()}
    changed_rows, to_dup, to_kept = [], [], []
    for i, row in enumerate(table.to_pylist()):
        old = before.get(row["id"])
        if old is None or any(old.get(c) != row[c] for c in row):
            changed_rows.append(i)
        if old is not None and old["keep"] and not row["keep"]:
            to_dup.append(row["id"])
        elif old is not None and not old["keep"] and row["keep"]:
            to_kept.append(row["id"])
    report["items_redecided"] = int(table.num_rows)
    report["rows_written"] = len(changed_rows)
    report["changed_keep"] = {"kept_to_duplicate": sorted(to_dup), "duplicate_to_kept": sorted(to_kept)}
    rows = table.take(pa.array(changed_rows, pa.int64()))
    if rows.num_rows:
        producer = {"step": "dedup-incremental", "run_id": run_id, "encoder": name, "k": cfg.k, "tau": cfg.tau,
                    "resolution": cfg.resolution, "backend": cfg.backend, "leiden_backend": cfg.leiden_backend,
                    "based_on_dedup_version": stored_version}
        stats = {k: report[k] for k in ("new_items", "edges_added", "components_touched", "items_redecided",
                                        "rows_written")}
        stats.update(kept_to_duplicate=len(to_dup), duplicate_to_kept=len(to_kept))
        # rows were computed from `stored`; a concurrent dedup writer would need a recompute
        lake.transact(DEDUP, lambda snapshot: rows, key="id",
                      update_columns=[c for c in rows.column_names if c != "id"], producer=producer, stats=stats)
    # after the decisions commit: a saved index never holds an id the stored dedup lacks
    report["index"] += _save_index(lake, name, vecs, built, cfg, run_id)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _new_item_levels(emb_ids: np.ndarray, new_rows: np.ndarray, knn: KnnResult, emb_new: np.ndarray,
                     level_tau: float, stored: pa.Table, stored_row: np.ndarray,
                     level_cols: list[str]) -> dict[str, dict]:
    """Level communities of the new items (see the module docstring): the best old neighbour's
    with sim >= level_tau, else the smallest id of its new-new component at level_tau.
    stored_row: each embedding row's row in `stored` (-1: none)."""
    out: dict[str, dict] = {}
    if not level_cols or not len(new_rows):
        return out
    thr = _threshold(level_tau, knn.sims)
    pos = {int(r): j for j, r in enumerate(new_rows.tolist())}
    nbr = np.maximum(knn.ids, 0)
    stored_at = stored_row[nbr]
    level_of = {c: stored[c].combine_chunks() for c in level_cols}
    a, b = [], []
    for j, r in enumerate(new_rows.tolist()):
        for nb, s, at in zip(knn.ids[j].tolist(), knn.sims[j].tolist(), stored_at[j].tolist()):
            if nb < 0 or s < thr:
                break
            if not emb_new[nb]:
                if at >= 0:
                    out[emb_ids[r]] = {c: level_of[c][at].as_py() for c in level_cols}
                    break
            elif nb in pos:
                a.append(j)
                b.append(pos[nb])
    comp = connected_components(len(new_rows), np.asarray(a, np.int64), np.asarray(b, np.int64))
    smallest: dict[int, str] = {}
    for j, r in enumerate(new_rows.tolist()):
        c = int(comp[j])
        smallest[c] = min(smallest.get(c, emb_ids[r]), emb_ids[r])
    for j, r in enumerate(new_rows.tolist()):
        out.setdefault(emb_ids[r], {c: smallest[int(comp[j])] for c in level_cols})
    return out
