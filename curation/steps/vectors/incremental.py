"""Incremental (nightly) semantic dedup: decide only the items a night's new embeddings touch.

    new ids   = ids of `embeddings/<encoder>` (and of the pool) that `dedup` does not hold yet
    k-NN      = new vs (old + new), same backend / k / tau as the full step
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

Index: REBUILT from the embeddings table on every run, not persisted. The stored float16
vectors are the source of truth and already versioned by Delta; a persisted faiss file would
be a second, unversioned copy that must be kept in step with the table (vacuum, time travel,
re-encodes) for little gain. Measured on the busy 2-core dev machine: faiss-flat over
100k x 512 vectors builds in 0.3 s; searching 2,000 new rows against it (k=33) takes 3.5 s
(only the new rows are searched: cost n_new x n_total). Above 50k vectors "auto" picks IVF,
whose training on a sample takes seconds (graph/knn/__init__.py). At 1M+ items or many new items per night, persisting a trained IVF
(training only) would be the first thing to revisit.

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
)
from curation.steps.vectors.embeddings import read_embeddings, resolve_encoder
from curation.storage import schemas
from curation.storage.lake import Lake
from curation.storage.schemas import DEDUP, graph_edges_table
from graph.communities import communities_by_component, connected_components
from graph.knn import KnnResult, choose_backend, make_index, validate_vectors
from graph.proximity import _threshold, edges_table

__all__ = ["incremental_dedup", "search_new"]

DECISION_COLUMNS = ("group_id", "group_size", "keep", "dup_kind", "exact_copies")


def search_new(vectors: np.ndarray, new_rows: np.ndarray, cfg: DedupConfig) -> KnnResult:
    """k-NN of the rows `new_rows` against all of `vectors` (old + new), self excluded: the
    rows `knn_graph` would give them in a full run (same backend choice, k, parameters)."""
    x = validate_vectors(vectors)
    n = len(x)
    k = min(cfg.k, max(n - 1, 1))
    if len(new_rows) == 0 or n < 2:
        return KnnResult.empty(len(new_rows), k)
    index = make_index(choose_backend(n, override=cfg.backend), **cfg.knn_params)
    index.add(x)
    return index.search(x[new_rows], k + 1).exclude_self(new_rows)


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


def incremental_dedup(lake: Lake, cfg: DedupConfig, run_id: str, *,
                      map_fn: Callable[[Callable, Iterable], Iterable] = map) -> dict[str, Any]:
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
    emb_ids_arr, vectors = read_embeddings(lake, name, dtype=np.float32)
    emb_ids = np.asarray(emb_ids_arr.to_numpy(zero_copy_only=False), object)
    stored = lake.read(DEDUP)
    stored_version = lake.version(DEDUP)
    level_cols = [c for c in stored.column_names if c.startswith("community_l")]
    known = set(stored["id"].to_pylist())
    quality = _quality_table(lake).sort_by("id")
    q_ids = np.asarray(quality["id"].to_pylist(), object)
    n = len(q_ids)
    row_of = {v: i for i, v in enumerate(q_ids.tolist())}

    emb_new = np.array([i not in known for i in emb_ids.tolist()], bool)
    new_rows = np.flatnonzero(emb_new)
    pool_new = np.array([i not in known for i in q_ids.tolist()], bool)
    report: dict[str, Any] = {"run_id": run_id, "encoder": name, "dedup_version_before": stored_version,
                              "new_items": int(pool_new.sum() + sum(1 for i in emb_ids[new_rows] if i not in row_of)),
                              "new_embedded": len(new_rows), "edges_added": 0, "components_touched": 0,
                              "components_reclosed": 0, "items_redecided": 0, "rows_written": 0,
                              "changed_keep": {"kept_to_duplicate": [], "duplicate_to_kept": []}}
    if not len(new_rows) and not pool_new.any():
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return report

    # ---- k-NN of the new rows against everything, new edges appended -------------------------
    knn = search_new(vectors, new_rows, cfg)
    lo, hi, sim = _new_edges(knn, new_rows, cfg.tau)
    old_edges = lake.read(edges_name, columns=["src_id", "dst_id", "sim"]) if lake.exists(edges_name) else None
    emb_row = {v: i for i, v in enumerate(emb_ids.tolist())}
    if old_edges is not None and old_edges.num_rows:
        o_src = np.array([emb_row.get(v, -1) for v in old_edges["src_id"].to_pylist()], np.int64)
        o_dst = np.array([emb_row.get(v, -1) for v in old_edges["dst_id"].to_pylist()], np.int64)
        o_sim = old_edges["sim"].to_numpy()
        ok = (o_src >= 0) & (o_dst >= 0)  # edges to ids no longer embedded are ignored
        o_src, o_dst, o_sim = o_src[ok], o_dst[ok], o_sim[ok]
        o_lo, o_hi = np.minimum(o_src, o_dst), np.maximum(o_src, o_dst)
        have = set(zip(o_lo.tolist(), o_hi.tolist()))  # a rerun after a crash between the writes
        fresh = np.array([(a, b) not in have for a, b in zip(lo.tolist(), hi.tolist())], bool)
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
    q_of_emb = np.array([row_of.get(v, -1) for v in emb_ids.tolist()], np.int64)
    in_pool = q_of_emb >= 0
    links_a = [np.arange(n)]
    links_b = [np.arange(n)]
    # semantic components, expressed on pool rows: link each embedded row to its component's
    # first pool row
    comp_rep = np.full(m_emb, -1, np.int64)
    comp_rep[sem_comp[in_pool]] = q_of_emb[in_pool]  # any pool row of the component will do
    links_a.append(q_of_emb[in_pool])
    links_b.append(comp_rep[sem_comp[in_pool]])
    old_rows = np.array([row_of.get(v, -1) for v in stored["id"].to_pylist()], np.int64)
    old_group_rows = np.array([row_of.get(v, -1) for v in stored["group_id"].to_pylist()], np.int64)
    ok = (old_rows >= 0) & (old_group_rows >= 0)
    links_a.append(old_rows[ok])
    links_b.append(old_group_rows[ok])
    hl = hash_labels(quality, cfg)
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
                                      backend=cfg.leiden_backend, map_fn=map_fn)[:, 0]
    sub_comps = np.unique(sem_comp[sub])
    gained = np.unique(sem_comp[new_rows])
    multi = np.bincount(sem_comp, minlength=m_emb) > 1 if m_emb else np.zeros(0, bool)
    report["components_touched"] = len(gained)
    report["components_reclosed"] = int(np.sum(~np.isin(sub_comps, gained) & multi[sub_comps]))

    # ---- decide the dirty rows with the full step's logic ------------------------------------
    q_dirty = quality.filter(pa.array(dirty))
    result = DedupResult(knn=KnnResult.empty(len(sub), 0), src=s_src, dst=s_dst, sim=s_sim, groups=groups,
                         levels=np.zeros((len(sub), 0), np.int64), saturation=0.0)
    table = decide(q_dirty, emb_ids[sub], result, cfg)
    table = table.drop_columns([c for c in table.column_names if c.startswith("community_l")])

    # levels: old rows keep theirs; new rows inherit from their best old neighbour
    old_levels = {c: dict(zip(stored["id"].to_pylist(), stored[c].to_pylist())) for c in level_cols}
    new_level = _new_item_levels(emb_ids, new_rows, knn, emb_new, cfg.level_tau, old_levels, level_cols)
    ids_dirty = table["id"].to_pylist()
    for c in level_cols:
        vals = [old_levels[c][i] if i in old_levels[c] else new_level.get(i, {}).get(c) for i in ids_dirty]
        table = table.append_column(c, pa.array(vals, pa.string()))
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
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _new_item_levels(emb_ids: np.ndarray, new_rows: np.ndarray, knn: KnnResult, emb_new: np.ndarray,
                     level_tau: float, old_levels: dict[str, dict], level_cols: list[str]) -> dict[str, dict]:
    """Level communities of the new items (see the module docstring): the best old neighbour's
    with sim >= level_tau, else the smallest id of its new-new component at level_tau."""
    out: dict[str, dict] = {}
    if not level_cols or not len(new_rows):
        return out
    thr = _threshold(level_tau, knn.sims)
    pos = {int(r): j for j, r in enumerate(new_rows.tolist())}
    a, b = [], []
    for j, r in enumerate(new_rows.tolist()):
        for nb, s in zip(knn.ids[j].tolist(), knn.sims[j].tolist()):
            if nb < 0 or s < thr:
                break
            if not emb_new[nb]:
                key = emb_ids[nb]
                if key in old_levels[level_cols[0]]:
                    out[emb_ids[r]] = {c: old_levels[c][key] for c in level_cols}
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
