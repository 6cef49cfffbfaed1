"""Incremental `kg weights` (`kg.weights.mode: incremental`, the nightly default): update the
pool's tag statistics additively and recompute only the samples that need it.

    stored      `weights` (with each sample's `terms`) and `tag_stats` at the version the
                weights commit names, with the totals and the normaliser (mean raw score)
    changed     samples the weights lack (new) or whose folded tags differ from the stored
                `terms` (retagged: a caption or a reviewer's label arrived); samples gone
                from the pool are removed
    statistics  TagStats.update: + the changed samples' current tags, - their stored tags
                (and those of removed samples); exact, as a recount would give
    shift       IdfShift between the stored and the updated statistics: the df-weighted mean
                relative idf change and the avgdl change
    decide      shift within `idf_tolerance`: recompute the changed samples plus the samples
                holding a tag whose own idf moved more than the tolerance (rare tags that
                gained samples), scored with the updated statistics and the STORED normaliser
                (so old and new rows share one scale), and MERGE them into `weights`;
                otherwise recompute everything (the full step).

An untouched sample's stored weight differs from a full recomputation only through the idf
and avgdl drift of its tags (each within the tolerance) and the normaliser drift; the tests
compare both ways. Any stored state that does not fit (no statistics yet, a different graph
version or parameters, statistics out of step with the pool) falls back to a full run, and
the summary says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage.lake import Lake, LakeError
from curation.storage.schemas import TAG_STATS, WEIGHTS
from graph.kg.tagstats import IdfShift, TagStats, idf_shift
from graph.kg.weights import WeightConfig

__all__ = ["Refresh", "stored_statistics", "plan_refresh"]

_MISSING = "\x00"  # key of a sample the stored weights lack (no folded tag is a bare NUL)


@dataclass(frozen=True)
class Refresh:
    """What an incremental run recomputes. stats: the updated pool statistics; rows: int64
    pool rows to recompute (sorted); removed: ids the weights hold that the pool no longer
    does; shift: how far the statistics moved; counts: new, retagged, shifted, removed."""

    stats: TagStats
    rows: np.ndarray
    removed: pa.Array
    shift: IdfShift
    counts: dict[str, int]


def stored_statistics(lake: Lake, cfg: WeightConfig, kg_version: int,
                      embedder: str | None) -> tuple[TagStats, float, pa.Table] | str:
    """(statistics, normaliser, stored (id, terms)) that an incremental run can build on, or
    the reason it cannot (then the run is full)."""
    if not lake.exists(WEIGHTS):
        return "no weights yet"
    producer = lake.commit_record(WEIGHTS).producer
    totals = producer.get("tag_stats")
    if not totals:
        return "the stored weights predate tag statistics"
    if producer.get("kg_nodes_version") != kg_version:
        return f"the graph changed (kg_nodes v{producer.get('kg_nodes_version')} -> v{kg_version})"
    if producer.get("params") != cfg.producer() or producer.get("embedder") != embedder:
        return "the weight parameters changed"
    try:
        table = lake.read(TAG_STATS, version=int(totals["version"]))
    except (LakeError, KeyError, ValueError) as exc:
        return f"the tag statistics the weights name are unreadable ({exc})"
    stored = lake.read(WEIGHTS, columns=["id", "terms"])
    return TagStats.from_table(table, totals), float(totals["mean_raw"]), stored


def plan_refresh(old: TagStats, ids: pa.Array, terms: pa.Array, stored: pa.Table, cfg: WeightConfig,
                 map_nodes: Callable[[np.ndarray], np.ndarray] | None = None) -> Refresh | str:
    """The refresh for pool samples `ids` with current folded tag lists `terms`
    (`graph.kg.tagstats.doc_terms`) against the `stored` weights rows (id, terms) described by
    `old`; or, when the statistics moved more than the tolerance or do not describe the
    stored rows, the reason to recompute fully."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    cur = pa.table({"id": ids, "row": pa.array(np.arange(n, dtype=np.int64)), "key": _keys(terms)})
    old_rows = pa.table({"id": stored["id"], "orow": pa.array(np.arange(stored.num_rows, dtype=np.int64)),
                         "okey": _keys(stored["terms"])})
    joined = cur.join(old_rows, "id", join_type="left outer").sort_by("row")
    okey = pc.fill_null(joined["okey"], _MISSING)
    new = pc.is_null(joined["orow"]).to_numpy(zero_copy_only=False)
    changed = pc.not_equal(joined["key"], okey).to_numpy(zero_copy_only=False) | new
    retagged_orow = joined["orow"].filter(pa.array(changed & ~new)).to_numpy(zero_copy_only=False).astype(np.int64)
    removed = old_rows.join(cur.select(["id"]), "id", join_type="left anti")
    stored_terms = _one(stored["terms"])
    left = pa.concat_arrays([stored_terms.take(pa.array(retagged_orow)),
                             stored_terms.take(removed["orow"].combine_chunks())])
    rows_changed = np.flatnonzero(changed)
    terms = _one(terms)
    try:
        stats = old.update(terms.take(pa.array(rows_changed)), left, map_nodes)
    except ValueError as exc:
        return str(exc)
    if stats.n_docs != n or old.n_docs != stored.num_rows:
        return (f"the stored statistics count {old.n_docs} samples for {stored.num_rows} stored rows "
                "(out of step with the weights)")
    shift = idf_shift(old, stats, cfg.idf)
    if shift.overall > cfg.idf_tolerance:
        return (f"idf shift {_pct(shift.mean)} (avgdl {_pct(shift.avgdl)}) exceeds the tolerance "
                f"{_pct(cfg.idf_tolerance)}")
    hot = stats.vocab[shift.rel > cfg.idf_tolerance]
    shifted = np.zeros(n, bool)
    if len(hot):
        flat = pc.list_flatten(terms)
        holds = pc.is_in(flat, value_set=pa.array(hot.tolist(), pa.string())).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(terms).to_numpy(zero_copy_only=False)
        shifted[parents[holds]] = True
    shifted &= ~changed
    rows = np.flatnonzero(changed | shifted)
    return Refresh(stats=stats, rows=rows, removed=removed["id"].combine_chunks(), shift=shift,
                   counts={"new": int(new.sum()), "retagged": int((changed & ~new).sum()),
                           "shifted": int(shifted.sum()), "removed": removed.num_rows})


def _one(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks else pa.array([], arr.type)
    return arr


def _keys(terms) -> pa.Array:
    """One comparable string per tag list ("" for no tags; lists never hold the separator)."""
    return pc.fill_null(pc.binary_join(_one(terms), "\x1f"), "")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"
