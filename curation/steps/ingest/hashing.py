"""Per-batch ingest work, run in Ray tasks: read bytes, hash, read sidecars, expand tar shards.

Every candidate yields at least one row (a tar shard yields one per image member); an item
whose bytes cannot be read, or that discovery refused (a link leaving the source, a bad table
line), gets an `error` and the id sha256(b"unreadable:" + uri), so it stays visible,
re-ingesting it adds nothing, and it never collides with a real image's id.
"""

from __future__ import annotations

import hashlib
import io as pyio
import json
import posixpath
import tarfile
from collections import Counter
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.storage import io
from curation.storage.schemas import CAPTION_FIELDS_TYPE
from curation.steps.ingest import captions as capt
from curation.steps.ingest.sources import IMAGE_EXTENSIONS, _jsonable

INGESTED_SCHEMA = pa.schema([
    ("id", pa.string()), ("uri", pa.string()), ("byte_offset", pa.int64()), ("byte_size", pa.int64()),
    ("source", pa.string()), ("caption", pa.string()),
    ("caption_fields", CAPTION_FIELDS_TYPE), ("tags", pa.list_(pa.string())),
    ("caption_issue", pa.string()), ("extra_json", pa.string()), ("bytes_len", pa.int64()),
    ("error", pa.string()),
])


def unreadable_id(uri: str) -> str:
    return hashlib.sha256(b"unreadable:" + uri.encode("utf-8", "surrogatepass")).hexdigest()


def hash_batch(batch: pa.Table, source: str, root: str | None = None) -> pa.Table:
    """Ray map_batches body: candidates (see sources.CANDIDATE_SCHEMA) -> ingested rows.
    `root`: the lake's shard root (`shards.shard_root`), where images embedded in tables go."""
    from curation.steps.ingest.embedded import expand_piece

    rows: list[dict[str, Any]] = []
    for cand in batch.to_pylist():
        name = cand.get("source_name") or source  # several sources in one ingest: the row's own
        if cand["kind"] == "tar" and not cand.get("error"):
            rows.extend(_expand_tar(cand["uri"], name, cand.get("meta_table")))
        elif cand["kind"] == "embedded" and not cand.get("error"):
            if root is None:
                raise ValueError("hash_batch: images embedded in tables need the lake's shard root")
            rows.extend(expand_piece(cand, name, root))
        else:
            rows.append(_file_row(cand, name))
    return pa.Table.from_pylist(rows, schema=INGESTED_SCHEMA)


def parse_record(cand: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the table row's columns a candidate carries, errors): `record_json` is written by
    discovery, guarded all the same."""
    try:
        return (json.loads(cand["record_json"]) if cand["record_json"] else {}), []
    except (ValueError, RecursionError) as exc:
        return {}, [f"ingest: bad table row: {exc}"]


def _file_row(cand: dict[str, Any], source: str) -> dict[str, Any]:
    uri = cand["uri"]
    record, errors = parse_record(cand)
    if cand.get("meta_table") and uri:
        # img2dataset "files" mode: the shard's parquet row for this key (its url, status, sizes...)
        meta, meta_error = img2dataset_records(cand["meta_table"])
        key = posixpath.splitext(posixpath.basename(uri))[0]
        record = {**meta.get(key, {}), **record}
        if meta_error:
            record.setdefault("img2dataset_table_error", meta_error)
    fields, tags, extra, issue = capt.split_fields(record)
    if cand.get("sidecar_error"):
        errors.append(f"ingest: {cand['sidecar_error']}")
    if cand["sidecar_txt"]:
        try:
            text, why = capt.normalize(io.read_bytes(cand["sidecar_txt"]))
            fields.setdefault("caption", text)
            issue = issue or why
        except OSError as exc:
            errors.append(f"ingest: cannot read caption sidecar: {exc}")
    if cand["sidecar_json"]:
        try:
            f2, t2, e2, why = capt.split_fields(capt.parse_json_sidecar(io.read_bytes(cand["sidecar_json"])))
            for k, v in f2.items():
                fields.setdefault(k, v)
            tags += [t for t in t2 if t not in tags]
            extra.update(e2)
            issue = issue or why
        except (OSError, ValueError) as exc:
            errors.append(f"ingest: bad JSON sidecar: {exc}")
    row = caption_columns(fields, tags, extra, issue, errors)
    row.update(uri=uri, byte_offset=None, byte_size=None, source=source)
    if cand.get("error"):
        # Refused at discovery (a link leaving the source, a loop, a bad table line): not read.
        errors.insert(0, cand["error"])
        row.update(id=unreadable_id(uri or f"{source}:{cand['error']}"), bytes_len=None)
    elif not uri:
        row.update(id=unreadable_id(f"{source}:{cand['record_json']}"), bytes_len=None)
        errors.insert(0, "ingest: row has no uri")
    else:
        try:
            data = io.read_bytes(uri)
            row.update(id=hashlib.sha256(data).hexdigest(), bytes_len=len(data))
        except FileNotFoundError:
            row.update(id=unreadable_id(uri), bytes_len=None)
            errors.append(f"ingest: file not found: {uri}")
        except OSError as exc:
            row.update(id=unreadable_id(uri), bytes_len=None)
            errors.append(f"ingest: cannot read: {exc}")
    row["error"] = io.printable("; ".join(errors)) or None
    return row


def error_row(where: str, source: str, message: str) -> dict[str, Any]:
    """A row for an item that could not be read at all: id from `where`, no caption."""
    row = caption_columns({}, [], {}, None, [])
    row.update(id=unreadable_id(where), uri=where, byte_offset=None, byte_size=None, source=source,
               bytes_len=None, error=io.printable(message))
    return row


def embedded_row(table_uri: str, item, member, source: str, split: str | None) -> dict[str, Any]:
    """The ingested row of one table row with an embedded image (`embedded._Item`): pointing at
    its shard `member`, or at the file its struct's path names (read to hash it), or an error
    row. extra_json gains `source_table`, `source_row` (0-based) and `split` (a saved
    Hugging Face split) so the row can be traced back."""
    fields, tags, extra, issue = capt.split_fields(item.record)
    extra.update(source_table=table_uri, source_row=item.row)
    if split:
        extra["split"] = split
    errors = [item.error] if item.error else []
    row = caption_columns(fields, tags, extra, issue, errors)
    row.update(source=source, byte_offset=None, byte_size=None, bytes_len=None)
    where = f"{table_uri}#row={item.row}"
    if member is not None:
        row.update(id=member.uri.rsplit("#", 1)[1].split(".", 1)[0], uri=member.uri,
                   byte_offset=member.byte_offset, byte_size=member.byte_size, bytes_len=member.byte_size)
    elif item.path is not None:  # a Hugging Face Image with a path and no bytes: the file itself
        try:
            data = io.read_bytes(item.path)
            row.update(id=hashlib.sha256(data).hexdigest(), uri=item.path, bytes_len=len(data))
        except OSError as exc:
            errors.append(f"ingest: row {item.row} of {table_uri} has no image bytes and its path cannot be "
                          f"read: {exc}")
            row.update(id=unreadable_id(where), uri=where)
    else:
        row.update(id=unreadable_id(where), uri=where)
    row["error"] = io.printable("; ".join(errors)) or None
    return row


def caption_columns(fields: dict[str, str], tags: list[str], extra: dict[str, Any], issue: str | None,
                     errors: list[str]) -> dict[str, Any]:
    caption = capt.primary(fields)
    if caption is None:
        issue = issue or "missing"
    try:
        extra_json = capt.dumps_extra(extra)
    except ValueError as exc:
        extra_json = None
        errors.append(f"ingest: extra fields dropped: {exc}")
    return {"caption": caption, "caption_fields": [{"key": k, "value": v} for k, v in fields.items()] or None, "tags": tags or None,
            "caption_issue": issue, "extra_json": extra_json}


def _member_key(name: str) -> tuple[str, str]:
    """WebDataset (key, extension): the path up to the first dot of the basename, and the rest."""
    base = posixpath.basename(name)
    key = posixpath.join(posixpath.dirname(name), base.split(".", 1)[0])
    ext = "." + base.split(".", 1)[1].lower() if "." in base else ""
    return key, ext


@lru_cache(maxsize=4)
def img2dataset_records(table_uri: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """({key: row}, None) of an img2dataset per-shard parquet, or ({}, why) when it cannot be
    read (the shard's samples are still ingested, without its columns). Cached per worker:
    the candidates of one "files"-mode shard arrive in the same few batches."""
    try:
        table = pq.read_table(pyio.BytesIO(io.read_bytes(table_uri)))
        return {str(r["key"]): _jsonable(r) for r in table.to_pylist() if r.get("key") is not None}, None
    except (OSError, pa.ArrowException, ValueError) as exc:
        return {}, io.printable(f"cannot read img2dataset table: {exc}")


def _expand_tar(shard_uri: str, source: str, meta_table: str | None = None) -> list[dict[str, Any]]:
    """One row per image member of a WebDataset shard; `.txt`/`.json` members with the same
    key become its captions. Streams the shard once, member by member (never whole). With `meta_table` (img2dataset's
    per-shard parquet) the table's row of the sample's key adds its columns (url, status, width,
    sha256, ...) to the caption fields and extra.

    Tar allows several members with one name: a repeated name starts a new sample instead of
    replacing the earlier member, so each image is its own row (uri `<shard>#<name>@<k>`, the
    k-th of that name), with the sidecars that follow it. Images of one key with different
    extensions (`a.jpg`, `a.png`) are rows of their own too, sharing the key's sidecars.
    """
    members: list[tarfile.TarInfo] = []
    content: dict[int, Any] = {}  # member offset -> sha256 digest (images) or bytes (captions)
    rows: list[dict[str, Any]] = []
    try:
        stream = _open_stream(shard_uri)
    except OSError as exc:
        return [_shard_error(shard_uri, source, f"ingest: cannot read shard: {exc}")]
    try:
        # Streamed member by member ("r|"): only one member's bytes (a caption) or one chunk of
        # an image (hashed as it goes) is in memory, whatever the shard's size.
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                if not m.isfile() or posixpath.basename(m.name).startswith("."):
                    continue
                ext = _member_key(m.name)[1]
                if ext in IMAGE_EXTENSIONS:
                    content[m.offset] = _hash_member(tar, m)
                elif ext in (".txt", ".json"):
                    f = tar.extractfile(m)
                    content[m.offset] = f.read() if f is not None else b""
                    if len(content[m.offset]) != m.size:
                        raise tarfile.ReadError("unexpected end of data")
                members.append(m)
    except (tarfile.TarError, OSError, EOFError) as exc:
        # The members before the damage are kept; the rest of the shard is one error row.
        where = f" after {len(members)} members" if members else ""
        rows.append(_shard_error(shard_uri, source, f"ingest: corrupt tar shard{where}: {exc}"))
    groups: list[dict[str, list[tarfile.TarInfo]]] = []
    group_keys: list[str] = []
    latest: dict[str, int] = {}
    for m in members:
        key, ext = _member_key(m.name)
        g = latest.get(key)
        if g is None or ext in groups[g]:
            g = latest[key] = len(groups)
            groups.append({})
            group_keys.append(key)
        groups[g].setdefault(ext, []).append(m)
    name_count = Counter(m.name for m in members)
    seen: Counter[str] = Counter()
    occurrence: dict[int, int | None] = {}  # member offset -> k among members of its name
    for m in members:
        occurrence[m.offset] = seen[m.name] if name_count[m.name] > 1 else None
        seen[m.name] += 1
    meta, meta_error = img2dataset_records(meta_table) if meta_table else ({}, None)
    for key, members_by_ext in zip(group_keys, groups):
        images = [m for ext, ms in members_by_ext.items() if ext in IMAGE_EXTENSIONS for m in ms]
        if not images:
            continue  # caption-only group: nothing to train on
        fields: dict[str, str] = {}
        tags: list[str] = []
        extra: dict[str, Any] = {"wds_key": io.printable(key)}
        issue = None
        if ".txt" in members_by_ext:
            t = members_by_ext[".txt"][0]
            fields["caption"], issue = capt.normalize(content[t.offset])
        if ".json" in members_by_ext:
            j = members_by_ext[".json"][0]
            try:
                f2, t2, e2, why = capt.split_fields(capt.parse_json_sidecar(content[j.offset]))
                for k, v in f2.items():
                    fields.setdefault(k, v)
                tags, issue = t2, issue or why
                extra.update(e2)
            except ValueError as exc:
                extra["json_error"] = str(exc)
        if meta_table:
            f3, t3, e3, why = capt.split_fields(meta.get(posixpath.basename(key), {}))
            for k, v in f3.items():
                fields.setdefault(k, v)
            tags += [t for t in t3 if t not in tags]
            for k, v in e3.items():
                extra.setdefault(k, v)
            issue = issue or why
            if meta_error:
                extra["img2dataset_table_error"] = meta_error
        for m in images:
            errors: list[str] = []
            row = caption_columns(dict(fields), list(tags), dict(extra), issue, errors)
            row.update(id=content[m.offset], uri=io.member_uri(shard_uri, m.name, occurrence[m.offset]),
                       byte_offset=m.offset_data, byte_size=m.size, source=source, bytes_len=m.size,
                       error="; ".join(errors) or None)
            rows.append(row)
    return rows


HASH_CHUNK = 1 << 20


def _open_stream(uri: str):
    """A sequential reader of a shard: local files through Python (names that are not UTF-8),
    others through the filesystem's input stream."""
    import pyarrow.fs as pafs

    fs, path = io.resolve(uri)
    return open(path, "rb") if isinstance(fs, pafs.LocalFileSystem) else fs.open_input_stream(path)


def _hash_member(tar: tarfile.TarFile, m: tarfile.TarInfo) -> str:
    """sha256 of a member's bytes, read in chunks; a short member is an error (truncated)."""
    f = tar.extractfile(m)
    h, n = hashlib.sha256(), 0
    while f is not None and (chunk := f.read(HASH_CHUNK)):
        h.update(chunk)
        n += len(chunk)
    if n != m.size:
        raise tarfile.ReadError("unexpected end of data")
    return h.hexdigest()


def _shard_error(shard_uri: str, source: str, message: str) -> dict[str, Any]:
    return {"id": unreadable_id(shard_uri), "uri": shard_uri, "source": source,
            "error": io.printable(message), "caption_issue": "missing"}
