"""Ingest a source into the lake's append-only `pool` table.

Discovery runs on the driver (listing only), hashing in Ray tasks, and the merge on the driver
over the small per-item rows (no image bytes). Identical bytes collapse to one pool row that
keeps every uri and source; new ids and the new uris / sources of known ids land in one Delta
MERGE keyed on id; re-ingesting a source adds nothing, and two ingests racing on one lake keep
every id exactly once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from curation.storage import io, schemas
from curation.steps.ingest.hashing import INGESTED_SCHEMA, hash_batch, unreadable_id
from curation.steps.ingest import patterns
from curation.steps.ingest.download import DownloadConfig  # URL tables (issue 10, item 2)
from curation.steps.ingest.urls import download_candidates  # URL tables (issue 10, item 2)
from curation.steps.ingest.sources import discover, source_notes
from curation.storage.lake import Lake
from curation.storage.shards import shard_root
from curation.steps.summary import StepSummary, error_kinds

POOL = schemas.POOL
PRODUCER = {"step": "ingest", "version": "1"}


@dataclass
class IngestConfig:
    """ingest step options.

    source: directory, table file (.parquet/.arrow/.csv/.jsonl: of paths, of http(s) URLs,
        or with the images inside) or WebDataset .tar shard(s); an img2dataset output folder
        ("webdataset", "files" or "parquet" mode) is a directory source whose per-shard parquet
        columns are kept and whose failed downloads are counted in the notes; a Hugging Face
        dataset folder (Parquet shards, or a `save_to_disk` folder) is a directory source of
        embedded-image tables.
        One string or a list; each may be a pattern (`shards/{00000..00099}.tar`,
        `shards/*.tar`, `imgs/**/*.jpg`, local or on any filesystem URI), expanded by
        `curation.steps.ingest.patterns.expand`; a pattern matching nothing is an error.
    name: source name recorded in `pool.sources`, for all sources; default: per SOURCE as
        given, its last component (for a pattern, its fixed leading directory's).
    uri_column: for table sources, the column holding image uris (default: auto-detect).
    image_column: for Parquet / Arrow sources (and those in a directory source), the column
        holding the image bytes: binary, or a Hugging Face `Image` struct<bytes, path> (default:
        found from the schema, see `curation.steps.ingest.embedded`). The bytes are stored in
        the lake as tar shards (`<lake>/_shards/<source>/`), as downloads are.
    batch_size: candidates per hashing task.
    follow_symlinks: in a directory source, also follow symbolic links that resolve outside
        the source directory. Off by default: such links (and dangling or looping links) become
        pool rows with an `error` naming the link, and sidecars behind them are not read. Links
        that stay inside the source are always followed.
    download: how http(s) uris of a table source (a LAION / DataComp-style URL table) are
        fetched: concurrency, timeout, retries, size limit (see `download.DownloadConfig`);
        the bytes are stored in the lake as tar shards (`<lake>/_shards/<source>/`).
    """

    source: str | list[str] = ""
    name: str | None = None
    uri_column: str | None = None
    image_column: str | None = None
    batch_size: int = field(default=256, metadata={"min": 1})
    follow_symlinks: bool = False
    download: DownloadConfig = field(default_factory=DownloadConfig)  # URL tables (issue 10, item 2)


def ingest(lake: Lake, cfg: IngestConfig) -> StepSummary:
    given = patterns.as_list(cfg.source)
    if not given:
        raise ValueError("ingest needs a source (a directory, a table file or .tar shards)")
    t0 = time.perf_counter()
    found = _discover_all(given, cfg)
    names = list(dict.fromkeys(n for n, _, _ in found))
    kinds = list(dict.fromkeys(k for _, k, _ in found))
    name, kind = ",".join(names), (kinds[0] if len(kinds) == 1 else "mixed")
    candidates = pa.concat_tables(
        [c.replace_schema_metadata(None).append_column("source_name", pa.array([n] * c.num_rows, pa.string()))
         for n, _, c in found])
    # --- URL tables (issue 10, item 2): http(s) uris are downloaded on Ray into lake shards ---
    candidates, url_rows, url_notes = download_candidates(lake, candidates, name, cfg.download)
    rows = hash_candidates(lake, candidates, name, cfg.batch_size)
    rows = pa.concat_tables([rows, url_rows]) if url_rows.num_rows else rows  # URL tables
    merged, (added, updated, superseded) = add_rows(lake, rows, name, kind)
    summary = StepSummary("ingest", rows_in=rows.num_rows, rows_out=added, seconds=time.perf_counter() - t0,
                          errors=error_kinds(rows["error"]),
                          notes={"source_kind": kind, "source": name, "unique_ids": merged.num_rows,
                                 "new_ids": added, "existing_ids_updated": updated,
                                 **({"error_rows_superseded": superseded} if superseded else {}),
                                 **_merge_notes([source_notes(c) for _, _, c in found])})
    if len(found) > 1:
        summary.notes["source_kinds"] = dict(Counter(k for _, k, _ in found))
        summary.notes["sources_ingested"] = len(found)
    summary.notes.update(url_notes)  # URL tables (issue 10, item 2)
    return summary


def hash_candidates(lake: Lake, candidates: pa.Table, name: str, batch_size: int = 256) -> pa.Table:
    """Ingested rows (`INGESTED_SCHEMA`, one or more per candidate) of discovery candidates
    (`sources.CANDIDATE_SCHEMA`), read and hashed in Ray tasks of `batch_size` candidates."""
    import ray.data

    from curation.runtime import cluster_cpus, split_blocks

    if not candidates.num_rows:
        return INGESTED_SCHEMA.empty_table()
    blocks = split_blocks(candidates, max_rows=batch_size, parallelism=2 * cluster_cpus())
    ds = ray.data.from_arrow(blocks).map_batches(
        hash_batch, fn_kwargs={"source": name, "root": shard_root(lake)}, batch_format="pyarrow",
        batch_size=None)
    parts = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    return pa.concat_tables(parts).cast(INGESTED_SCHEMA) if parts else INGESTED_SCHEMA.empty_table()


def add_rows(lake: Lake, rows: pa.Table, name: str, kind: str) -> tuple[pa.Table, tuple[int, int, int]]:
    """Collapse ingested rows to one per id and commit them to `pool` (see `_commit`): returns
    (the collapsed rows, (added, updated, superseded))."""
    batch_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    merged = collapse(rows, batch_id)
    return merged, _commit(lake, merged, name, kind)


def _discover_all(given: list[str], cfg: IngestConfig) -> list[tuple[str, str, pa.Table]]:
    """(name, kind, candidates) per expanded source, in the order given; image files a glob
    matched (`imgs/**/*.jpg`) are discovered together as one directory-like source."""
    out = []
    for source in given:
        name = cfg.name or patterns.default_name(source)
        expanded = patterns.expand(source)
        images = [u for u in expanded if patterns.is_pattern(source) and patterns.is_image(u)]
        stems = {u.rsplit(".", 1)[0] for u in images}
        for s in expanded:  # sidecars a glob matched beside its images are read with them
            if s not in images and not (s.lower().endswith((".txt", ".json")) and s.rsplit(".", 1)[0] in stems):
                kind, c = discover(s, cfg.uri_column, follow_symlinks=cfg.follow_symlinks,
                                   image_column=cfg.image_column)
                out.append((name, kind, c))
        if images:
            kind, c = patterns.discover_images(source, images)
            out.append((name, kind, c))
    return out


def _merge_notes(notes: list[dict]) -> dict:
    """Discovery notes of several sources: counts added, lists joined, the rest first-seen."""
    out: dict = {}
    for n in notes:
        for k, v in n.items():
            if k not in out:
                out[k] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)
            elif isinstance(v, dict) and isinstance(out[k], dict):
                for kk, vv in v.items():
                    out[k][kk] = out[k].get(kk, 0) + vv if isinstance(vv, (int, float)) else vv
            elif isinstance(v, list) and isinstance(out[k], list):
                out[k].extend(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(out[k], (int, float)):
                out[k] += v
            elif v != out[k]:
                out[k] = f"{out[k]},{v}" if isinstance(v, str) and isinstance(out[k], str) else out[k]
    return out


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


def _commit(lake: Lake, merged: pa.Table, name: str, kind: str) -> tuple[int, int, int]:
    """Insert new ids, add the new uris / sources of known ids, and delete the error rows this
    ingest supersedes (`_superseded`), in one MERGE computed against the latest snapshot and
    recomputed if another writer commits first (so two concurrent ingests keep every id once
    with both sources). Returns (added, updated, superseded)."""
    producer = dict(PRODUCER, source=name, source_kind=kind)
    counts = {"added": 0, "updated": 0, "superseded": 0}
    retired = _superseded(merged)

    def upserts(snapshot) -> pa.Table | None:
        counts["added"], counts["updated"], counts["superseded"] = merged.num_rows, 0, 0
        if snapshot is None:
            return merged
        ids = merged["id"]
        known = snapshot.to_table(columns=["id", "uris", "sources"],
                                  filter=pads.field("id").isin(ids.combine_chunks()))
        new_rows = merged.filter(pc.invert(pc.is_in(ids, value_set=known["id"])))
        changed = _gained(known, merged)
        gone = (snapshot.to_table(columns=["id"], filter=pads.field("id").isin(retired) & ~pads.field("error").is_null())
                if len(retired) else pa.table({"id": pa.array([], pa.string())}))
        counts.update(added=new_rows.num_rows, updated=changed.num_rows, superseded=gone.num_rows)
        if not new_rows.num_rows and not changed.num_rows and not gone.num_rows:
            return None  # nothing new: no version is written
        parts = [new_rows, schemas.conform(changed, schemas.POOL_SCHEMA), schemas.conform(gone, schemas.POOL_SCHEMA)]
        flags = pa.array([False] * (new_rows.num_rows + changed.num_rows) + [True] * gone.num_rows, pa.bool_())
        return pa.concat_tables(parts).append_column(_DELETE, flags)

    lake.transact(POOL, upserts, key="id", update_columns=["uris", "sources"], producer=producer,
                  delete_column=_DELETE)
    return counts["added"], counts["updated"], counts["superseded"]


_DELETE = "_superseded"


def _superseded(merged: pa.Table) -> pa.Array:
    """Ids of the error rows an earlier ingest left for items this one read: an item that could
    not be read (a URL that failed, a file missing at the time) has the id
    `unreadable_id(uri)`; once a later ingest reads it, that error row goes, so a failed run
    re-run ends with the rows an uninterrupted one would have. Looked up by every uri of the
    successful rows and by the `url` / `urls` of downloaded ones, and a shard's error row by the
    shard of its members when this ingest read the shard without error."""
    ok = merged.filter(pc.is_null(merged["error"]))
    if not ok.num_rows:
        return pa.array([], pa.string())
    uris = set(pc.list_flatten(ok["uris"]).to_pylist())
    for text in ok["extra_json"].to_pylist():
        if text and '"url' in text:
            extra = json.loads(text)
            listed = [extra.get("url")] + list(extra.get("urls") or [])
            uris.update(u for u in listed if isinstance(u, str))
    # a shard this ingest read to its end without a shard-level error (written whole since a
    # run that found it truncated) retires that run's error row for the shard
    failed = set(pc.list_flatten(merged.filter(pc.is_valid(merged["error"]))["uris"]).to_pylist())
    uris.update(shard for shard in {io.split_member(u)[0] for u in uris if u and ".tar#" in u} - failed)
    return pa.array(sorted(unreadable_id(u) for u in uris if u), pa.string())


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
