"""Per-batch ingest work, run in Ray tasks: read bytes, hash, read sidecars, expand tar shards.

Every candidate yields at least one row (a tar shard yields one per member group); an item whose
bytes cannot be read gets an `error` and the id sha256(b"unreadable:" + uri), so it stays
visible, re-ingesting it adds nothing, and it never collides with a real image's id.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from typing import Any

import pyarrow as pa

from curation.storage import io
from curation.steps.ingest import captions as capt
from curation.steps.ingest.sources import IMAGE_EXTENSIONS

INGESTED_SCHEMA = pa.schema([
    ("id", pa.string()), ("uri", pa.string()), ("byte_offset", pa.int64()), ("byte_size", pa.int64()),
    ("source", pa.string()), ("caption", pa.string()),
    ("caption_fields", pa.map_(pa.string(), pa.string())), ("tags", pa.list_(pa.string())),
    ("caption_issue", pa.string()), ("extra_json", pa.string()), ("bytes_len", pa.int64()),
    ("error", pa.string()),
])


def unreadable_id(uri: str) -> str:
    return hashlib.sha256(b"unreadable:" + uri.encode("utf-8", "surrogatepass")).hexdigest()


def hash_batch(batch: pa.Table, source: str) -> pa.Table:
    """Ray map_batches body: candidates (see sources.CANDIDATE_SCHEMA) -> ingested rows."""
    rows: list[dict[str, Any]] = []
    for cand in batch.to_pylist():
        if cand["kind"] == "tar":
            rows.extend(_expand_tar(cand["uri"], source))
        else:
            rows.append(_file_row(cand, source))
    return pa.Table.from_pylist(rows, schema=INGESTED_SCHEMA)


def _file_row(cand: dict[str, Any], source: str) -> dict[str, Any]:
    uri = cand["uri"]
    record: dict[str, Any] = json.loads(cand["record_json"]) if cand["record_json"] else {}
    errors: list[str] = []
    fields, tags, extra, issue = capt.split_fields(record)
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
    row = _caption_columns(fields, tags, extra, issue)
    row.update(uri=uri, byte_offset=None, byte_size=None, source=source)
    if not uri:
        row.update(id=unreadable_id(f"{source}:{cand['record_json']}"), bytes_len=None,
                   error="ingest: row has no uri")
        return row
    try:
        data = io.read_bytes(uri)
        row.update(id=hashlib.sha256(data).hexdigest(), bytes_len=len(data))
    except FileNotFoundError:
        row.update(id=unreadable_id(uri), bytes_len=None)
        errors.append(f"ingest: file not found: {uri}")
    except OSError as exc:
        row.update(id=unreadable_id(uri), bytes_len=None)
        errors.append(f"ingest: cannot read: {exc}")
    row["error"] = "; ".join(errors) or None
    return row


def _caption_columns(fields: dict[str, str], tags: list[str], extra: dict[str, Any], issue: str | None) -> dict[str, Any]:
    caption = capt.primary(fields)
    if caption is None:
        issue = issue or "missing"
    return {"caption": caption, "caption_fields": list(fields.items()) or None, "tags": tags or None,
            "caption_issue": issue, "extra_json": json.dumps(extra, ensure_ascii=False, default=str) if extra else None}


def _expand_tar(shard_uri: str, source: str) -> list[dict[str, Any]]:
    """One row per image member of a WebDataset shard; `.txt`/`.json` members with the same
    key become its captions. Reads the shard once, sequentially."""
    try:
        data = io.read_bytes(shard_uri)
    except OSError as exc:
        return [{"id": unreadable_id(shard_uri), "uri": shard_uri, "source": source,
                 "error": f"ingest: cannot read shard: {exc}", "caption_issue": "missing"}]
    import io as pyio

    groups: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    try:
        with tarfile.open(fileobj=pyio.BytesIO(data), mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = posixpath.basename(m.name)
                if base.startswith("."):
                    continue
                # WebDataset key: the path up to the first dot of the basename.
                key = posixpath.join(posixpath.dirname(m.name), base.split(".", 1)[0])
                ext = "." + base.split(".", 1)[1].lower() if "." in base else ""
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                groups[key][ext] = m
    except tarfile.TarError as exc:
        return [{"id": unreadable_id(shard_uri), "uri": shard_uri, "source": source,
                 "error": f"ingest: corrupt tar shard: {exc}", "caption_issue": "missing"}]
    rows = []
    for key in order:
        members = groups[key]
        image_ext = next((e for e in members if e in IMAGE_EXTENSIONS), None)
        if image_ext is None:
            continue  # caption-only group: nothing to train on
        m = members[image_ext]
        blob = data[m.offset_data:m.offset_data + m.size]
        fields: dict[str, str] = {}
        tags: list[str] = []
        extra: dict[str, Any] = {"wds_key": key}
        issue = None
        if ".txt" in members:
            t = members[".txt"]
            fields["caption"], issue = capt.normalize(data[t.offset_data:t.offset_data + t.size])
        if ".json" in members:
            j = members[".json"]
            try:
                f2, t2, e2, why = capt.split_fields(capt.parse_json_sidecar(data[j.offset_data:j.offset_data + j.size]))
                for k, v in f2.items():
                    fields.setdefault(k, v)
                tags, issue = t2, issue or why
                extra.update(e2)
            except ValueError as exc:
                extra["json_error"] = str(exc)
        row = _caption_columns(fields, tags, extra, issue)
        row.update(id=hashlib.sha256(blob).hexdigest(), uri=f"{shard_uri}#{m.name}", byte_offset=m.offset_data,
                   byte_size=m.size, source=source, bytes_len=m.size, error=None)
        rows.append(row)
    return rows
