"""Discover items in a source, on the driver, without reading image bytes.

Three source kinds, chosen from what SOURCE is:
- a directory tree of images with optional sidecars (`x.txt`, `x.json` beside `x.jpg`);
- a table file (`.parquet`, `.csv`, `.jsonl` / `.json`) with a uri column and caption column(s);
- WebDataset shards: a `.tar` file, or a directory containing only `.tar` files.

Each returns a "candidates" Arrow table (one row per item or, for WebDataset, per shard) that
the hashing tasks (`curation.steps.ingest.hashing`) expand and hash in parallel.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.storage import io
from curation.steps.ingest import captions as capt

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif",
    ".heic", ".heif", ".jxl", ".jp2", ".ico", ".svg", ".ppm", ".pgm", ".tga",
})
SIDECAR_EXTENSIONS = (".txt", ".json")
URI_COLUMNS = ("uri", "url", "path", "image_path", "image", "file", "filepath", "file_name", "filename")
TABLE_EXTENSIONS = (".parquet", ".csv", ".jsonl", ".json", ".ndjson")

CANDIDATE_SCHEMA = pa.schema([
    ("kind", pa.string()),            # "file" or "tar"
    ("uri", pa.string()),
    ("sidecar_txt", pa.string()),
    ("sidecar_json", pa.string()),
    ("record_json", pa.string()),     # the table row's caption/tag/extra columns, as JSON
])


class SourceError(ValueError):
    """The source cannot be used as a whole (not found, no uri column, unknown format)."""


def discover(source: str, uri_column: str | None = None) -> tuple[str, pa.Table]:
    """(kind, candidates) for a source path or URI."""
    fs, path = io.resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"source not found: {source}")
    if info.type == pafs.FileType.Directory:
        files = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                 if i.type == pafs.FileType.File]
        if files and all(f.endswith(".tar") for f in files):
            return "webdataset", _tar_candidates(source, path, sorted(files))
        return "directory", _directory_candidates(source, path, files)
    lower = path.lower()
    if lower.endswith(".tar"):
        return "webdataset", _tar_candidates(source, posixpath.dirname(path), [path])
    if lower.endswith(TABLE_EXTENSIONS):
        return "table", _table_candidates(source, fs, path, uri_column)
    raise SourceError(f"unknown source kind for {source}: expected a directory, a .tar shard, or one of {TABLE_EXTENSIONS}")


def _uri_like(source: str, path: str) -> str:
    """Keep the source's scheme (s3://...) on paths listed from its filesystem."""
    if "://" in source and not source.startswith("file://"):
        return source.split("://", 1)[0] + "://" + path.lstrip("/")
    return path


def _directory_candidates(source: str, root: str, files: list[str]) -> pa.Table:
    by_stem: dict[str, dict[str, str]] = {}
    images = []
    for f in sorted(files):
        stem, ext = posixpath.splitext(f)
        ext = ext.lower()
        if ext in IMAGE_EXTENSIONS:
            images.append((stem, f))
        elif ext in SIDECAR_EXTENSIONS:
            by_stem.setdefault(stem, {})[ext] = f
    rows = {k: [] for k in CANDIDATE_SCHEMA.names}
    for stem, f in images:
        side = by_stem.get(stem, {})
        rows["kind"].append("file")
        rows["uri"].append(_uri_like(source, f))
        rows["sidecar_txt"].append(_uri_like(source, side[".txt"]) if ".txt" in side else None)
        rows["sidecar_json"].append(_uri_like(source, side[".json"]) if ".json" in side else None)
        rows["record_json"].append(None)
    return pa.table(rows, schema=CANDIDATE_SCHEMA)


def _tar_candidates(source: str, root: str, shards: list[str]) -> pa.Table:
    n = len(shards)
    return pa.table({"kind": ["tar"] * n, "uri": [_uri_like(source, s) for s in shards],
                     "sidecar_txt": [None] * n, "sidecar_json": [None] * n, "record_json": [None] * n},
                    schema=CANDIDATE_SCHEMA)


def read_table_file(fs: pafs.FileSystem, path: str) -> pa.Table:
    lower = path.lower()
    with fs.open_input_file(path) as f:
        if lower.endswith(".parquet"):
            return pq.read_table(f)
        if lower.endswith(".csv"):
            # Captions with invalid UTF-8 must not fail the whole file: read them unchecked,
            # captions.normalize() repairs them per row.
            return pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(check_utf8=False))
        return pajson.read_json(f)


def _table_candidates(source: str, fs: pafs.FileSystem, path: str, uri_column: str | None) -> pa.Table:
    try:
        table = read_table_file(fs, path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"cannot read source table {source}: {exc}") from None
    names = table.column_names
    col = uri_column or next((c for c in URI_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise SourceError(f"{source}: no uri column (looked for {uri_column or URI_COLUMNS}; have {names})")
    base = _uri_like(source, posixpath.dirname(path))
    uris = table.column(col).cast(pa.string())
    others = [c for c in names if c != col]
    records = []
    for row in table.select(others).to_pylist():
        records.append(json.dumps(_jsonable(row), ensure_ascii=False))
    resolved = [io.join(base, u) if u else None for u in uris.to_pylist()]
    n = table.num_rows
    return pa.table({"kind": ["file"] * n, "uri": resolved, "sidecar_txt": [None] * n,
                     "sidecar_json": [None] * n, "record_json": records}, schema=CANDIDATE_SCHEMA)


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, bytes):
            v = capt.normalize(v)[0]
        elif not isinstance(v, (str, int, float, bool, list, dict, type(None))):
            v = str(v)
        out[k] = v
    return out

