"""URL tables (LAION / DataComp shape): candidates whose uri is an http(s) URL are downloaded.

`download_candidates` is called by `pool.ingest` right after discovery: it takes the http(s)
candidates out of the candidate table (the rest are ingested as before), drops the URLs the
pool already holds a successful row for (matched by `url` in the row's `extra_json`: a rerun
downloads nothing it already has), and downloads the others on Ray (`map_batches`, one task per
batch, `DownloadConfig.concurrency` requests at a time inside a task). Each task writes its
downloaded bytes as one tar shard under `<lake>/_shards/<source>/` (`curation.storage.shards`)
and returns ingested rows (`hashing.INGESTED_SCHEMA`), one per input row:

- success: id = sha256 of the bytes, `uri` = `<shard>#<id>.<ext>` with `byte_offset` /
  `byte_size`, `extra_json` gains `url` (and `final_url` after a redirect);
- failure: id = `unreadable_id(url)`, `uri` = the URL, `error` =
  `ingest: download failed: <message>` (e.g. `HTTP Error 404: Not Found`), `extra_json.url`.

The table's other columns become caption fields / tags / extra exactly as for a table of paths.

Resume and idempotence: a URL is skipped when a pool row without error lists it (extra_json
`url`, or `urls`: when several URLs of one run give the same image, every one of their rows
carries all of them, so whichever represents the id keeps them all; or among its `uris`). A failed URL is tried again
on each run (its error row's id stays the same, so a repeated failure adds nothing; a later
success adds the image's row and deletes the old error row in the same commit, see
`pool._superseded`). A URL first seen in a later run whose
image the pool already holds (`urls_same_image_as_pool` in the notes) adds the URL itself to
that row's `uris` (one more place the image is found, as every copy is), not its new shard
member, so the next run skips it.

Summary notes: `urls` (http(s) rows in the source), `urls_already_in_pool` (skipped),
`urls_downloaded`, `urls_failed`, and `urls_same_image_as_pool` when non-zero.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from curation.storage import io, schemas
from curation.storage.shards import ShardWriter, shard_dir, shard_root, sniff_extension
from curation.steps.ingest import captions as capt
from curation.steps.ingest.download import DownloadConfig, download_iter, is_url
from curation.steps.ingest.hashing import INGESTED_SCHEMA, caption_columns, parse_record, unreadable_id

__all__ = ["download_candidates", "download_rows", "known_urls", "split_url_candidates"]


def split_url_candidates(candidates: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(other candidates, http(s) candidates). Candidates refused at discovery stay in the
    first table (they carry their error and are not fetched)."""
    uris = candidates["uri"].to_pylist()
    errors = candidates["error"].to_pylist()
    mask = pa.array([is_url(u) and not e for u, e in zip(uris, errors)], pa.bool_())
    return candidates.filter(pc.invert(mask)), candidates.filter(mask)


def known_urls(lake, urls: set[str]) -> set[str]:
    """The subset of `urls` the pool already holds a row without error for: the row's
    extra_json `url`, or one of its `urls` (every URL of this id in the run that added it)."""
    if not urls or not lake.exists(schemas.POOL):
        return set()
    table = lake.read(schemas.POOL, columns=["uris", "extra_json", "error"]).filter(pc.field("error").is_null())
    wanted = pa.array(sorted(urls), pa.string())
    listed = pc.list_flatten(table["uris"])
    found: set[str] = set(listed.filter(pc.is_in(listed, value_set=wanted)).to_pylist())
    table = table.filter(pc.fill_null(pc.match_substring(table["extra_json"], '"url'), False))
    for text in table["extra_json"].to_pylist():
        try:
            extra = json.loads(text)
            listed = [extra.get("url")] + list(extra.get("urls") or [])
        except (ValueError, AttributeError, TypeError):
            continue
        found.update(u for u in listed if isinstance(u, str) and u in urls)
    return found


def _record_urls(rows: pa.Table) -> pa.Table:
    """Successful rows sharing an id (one image at several URLs) all get `urls` (every URL of
    the id, first seen first) in extra_json: whichever of them represents the id in the pool
    keeps them all, so a rerun skips every one of those URLs."""
    ok = [i for i, e in enumerate(rows["error"].to_pylist()) if e is None]
    ids = rows["id"].to_pylist()
    extras = rows["extra_json"].to_pylist()
    by_id: dict[str, list[str]] = {}
    for i in ok:
        url = json.loads(extras[i])["url"]
        if url not in by_id.setdefault(ids[i], []):
            by_id[ids[i]].append(url)
    changed = False
    for i in ok:
        if len(by_id[ids[i]]) > 1:
            extras[i] = capt.dumps_extra({**json.loads(extras[i]), "urls": by_id[ids[i]]})
            changed = True
    if not changed:
        return rows
    col = rows.schema.get_field_index("extra_json")
    return rows.set_column(col, rows.schema.field(col), pa.array(extras, pa.string()))


def _known_ids_by_url(lake, rows: pa.Table) -> tuple[pa.Table, int]:
    """Successful rows whose id the pool already holds (a new URL for an image an earlier run
    added) point at their URL instead of their new shard member, so the MERGE adds the URL to
    the pool row's `uris` and `known_urls` finds it next time. (rows, how many)."""
    ok = pc.is_null(rows["error"])
    if not lake.exists(schemas.POOL) or not pc.any(ok).as_py():
        return rows, 0
    ids = pc.unique(rows.filter(ok)["id"])
    known = lake.read(schemas.POOL, columns=["id"], filter=pads.field("id").isin(ids))["id"]
    if not len(known):
        return rows, 0
    same = pc.and_(ok, pc.is_in(rows["id"], value_set=known.combine_chunks()))
    urls = pa.array([json.loads(e)["url"] if s else None
                     for s, e in zip(same.to_pylist(), rows["extra_json"].to_pylist())], pa.string())
    null = pa.nulls(rows.num_rows, pa.int64())
    for name, value in (("uri", urls), ("byte_offset", null), ("byte_size", null)):
        col = rows.schema.get_field_index(name)
        rows = rows.set_column(col, rows.schema.field(col), pc.if_else(same, value, rows[name]))
    return rows, pc.sum(same).as_py() or 0


def download_candidates(lake, candidates: pa.Table, source: str,
                        cfg: DownloadConfig | None = None) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """(candidates left for hashing, ingested rows of the downloaded URLs, summary notes).
    With no http(s) candidate, returns the candidates unchanged, no rows and no notes."""
    import ray.data

    from curation.runtime import cluster_cpus, split_blocks

    cfg = cfg or DownloadConfig()
    rest, remote = split_url_candidates(candidates)
    if not remote.num_rows:
        return candidates, INGESTED_SCHEMA.empty_table(), {}
    skip = known_urls(lake, set(remote["uri"].to_pylist()))
    if skip:
        remote = remote.filter(pc.invert(pc.is_in(remote["uri"], value_set=pa.array(sorted(skip), pa.string()))))
    rows = INGESTED_SCHEMA.empty_table()
    if remote.num_rows:
        blocks = split_blocks(remote, max_rows=cfg.batch_size, parallelism=2 * cluster_cpus())
        ds = ray.data.from_arrow(blocks).map_batches(
            download_rows, fn_kwargs={"source": source, "root": shard_root(lake), "config": asdict(cfg)},
            batch_format="pyarrow", batch_size=None)
        parts = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
        if parts:
            rows = pa.concat_tables(parts).cast(INGESTED_SCHEMA)
    failed = pc.sum(pc.is_valid(rows["error"])).as_py() or 0
    notes = {"urls": len(skip) + remote.num_rows, "urls_already_in_pool": len(skip),
             "urls_downloaded": rows.num_rows - failed, "urls_failed": failed}
    rows = _record_urls(rows)
    rows, same = _known_ids_by_url(lake, rows)
    if same:
        notes["urls_same_image_as_pool"] = same
    return rest, rows, notes


def download_rows(batch: pa.Table, source: str, root: str, config: dict[str, Any]) -> pa.Table:
    """Ray map_batches body: http(s) candidates -> ingested rows, one per candidate; the
    downloaded bytes go to one new shard in `<root>/<source>/` as each download finishes
    (a candidate's `source_name` column, when there, names its source), so a task holds
    about `concurrency` bodies at a time, not the batch."""
    cfg = DownloadConfig(**config)
    cands = batch.to_pylist()
    directory = shard_dir(root, (cands[0].get("source_name") if cands else None) or source)
    results: list[Any] = [None] * len(cands)
    names: list[str | None] = [None] * len(cands)
    writer: ShardWriter | None = None
    shard_error = None
    try:
        for i, res in download_iter([c["uri"] for c in cands], cfg):
            results[i] = res
            if res.status != "success":
                continue
            names[i] = f"{hashlib.sha256(res.data).hexdigest()}.{sniff_extension(res.data, res.content_type)}"
            if shard_error is None:
                try:
                    writer = writer or ShardWriter(f"{directory}/{uuid.uuid4().hex}.tar")
                    writer.add(names[i], res.data)
                except (OSError, pa.ArrowException) as exc:
                    shard_error = io.printable(f"ingest: cannot write shard: {exc}")
                    if writer is not None:
                        writer.abort()
                        writer = None
            res.data = None  # written: the body is not kept
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    placed = writer.members if writer is not None else {}
    rows = [_row(cand, res, name, placed.get(name) if name else None, shard_error, source)
            for cand, res, name in zip(cands, results, names)]
    return pa.Table.from_pylist(rows, schema=INGESTED_SCHEMA)


def _row(cand: dict[str, Any], res, name: str | None, member, shard_error: str | None, source: str) -> dict[str, Any]:
    url = cand["uri"]
    record, errors = parse_record(cand)
    fields, tags, extra, issue = capt.split_fields(record)
    extra["url"] = url
    if res.final_url and res.final_url != url:
        extra["final_url"] = res.final_url
    row = caption_columns(fields, tags, extra, issue, errors)
    row["source"] = cand.get("source_name") or source
    if member is not None:
        row.update(id=name.split(".", 1)[0], uri=member.uri, byte_offset=member.byte_offset,
                   byte_size=member.byte_size, bytes_len=member.byte_size)
    else:
        message = shard_error if name else f"ingest: download failed: {res.error_message}"
        errors.insert(0, message)
        row.update(id=unreadable_id(url), uri=url, byte_offset=None, byte_size=None, bytes_len=None)
    row["error"] = io.printable("; ".join(errors)) or None
    return row
