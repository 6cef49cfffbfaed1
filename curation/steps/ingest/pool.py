"""Ingest a source into the lake's append-only `pool` table.

Discovery runs on the driver (listing only), hashing in Ray tasks, and the merge on the driver
over the small per-item rows (no image bytes). Identical bytes collapse to one pool row that
keeps every uri and source; new ids and the new uris / sources of known ids land in one Delta
MERGE keyed on id; re-ingesting a source adds nothing, and two ingests racing on one lake keep
every id exactly once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from curation.storage import schemas
from curation.steps.ingest.hashing import INGESTED_SCHEMA, hash_batch
from curation.steps.ingest.sources import discover, source_notes
from curation.storage.lake import Lake
from curation.steps.summary import StepSummary, error_kinds

POOL = schemas.POOL
PRODUCER = {"step": "ingest", "version": "1"}


@dataclass
class IngestConfig:
    """ingest step options.

    source: directory, table file (.parquet/.csv/.jsonl) or WebDataset .tar shard(s); an
        img2dataset output folder ("webdataset" or "files" mode) is a directory source whose
        per-shard parquet columns are kept and whose failed downloads are counted in the notes.
    name: source name recorded in `pool.sources`; default: the source path's last component.
    uri_column: for table sources, the column holding image uris (default: auto-detect).
    batch_size: candidates per hashing task.
    follow_symlinks: in a directory source, also follow symbolic links that resolve outside
        the source directory. Off by default: such links (and dangling or looping links) become
        pool rows with an `error` naming the link, and sidecars behind them are not read. Links
        that stay inside the source are always followed.
    """

    source: str = ""
    name: str | None = None
    uri_column: str | None = None
    batch_size: int = field(default=256, metadata={"min": 1})
    follow_symlinks: bool = False


def ingest(lake: Lake, cfg: IngestConfig) -> StepSummary:
    import ray.data

    from curation.runtime import cluster_cpus, split_blocks

    if not cfg.source:
        raise ValueError("ingest needs a source (a directory, a table file or .tar shards)")
    t0 = time.perf_counter()
    name = cfg.name or cfg.source.rstrip("/").rsplit("/", 1)[-1]
    kind, candidates = discover(cfg.source, cfg.uri_column, follow_symlinks=cfg.follow_symlinks)
    rows = INGESTED_SCHEMA.empty_table()
    if candidates.num_rows:
        blocks = split_blocks(candidates, max_rows=cfg.batch_size, parallelism=2 * cluster_cpus())
        ds = ray.data.from_arrow(blocks).map_batches(
            hash_batch, fn_kwargs={"source": name}, batch_format="pyarrow", batch_size=None)
        parts = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
        if parts:
            rows = pa.concat_tables(parts).cast(INGESTED_SCHEMA)
    batch_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    merged = collapse(rows, batch_id)
    added, updated = _commit(lake, merged, name, kind)
    summary = StepSummary("ingest", rows_in=rows.num_rows, rows_out=added, seconds=time.perf_counter() - t0,
                          errors=error_kinds(rows["error"]),
                          notes={"source_kind": kind, "source": name, "unique_ids": merged.num_rows,
                                 "new_ids": added, "existing_ids_updated": updated,
                                 **source_notes(candidates)})
    return summary


def collapse(rows: pa.Table, batch_id: str) -> pa.Table:
    """One pool row per id: uris/sources in first-seen order; the representative row (caption,
    tags, extra) is the first with a usable caption, else the first seen."""
    if rows.num_rows == 0:
        return schemas.POOL_SCHEMA.empty_table()
    ids = rows["id"].to_numpy(zero_copy_only=False)
    has_caption = pc.fill_null(pc.and_(pc.is_valid(rows["caption"]), pc.is_null(rows["caption_issue"])), False)
    order = np.lexsort((np.arange(len(ids)), ~has_caption.to_numpy(zero_copy_only=False)))
    _, first = np.unique(ids[order], return_index=True)
    reps = rows.take(pa.array(np.sort(order[first])))
    lists = rows.select(["id", "uri", "source"]).group_by("id", use_threads=False).aggregate(
        [("uri", "distinct"), ("source", "distinct")])
    # Arrow joins refuse map/list payload columns: align the two by sorting on the unique id.
    reps, lists = reps.sort_by("id"), lists.sort_by("id")
    reps = reps.append_column("uris", lists["uri_distinct"]).append_column("sources", lists["source_distinct"])
    reps = reps.append_column("ingest_batch", pa.array([batch_id] * reps.num_rows, pa.string()))
    return schemas.conform(reps, schemas.POOL_SCHEMA)


def _commit(lake: Lake, merged: pa.Table, name: str, kind: str) -> tuple[int, int]:
    """Insert new ids and add the new uris / sources of known ids in one MERGE, computed
    against the latest snapshot and recomputed if another writer commits first (so two
    concurrent ingests keep every id once with both sources). Returns (added, updated)."""
    producer = dict(PRODUCER, source=name, source_kind=kind)
    counts = {"added": 0, "updated": 0}

    def upserts(snapshot) -> pa.Table | None:
        counts["added"], counts["updated"] = merged.num_rows, 0
        if snapshot is None:
            return merged
        ids = merged["id"]
        known = snapshot.to_table(columns=["id", "uris", "sources"],
                                                      filter=pads.field("id").isin(ids.combine_chunks()))
        new_rows = merged.filter(pc.invert(pc.is_in(ids, value_set=known["id"])))
        changed = _gained(known, merged)
        counts["added"], counts["updated"] = new_rows.num_rows, changed.num_rows
        if not new_rows.num_rows and not changed.num_rows:
            return None  # nothing new: no version is written
        return pa.concat_tables([new_rows, schemas.conform(changed, schemas.POOL_SCHEMA)])

    lake.transact(POOL, upserts, key="id", update_columns=["uris", "sources"], producer=producer)
    return counts["added"], counts["updated"]


def _gained(known: pa.Table, incoming: pa.Table) -> pa.Table:
    """(id, uris, sources) of known ids whose lists gain entries, lists in first-seen order."""
    if known.num_rows == 0:
        return known
    add = {r["id"]: r for r in incoming.filter(pc.is_in(incoming["id"], value_set=known["id"]))
           .select(["id", "uris", "sources"]).to_pylist()}
    out = {"id": [], "uris": [], "sources": []}
    for row in known.to_pylist():
        extra = add[row["id"]]
        uris = (row["uris"] or []) + [u for u in extra["uris"] or [] if u not in (row["uris"] or [])]
        sources = (row["sources"] or []) + [s for s in extra["sources"] or [] if s not in (row["sources"] or [])]
        if uris != (row["uris"] or []) or sources != (row["sources"] or []):
            out["id"].append(row["id"])
            out["uris"].append(uris)
            out["sources"].append(sources)
    return pa.table(out, schema=pa.schema([schemas.POOL_SCHEMA.field(c) for c in ("id", "uris", "sources")]))
