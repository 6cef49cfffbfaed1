"""Ingest a source into the lake's append-only `pool` table.

Discovery runs on the driver (listing only), hashing in Ray tasks, and the merge on the driver
over the small per-item rows (no image bytes). Identical bytes collapse to one pool row that
keeps every uri and source; ids already in the pool that gain a new uri or source have only
the Parquet files holding them rewritten; re-ingesting a source adds nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.storage import schemas
from curation.steps.ingest.hashing import INGESTED_SCHEMA, hash_batch
from curation.steps.ingest.sources import discover
from curation.storage.lake import Lake
from curation.steps.summary import StepSummary, error_kinds

POOL = "pool"
PRODUCER = {"step": "ingest", "version": "1"}


@dataclass
class IngestConfig:
    """ingest step options.

    source: directory, table file (.parquet/.csv/.jsonl) or WebDataset .tar shard(s).
    name: source name recorded in `pool.sources`; default: the source path's last component.
    uri_column: for table sources, the column holding image uris (default: auto-detect).
    batch_size: candidates per hashing task.
    """

    source: str = ""
    name: str | None = None
    uri_column: str | None = None
    batch_size: int = 256


def ingest(lake: Lake, cfg: IngestConfig) -> StepSummary:
    import ray.data

    from curation.runtime import cluster_cpus, split_blocks

    if not cfg.source:
        raise ValueError("ingest needs a source (a directory, a table file or .tar shards)")
    t0 = time.perf_counter()
    name = cfg.name or cfg.source.rstrip("/").rsplit("/", 1)[-1]
    kind, candidates = discover(cfg.source, cfg.uri_column)
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
                                 "new_ids": added, "existing_ids_updated": updated})
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
    """Append new ids; rewrite only the existing files whose rows gain uris or sources."""
    producer = dict(PRODUCER, source=name, source_kind=kind)
    if not lake.exists(POOL):
        if merged.num_rows:
            lake.write(POOL, merged, producer=producer)
        return merged.num_rows, 0
    known = lake.read(POOL, columns=["id"])["id"]
    is_new = pc.is_in(merged["id"], value_set=known)
    new_rows = merged.filter(pc.invert(is_new))
    old_rows = merged.filter(is_new)
    rewritten, removed, n_changed = _updated_files(lake, old_rows)
    if new_rows.num_rows == 0 and not removed:
        return 0, 0  # nothing new: no version is written
    version = lake.next_version(POOL)
    out = lake.staging_dir(POOL, version)
    paths = []
    for i, tbl in enumerate(([new_rows] if new_rows.num_rows else []) + rewritten):
        path = f"{out}/part-{i:05d}.parquet"
        pq.write_table(tbl, path, filesystem=lake.fs, compression="zstd")
        paths.append(path)
    lake.commit(POOL, version, paths, remove=removed, producer=producer, schema=schemas.POOL_SCHEMA)
    return new_rows.num_rows, n_changed


def _updated_files(lake: Lake, incoming: pa.Table) -> tuple[list[pa.Table], list[str], int]:
    """(rewritten tables, their old file paths, rows changed) for ids gaining uris/sources."""
    if incoming.num_rows == 0:
        return [], [], 0
    add = {r["id"]: r for r in incoming.select(["id", "uris", "sources"]).to_pylist()}
    rewritten, removed, n_changed = [], [], 0
    for path in lake.files(POOL):
        with lake.fs.open_input_file(path) as f:
            tbl = pq.read_table(f)
        hit = pc.is_in(tbl["id"], value_set=incoming["id"])
        if not pc.any(hit).as_py():
            continue
        changed = False
        uris, sources = tbl["uris"].to_pylist(), tbl["sources"].to_pylist()
        for i, (rid, h) in enumerate(zip(tbl["id"].to_pylist(), hit.to_pylist())):
            if not h:
                continue
            new_u = [u for u in add[rid]["uris"] or [] if u not in (uris[i] or [])]
            new_s = [s for s in add[rid]["sources"] or [] if s not in (sources[i] or [])]
            if new_u or new_s:
                uris[i] = (uris[i] or []) + new_u
                sources[i] = (sources[i] or []) + new_s
                changed = True
                n_changed += 1
        if changed:
            tbl = tbl.set_column(tbl.schema.get_field_index("uris"), schemas.POOL_SCHEMA.field("uris"),
                                 pa.array(uris, pa.list_(pa.string())))
            tbl = tbl.set_column(tbl.schema.get_field_index("sources"), schemas.POOL_SCHEMA.field("sources"),
                                 pa.array(sources, pa.list_(pa.string())))
            rewritten.append(tbl)
            removed.append(path)
    return rewritten, removed, n_changed
