"""Discover items in a source, on the driver, without reading image bytes.

Three source kinds, chosen from what SOURCE is:
- a directory tree of images with optional sidecars (`x.txt`, `x.json` beside `x.jpg`) or
  Hugging Face ImageFolder metadata (`metadata.csv` / `.jsonl` / `.parquet` with `file_name`);
- a table file (`.parquet`, `.csv`, `.jsonl` / `.json`) with a uri column and caption column(s);
- WebDataset shards: a `.tar` file, or a directory containing `.tar` files (other files beside
  them, such as img2dataset's `.parquet` / `_stats.json`, never hide the shards; images beside
  the shards are ingested as in a directory source).

img2dataset output folders are recognised in its "webdataset" mode (`00000.tar` +
`00000.parquet` + `00000_stats.json` per shard) and "files" mode (`00000/KEY.jpg` ... +
`00000.parquet`): the per-shard parquet (columns `key`, `status`, ...) is attached to the shard
or image candidates (`meta_table`) and joined by `key` in the hashing tasks, and its failed rows
(no image) are counted into the ingest summary (`source_notes`). In its "parquet" mode (images
inside the parquet files) the tables are embedded-image tables (below).

Images embedded in tables (`curation.steps.ingest.embedded`): a Parquet / Arrow file with an
image column (binary, or a Hugging Face `struct<bytes, path>`), given as the source or found in
a directory source (Hugging Face Parquet shards, a `save_to_disk` folder), yields one "embedded"
candidate per piece of the table; the hashing tasks store its image bytes in lake shards. A
table with no image column (and any table when `uri_column` is given) is a table of uris.

Each returns a "candidates" Arrow table (one row per item or, for WebDataset, per shard) that
the hashing tasks (`curation.steps.ingest.hashing`) expand and hash in parallel.

Hostile sources are answered per item, never by rejecting the source:
- a local directory is walked by `_walk_local`: symbolic links that leave the source are not
  followed unless `follow_symlinks`, and such links, loops and dangling links become rows with
  an `error` naming the link (a sidecar behind such a link is not read: its image's error);
- file names that are not UTF-8 are kept by their bytes (`io.safe_uri`);
- a table file with a bad line (malformed, wrong field count) gives that line an error row and
  ingests the rest; cells of any size are read (`read_records` falls back to a line reader).
"""

from __future__ import annotations

import csv
import errno
import io as pyio
import json
import os
import posixpath
import re
import stat
from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.storage import io
from curation.steps.ingest import captions as capt
from curation.steps.ingest import embedded
from curation.steps.ingest.columns import TABLE_EXTENSIONS, URI_COLUMNS, choose_uri_column

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif",
    ".heic", ".heif", ".jxl", ".jp2", ".ico", ".svg", ".ppm", ".pgm", ".tga",
})
SIDECAR_EXTENSIONS = (".txt", ".json")
# pyarrow's CSV/JSON readers fail on a row longer than their block (default 1 MiB); 16 MiB keeps
# big-caption tables on the fast path, and anything larger goes to the line reader.
TABLE_BLOCK_BYTES = 16 << 20

CANDIDATE_SCHEMA = pa.schema([
    ("kind", pa.string()),            # "file" or "tar"
    ("uri", pa.string()),
    ("sidecar_txt", pa.string()),
    ("sidecar_json", pa.string()),
    ("record_json", pa.string()),     # the table row's caption/tag/extra columns, as JSON
    ("error", pa.string()),           # the item is not read: its row carries this error
    ("sidecar_error", pa.string()),   # a sidecar is not read: added to the item's error
    ("meta_table", pa.string()),      # img2dataset per-shard parquet, joined by key in the task
    ("part", pa.string()),            # "embedded": the piece of the table (JSON, see embedded.py)
])
NOTES_METADATA_KEY = b"curation.ingest.notes"  # candidates' schema metadata: summary notes (JSON)
IMG2DATASET_REQUIRED = ("key", "status")
IMG2DATASET_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp")  # "parquet" output mode: images inline


class SourceError(ValueError):
    """The source cannot be used as a whole (not found, no uri column, unknown format)."""


def discover(source: str, uri_column: str | None = None, follow_symlinks: bool = False,
             image_column: str | None = None) -> tuple[str, pa.Table]:
    """(kind, candidates) for a source path or URI.

    follow_symlinks: in a local directory, also follow symbolic links that resolve outside it
    (by default they become error rows; links inside the source are always followed).
    image_column: the column of Parquet / Arrow tables that holds image bytes (default: found
    from the schema, `embedded.find_image_column`).
    """
    fs, path = io.resolve(source)
    info = fs.get_file_info(path) if _utf8(path) else _local_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"source not found: {source}")
    if info.type == pafs.FileType.Directory:
        if isinstance(fs, pafs.LocalFileSystem):
            files, problems = _walk_local(path, follow_symlinks)
        else:  # object stores have no links, and their keys are UTF-8
            files = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                     if i.type == pafs.FileType.File]
            problems = []
        return _directory_source(source, fs, files, problems, image_column)
    lower = path.lower()
    if lower.endswith(".tar"):
        # One shard; an img2dataset shard's parquet beside it (00000.tar + 00000.parquet) is joined.
        sibling = path[:-len(".tar")] + ".parquet"
        return _directory_source(source, fs, [path] + ([sibling] if _is_file(fs, sibling) else []), [])
    if lower.endswith(embedded.EMBEDDED_EXTENSIONS) and not uri_column:
        try:
            column = embedded.find_image_column(embedded.read_schema(fs, path), image_column)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read source table {source}: {exc}") from None
        except ValueError as exc:
            raise SourceError(f"{source}: {exc}") from None
        if column is not None:
            cands = embedded.table_candidates(_uri_like(source, path), fs, path, column)
            out = _empty_rows()
            for c in cands:
                _add(out, **c)
            notes = {"embedded_tables": 1, "embedded_image_column": column}
            return "embedded", _with_notes(pa.table(out, schema=CANDIDATE_SCHEMA), notes)
    if lower.endswith(TABLE_EXTENSIONS):
        return "table", _table_candidates(source, fs, path, uri_column)
    raise SourceError(f"unknown source kind for {source}: expected a directory, a .tar shard, or one of {TABLE_EXTENSIONS}")


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    try:
        info = fs.get_file_info(path) if _utf8(path) else _local_info(path)
    except OSError:
        return False
    return info.type == pafs.FileType.File


def _utf8(path: str) -> bool:
    return capt.is_utf8(path)


def _local_info(path: str) -> pafs.FileInfo:
    """FileInfo for a local path pyarrow cannot take (not UTF-8), from os.stat."""
    try:
        st = os.stat(path)
    except OSError:
        return pafs.FileInfo(io.safe_uri(path), pafs.FileType.NotFound)
    kind = pafs.FileType.Directory if stat.S_ISDIR(st.st_mode) else pafs.FileType.File
    return pafs.FileInfo(io.safe_uri(path), kind)


def _uri_like(source: str, path: str) -> str:
    """Keep the source's scheme (s3://...) on paths listed from its filesystem; local paths
    whose names are not UTF-8 become %-encoded file:// URIs (`io.safe_uri`)."""
    if "://" in source and not source.startswith("file://"):
        return source.split("://", 1)[0] + "://" + path.lstrip("/")
    return io.safe_uri(path)


# ---- local directories: links are checked, never followed blindly ----------------------------

class _Problem:
    """A directory entry that is not followed: its path, the error message and what it is:
    "dir", "file" or "unknown" (a dangling or looping link's kind cannot be known)."""

    __slots__ = ("path", "message", "kind")

    def __init__(self, path: str, message: str, kind: str):
        self.path, self.message, self.kind = path, message, kind


def _walk_local(root: str, follow_symlinks: bool) -> tuple[list[str], list[_Problem]]:
    """(regular files, entries not followed) under the local directory `root`, in sorted order.

    Names are surrogate-escaped str (os.scandir on str), so bytes that are not UTF-8 survive.
    A symbolic link is followed when it resolves inside `root` (or anywhere, with
    `follow_symlinks`); links that leave the source, dangling links and loops are reported, not
    followed. Every real directory is listed once: a link to a directory already listed (or
    inside the source, listed on its own) adds nothing, and a link to one of its own ancestors
    is a loop.
    """
    real_root = os.path.realpath(root)
    inside_prefix = real_root.rstrip(os.sep) + os.sep
    root_stat = os.stat(root)
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    files: list[str] = []
    problems: list[_Problem] = []
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(root, ((root_stat.st_dev, root_stat.st_ino),))]
    while stack:
        directory, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(_Problem(directory, f"cannot list directory {io.printable(directory)}: "
                                                f"{exc.strerror or exc}", "dir"))
            continue
        subdirs = []
        for entry in entries:
            path = entry.path
            try:
                if entry.is_symlink():
                    target = _readlink(path)
                    shown = f"{io.printable(path)} -> {io.printable(target)}"
                    try:
                        st = os.stat(path)
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:
                            problems.append(_Problem(path, f"symlink loop: {shown}", "unknown"))
                        elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                            problems.append(_Problem(path, f"dangling symlink: {shown}", "unknown"))
                        else:
                            problems.append(_Problem(path, f"cannot follow symlink: {shown} ({exc.strerror})", "unknown"))
                        continue
                    is_dir = stat.S_ISDIR(st.st_mode)
                    key = (st.st_dev, st.st_ino)
                    if is_dir and key in ancestors:
                        problems.append(_Problem(path, f"symlink loop: {shown} (a directory containing it)", "dir"))
                        continue
                    real = os.path.realpath(path)
                    inside = real == real_root or real.startswith(inside_prefix)
                    if not inside and not follow_symlinks:
                        problems.append(_Problem(
                            path, f"symlink leaves the source, not followed: {io.printable(path)} -> "
                                  f"{io.printable(real)} (set ingest.follow_symlinks to follow it)", "dir" if is_dir else "file"))
                        continue
                    if is_dir and (inside or key in visited):
                        continue  # listed under its own path already (or about to be)
                else:
                    st = entry.stat(follow_symlinks=False)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    key = (st.st_dev, st.st_ino)
            except OSError as exc:  # the entry vanished or cannot be stat'ed
                problems.append(_Problem(path, f"cannot stat {io.printable(path)}: {exc.strerror or exc}", "unknown"))
                continue
            if is_dir:
                if key not in visited:  # bind mounts can make a real directory appear twice
                    visited.add(key)
                    subdirs.append((path, ancestors + (key,)))
            elif stat.S_ISREG(st.st_mode):
                files.append(path)
            # sockets, FIFOs and devices are not items (reading a FIFO would block the task)
        stack.extend(reversed(subdirs))
    return files, problems


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _row_for_problem(problem: _Problem) -> bool:
    """Whether a not-followed entry becomes an error row: images, shards and directories (a
    subtree that may hold images) do; links named like other files (notes.md) are ignored like
    any other non-image file; sidecars are reported on their image's row instead."""
    ext = posixpath.splitext(problem.path)[1].lower()
    if problem.kind == "dir":
        return True
    if ext in SIDECAR_EXTENSIONS:
        return False
    return ext in IMAGE_EXTENSIONS or ext == ".tar" or (problem.kind == "unknown" and not ext)


def _empty_rows() -> dict[str, list]:
    return {k: [] for k in CANDIDATE_SCHEMA.names}


def _add(rows: dict[str, list], kind: str, uri: str | None, sidecar_txt: str | None = None,
         sidecar_json: str | None = None, record_json: str | None = None, error: str | None = None,
         sidecar_error: str | None = None, meta_table: str | None = None, part: str | None = None) -> None:
    for name, value in zip(CANDIDATE_SCHEMA.names,
                           (kind, uri, sidecar_txt, sidecar_json, record_json, error, sidecar_error, meta_table,
                            part)):
        rows[name].append(value)


def _with_notes(candidates: pa.Table, notes: dict[str, Any]) -> pa.Table:
    return candidates.replace_schema_metadata({NOTES_METADATA_KEY: json.dumps(notes)}) if notes else candidates


def _add_problems(rows: dict[str, list], source: str, problems: list[_Problem]) -> None:
    for p in problems:
        if _row_for_problem(p):
            _add(rows, "file", _uri_like(source, p.path), error=f"ingest: {p.message}")


def _directory_source(source: str, fs: pafs.FileSystem, files: list[str],
                      problems: list[_Problem], image_column: str | None = None) -> tuple[str, pa.Table]:
    """(kind, candidates) for a listed directory: its `.tar` files are WebDataset shards, its
    images (with sidecars) file items, its Parquet / Arrow tables with an image column
    embedded-image tables; img2dataset's per-shard parquet files are attached."""
    files = sorted(files)
    tars = [f for f in files if f.lower().endswith(".tar")]
    tables, notes = _img2dataset_tables(fs, files, tars)
    rows = _empty_rows()
    for shard in tars:
        table = tables.get(shard[:-len(".tar")])
        _add(rows, "tar", _uri_like(source, shard), meta_table=_uri_like(source, table[0]) if table else None)
    n_tar_rows = len(rows["uri"])
    listed, imagefolder_notes = _imagefolder_metadata(fs, files)
    notes.update(imagefolder_notes)
    _directory_rows(rows, source, [f for f in files if not f.lower().endswith(".tar")], problems, tables, listed)
    n_file_rows = len(rows["uri"]) - n_tar_rows
    notes.update(_embedded_rows(rows, source, fs, files, tables, image_column))
    _add_problems(rows, source, problems)
    kinds = [k for k, n in (("webdataset", n_tar_rows), ("directory", n_file_rows),
                            ("embedded", notes.get("embedded_tables", 0))) if n]
    kind = kinds[0] if len(kinds) == 1 else ("webdataset" if tars else "directory")
    if tables:
        notes["img2dataset"] = ("webdataset" if n_tar_rows else
                                "parquet" if any(inline for _, inline in tables.values()) else "files")
    return kind, _with_notes(pa.table(rows, schema=CANDIDATE_SCHEMA), notes)


def _embedded_rows(rows: dict[str, list], source: str, fs: pafs.FileSystem, files: list[str],
                   img2dataset: dict[str, tuple[str, bool]], image_column: str | None) -> dict[str, Any]:
    """Add the candidates of the directory's embedded-image tables; returns summary notes.

    A table is one when it has an image column (`embedded.find_image_column`; with
    `image_column` given, the tables that lack it are not). img2dataset tables are taken only
    in its "parquet" mode (images inline); in a `save_to_disk` folder only the data files its
    `state.json` lists. Tables whose schema cannot be read are named in the notes.
    """
    sidecar_tables = {path for path, inline in img2dataset.values() if not inline}
    inline_tables = {path for path, inline in img2dataset.values() if inline}
    listed = set(files)
    saved: dict[str, tuple[list[str], str | None]] = {}
    for f in files:
        if posixpath.basename(f) == "state.json":
            found = embedded.hf_saved_dataset(fs, posixpath.dirname(f))
            if found is not None:
                saved[posixpath.dirname(f)] = found
    n_tables = 0
    columns: dict[str, None] = {}
    unreadable: list[str] = []
    lacking: list[str] = []
    for f in files:
        if not f.lower().endswith(embedded.EMBEDDED_EXTENSIONS) or f in sidecar_tables:
            continue
        directory = posixpath.dirname(f)
        split = None
        if directory in saved:
            data_files, split = saved[directory]
            if f not in data_files:
                continue  # a map cache or other file beside a saved dataset's data
            if split is None and posixpath.join(posixpath.dirname(directory), "dataset_dict.json") in listed:
                split = posixpath.basename(directory)  # a saved DatasetDict: one folder per split
        try:
            column = embedded.find_image_column(embedded.read_schema(fs, f), image_column)
        except (OSError, pa.ArrowException) as exc:
            unreadable.append(f"{io.printable(posixpath.basename(f))}: {exc}")
            continue
        except ValueError:
            lacking.append(io.printable(posixpath.basename(f)))
            continue
        if column is None:
            continue  # a table of metadata, not of images
        try:
            cands = embedded.table_candidates(_uri_like(source, f), fs, f, column,
                                                 img2dataset=f in inline_tables, split=split)
        except (OSError, pa.ArrowException) as exc:
            unreadable.append(f"{io.printable(posixpath.basename(f))}: {exc}")
            continue
        for c in cands:
            _add(rows, **c)
        n_tables += 1
        columns[column] = None
    if image_column and lacking and not n_tables:
        raise SourceError(f"{source}: image column {image_column!r} is in none of its tables "
                          f"({', '.join(lacking[:5])}{', ...' if len(lacking) > 5 else ''})")
    notes: dict[str, Any] = {}
    if n_tables:
        notes.update(embedded_tables=n_tables, embedded_image_column=",".join(columns))
    if unreadable:
        notes["embedded_unreadable_tables"] = unreadable
    return notes


def source_notes(candidates: pa.Table) -> dict[str, Any]:
    """Summary notes discovery left on the candidates (img2dataset failure counts)."""
    meta = candidates.schema.metadata or {}
    return json.loads(meta[NOTES_METADATA_KEY]) if NOTES_METADATA_KEY in meta else {}


def _img2dataset_tables(fs: pafs.FileSystem, files: list[str],
                        tars: list[str]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """img2dataset's per-shard tables: ({shard stem: (parquet path, images inline)}, notes).

    A `.parquet` file is one when it sits beside its shard (`00000.tar`, the `00000/` folder of
    "files" mode, or `00000_stats.json`) and has img2dataset's `key` and `status` columns. Its
    rows whose status is not "success" have no image: they are counted here (by status and by
    error kind), never ingested. A table that cannot be read is counted, and its shard is
    ingested without it.
    """
    stems = {t[:-len(".tar")] for t in tars}
    stems.update(posixpath.dirname(f) for f in files
                 if posixpath.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    stems.update(f[:-len("_stats.json")] for f in files if f.endswith("_stats.json"))
    tables: dict[str, tuple[str, bool]] = {}
    unreadable: list[str] = []
    rows = successes = 0
    by_status: dict[str, int] = {}
    by_error: dict[str, int] = {}
    for f in files:
        if not f.endswith(".parquet") or f[:-len(".parquet")] not in stems:
            continue
        try:
            with io.open_input(fs, f) as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                if not all(c in names for c in IMG2DATASET_REQUIRED):
                    continue
                cols = ["status"] + (["error_message"] if "error_message" in names else [])
                t = pf.read(columns=cols)
        except (OSError, pa.ArrowException) as exc:
            unreadable.append(f"{io.printable(posixpath.basename(f))}: {exc}")
            continue
        inline = any(c in names for c in IMG2DATASET_IMAGE_COLUMNS)
        tables[f[:-len(".parquet")]] = (f, inline)
        rows += t.num_rows
        statuses = t["status"].to_pylist()
        errors = t["error_message"].to_pylist() if "error_message" in names else [None] * t.num_rows
        for status, message in zip(statuses, errors):
            if status == "success":
                successes += 1
                continue
            status = capt.repair(str(status))
            by_status[status] = by_status.get(status, 0) + 1
            kind = _failure_kind(str(message)) if message else ""
            kind = kind or status
            by_error[kind] = by_error.get(kind, 0) + 1
    notes: dict[str, Any] = {}
    if tables:
        notes.update(img2dataset_shards=len(tables), img2dataset_rows=rows, img2dataset_successes=successes,
                     img2dataset_failed=rows - successes,
                     img2dataset_failed_by_status=dict(sorted(by_status.items(), key=lambda kv: -kv[1])),
                     img2dataset_failed_by_error=dict(sorted(by_error.items(), key=lambda kv: -kv[1])))
    if unreadable:
        notes["img2dataset_unreadable_tables"] = unreadable
    return tables, notes


_VARIABLE_DETAIL = re.compile(r"\s*(\(|<_io\.|\bat 0x).*$", re.DOTALL)


def _failure_kind(message: str) -> str:
    """img2dataset error_message -> a kind to count by: object addresses and parenthesised
    details (hosts, ports) cut, then as `summary.error_kind` ('HTTP Error 404: Not Found')."""
    from curation.steps.summary import error_kind

    return error_kind(_VARIABLE_DETAIL.sub("", capt.repair(message).strip()))


IMAGEFOLDER_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def _imagefolder_metadata(fs: pafs.FileSystem, files: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """({image path: its row as JSON}, notes) from Hugging Face ImageFolder metadata files.

    A `metadata.csv` / `.jsonl` / `.parquet` names each image in its `file_name` column,
    relative to the metadata file's folder; the row's other columns are the image's caption
    fields / tags / extra, as for a table source (a sidecar beside the image fills what the
    row leaves out). Rows naming no listed image are counted; a metadata file that cannot be
    read, or has no `file_name` column, is named in the notes.
    """
    listed: dict[str, str] = {}
    unmatched = 0
    problems: list[str] = []
    present = set(files)
    for meta in (f for f in files if posixpath.basename(f) in IMAGEFOLDER_METADATA):
        try:
            names, records = read_records(fs, meta)
        except (OSError, SourceError) as exc:
            problems.append(f"{io.printable(meta)}: {exc}")
            continue
        if "file_name" not in names:
            problems.append(f"{io.printable(meta)}: no file_name column")
            continue
        base = posixpath.dirname(meta)
        for line, record, _ in records:
            name = record.pop("file_name", None) if record else None
            path = posixpath.normpath(posixpath.join(base, str(name))) if name else None
            if path not in present:
                unmatched += 1
                continue
            try:
                listed[path] = json.dumps(_jsonable(record), ensure_ascii=True)
            except (RecursionError, ValueError):
                problems.append(f"{io.printable(meta)} line {line}: nested too deep")
    notes: dict[str, Any] = {}
    if listed:
        notes["imagefolder_rows"] = len(listed)
    if unmatched:
        notes["imagefolder_rows_without_image"] = unmatched
    if problems:
        notes["imagefolder_unreadable_metadata"] = problems
    return listed, notes


def _directory_rows(rows: dict[str, list], source: str, files: list[str], problems: list[_Problem],
                    tables: dict[str, tuple[str, bool]], listed: dict[str, str] | None = None) -> None:
    by_stem: dict[str, dict[str, str]] = {}
    images = []
    for f in sorted(files):
        stem, ext = posixpath.splitext(f)
        ext = ext.lower()
        if ext in IMAGE_EXTENSIONS:
            images.append((stem, f))
        elif ext in SIDECAR_EXTENSIONS:
            by_stem.setdefault(stem, {})[ext] = f
    # Sidecars behind links that are not followed: never read, reported on their image's row.
    blocked: dict[str, list[str]] = {}
    for p in problems:
        stem, ext = posixpath.splitext(p.path)
        if ext.lower() in SIDECAR_EXTENSIONS:
            blocked.setdefault(stem, []).append(f"caption sidecar not read: {p.message}")
    for stem, f in images:
        side = by_stem.get(stem, {})
        table = tables.get(posixpath.dirname(f))  # img2dataset "files" mode: 00000/KEY.jpg + 00000.parquet
        _add(rows, "file", _uri_like(source, f),
             sidecar_txt=_uri_like(source, side[".txt"]) if ".txt" in side else None,
             sidecar_json=_uri_like(source, side[".json"]) if ".json" in side else None,
             record_json=(listed or {}).get(f),  # a Hugging Face ImageFolder metadata row
             sidecar_error="; ".join(blocked[stem]) if stem in blocked else None,
             meta_table=_uri_like(source, table[0]) if table else None)


# ---- table files: one bad line is one error row ------------------------------------------------

def read_table_file(fs: pafs.FileSystem, path: str) -> pa.Table:
    """The whole table with pyarrow (fast path). Raises pa.ArrowInvalid on a malformed file,
    including a CSV row with the wrong number of fields or a row over TABLE_BLOCK_BYTES."""
    lower = path.lower()
    with io.open_input(fs, path) as f:
        if lower.endswith(".parquet"):
            return pq.read_table(f)
        if lower.endswith(embedded.ARROW_EXTENSIONS):
            return embedded.read_ipc(f)
        if lower.endswith(".csv"):
            # Invalid UTF-8 is not checked here: `_records` finds it per cell, and only then
            # re-reads the file with the line reader.
            return pacsv.read_csv(f, read_options=pacsv.ReadOptions(block_size=TABLE_BLOCK_BYTES),
                                  convert_options=pacsv.ConvertOptions(check_utf8=False))
        return pajson.read_json(f, read_options=pajson.ReadOptions(block_size=TABLE_BLOCK_BYTES))


Record = tuple[int, "dict[str, Any] | None", "str | None"]  # (line number, row, problem)


def read_records(fs: pafs.FileSystem, path: str) -> tuple[list[str], list[Record]]:
    """(column names, records) of a table file; a record is (1-based line, row, None) or
    (line, None, what is wrong with that line).

    pyarrow reads well-formed files; a CSV or JSON Lines file it rejects (a malformed line, a
    row longer than its block, a type that changes between lines) or whose strings are not
    UTF-8 is read again line by line, so only the bad lines are lost.
    """
    lower = path.lower()
    try:
        table = read_table_file(fs, path)
        rows = table.to_pylist()
        return table.column_names, [(i + 2 if lower.endswith(".csv") else i + 1, r, None) for i, r in enumerate(rows)]
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if lower.endswith(embedded.EMBEDDED_EXTENSIONS):
            raise SourceError(f"cannot read source table {io.printable(path)}: {exc}") from None
    with io.open_input(fs, path) as f:
        data = f.read()
    if lower.endswith(".csv"):
        return _csv_records(data)
    return _jsonl_records(data)


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    old = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_records(data: bytes) -> tuple[list[str], list[Record]]:
    """CSV by Python's csv module: any cell size, ragged rows reported per line. Cells are
    decoded with surrogateescape so bytes that are not UTF-8 reach the captions (repaired and
    flagged there) and the uris (kept by their bytes) intact; values are strings."""
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(pyio.StringIO(text, newline=""))
    records: list[Record] = []
    # The module's default cell limit is 128 KiB; a table file is read whole anyway.
    with _csv_field_limit(max(len(data), 1 << 20)):
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            return [], []
        names = [capt.repair(h) for h in header]
        line = reader.line_num
        while True:
            start = line + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                records.append((start, None, f"not valid CSV ({exc})"))
                line = reader.line_num
                if line < start:  # no progress: the reader cannot go on
                    break
                continue
            line = reader.line_num
            if not cells:
                continue  # a blank line
            if len(cells) != len(names):
                records.append((start, None, f"{len(cells)} fields, expected {len(names)}"))
                continue
            records.append((start, dict(zip(names, cells)), None))
    return names, records


def _jsonl_records(data: bytes) -> tuple[list[str], list[Record]]:
    """JSON Lines by the json module, one line at a time (surrogateescape as for CSV)."""
    names: dict[str, None] = {}
    records: list[Record] = []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8", errors="surrogateescape"))
        except json.JSONDecodeError as exc:
            records.append((i, None, f"not valid JSON ({exc})"))
            continue
        except RecursionError:
            records.append((i, None, "JSON nested too deep"))
            continue
        if not isinstance(value, dict):
            records.append((i, None, f"a JSON {type(value).__name__}, not an object"))
            continue
        value = {capt.repair(str(k)): v for k, v in value.items()}
        names.update(dict.fromkeys(value))
        records.append((i, value, None))
    return list(names), records


def _table_candidates(source: str, fs: pafs.FileSystem, path: str, uri_column: str | None) -> pa.Table:
    try:
        names, records = read_records(fs, path)
    except OSError as exc:
        raise SourceError(f"cannot read source table {source}: {exc}") from None
    if records and all(r is None for _, r, _ in records):
        # Not one readable line: the wrong format (a JSON array, a binary file), not a bad line.
        line, _, problem = records[0]
        raise SourceError(f"cannot read source table {source}: no readable row (line {line}: {problem})")
    col = choose_uri_column(names, uri_column)
    if col is None:
        raise SourceError(f"{source}: no uri column (looked for {uri_column or URI_COLUMNS}; have {names})")
    base = _uri_like(source, posixpath.dirname(path))
    label = posixpath.basename(path)
    rows = _empty_rows()
    for line, record, problem in records:
        if record is None:
            _add(rows, "file", None, error=f"ingest: bad table row: {io.printable(label)} line {line}: {problem}")
            continue
        value = record.pop(col, None)
        try:
            # ASCII JSON: lone surrogates (cells that were not UTF-8) travel as \udcXX escapes,
            # so the hashing task still sees them and flags the caption as invalid_utf8.
            extra = json.dumps(_jsonable(record), ensure_ascii=True)
        except (RecursionError, ValueError):
            _add(rows, "file", None, error=f"ingest: bad table row: {io.printable(label)} line {line}: "
                                           "nested too deep")
            continue
        uri, error = None, None
        if value is not None and value != "":
            try:
                uri = io.safe_uri(io.join(base, str(value)))
            except ValueError as exc:
                error = f"ingest: bad table row: {io.printable(label)} line {line}: {exc}"
        _add(rows, "file", uri, record_json=extra, error=error)
    return pa.table(rows, schema=CANDIDATE_SCHEMA)


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, bytes):
            v = capt.normalize(v)[0]
        elif not isinstance(v, (str, int, float, bool, list, dict, type(None))):
            v = str(v)
        out[k] = v
    return out
