"""Images embedded in tables: Parquet / Arrow files whose rows carry the image bytes.

The layouts this covers:
- Hugging Face `datasets` Parquet shards (`data/train-00000-of-00004.parquet`, what the Hub
  serves and `Dataset.to_parquet` writes) with an `Image` feature: a `struct<bytes, path>`
  column; `bytes` may be null with a `path` to the file (`to_parquet` of images loaded from
  disk), which is then read from that path, relative to the table's folder;
- a saved `datasets` directory (`Dataset.save_to_disk`: `state.json` + `data-*.arrow`, Arrow
  IPC streams; a `DatasetDict` adds `dataset_dict.json` and one such folder per split);
- any Parquet / Arrow IPC (`.arrow`, `.feather`) table with a binary image column, e.g.
  img2dataset's "parquet" output mode (`jpg` column, one table per shard).

The image column is the one named by `ingest.image_column` / `--image-column`, else found from
the schema: a column the Hugging Face features (schema metadata) declare as `Image`, else the
first `struct<bytes: binary, ...>` column, else a binary column with a usual image name
(`IMAGE_COLUMN_NAMES`), else the only binary column. The other columns are the row's caption
fields / tags / extra exactly as for a table of paths.

Discovery (`table_candidates`, on the driver) reads footers only and cuts a table into
pieces: runs of Parquet row groups of about `PIECE_ROWS` rows, or a whole Arrow file. Each
piece is one candidate (`kind` "embedded"); a hashing task (`expand_piece`) streams its record
batches, hashes each image, and writes the bytes into one lake tar shard
(`<lake>/_shards/<source>/<piece key>.tar`, `curation.storage.shards`), as URL downloads are
stored; rows point at their member by byte range. Every table row yields one ingested row:
a row with no image (null bytes, unreadable path) is an error row naming the table and row.
img2dataset tables keep its semantics: rows whose `status` is not "success" carry no image and
are counted in the summary (by discovery), not ingested.

Idempotence: the piece key is a hash of the table's uri, size, modification time, image
column and row range, so a re-run of the same table finds its shard already complete (shards
appear at their final name only when whole) and points its rows at the same members: the pool
MERGE then adds nothing. A table that changed has a new key and new shards.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.storage import io
from curation.storage.shards import ShardWriter, shard_dir, shard_index, sniff_extension

__all__ = ["ARROW_EXTENSIONS", "EMBEDDED_EXTENSIONS", "IMAGE_COLUMN_NAMES", "PIECE_ROWS", "expand_piece",
           "find_image_column", "hf_saved_dataset", "read_ipc", "read_schema", "table_candidates"]

IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")
ARROW_EXTENSIONS = (".arrow", ".feather", ".ipc")
EMBEDDED_EXTENSIONS = (".parquet",) + ARROW_EXTENSIONS
PIECE_ROWS = 1000  # rows per hashing candidate: ~40 MB of web-size images, one shard each
_BATCH_ROWS = 64  # rows decoded from the table at a time inside a task (bounds task memory)
_IPC_FILE_MAGIC = b"ARROW1"


def image_kind(dtype: pa.DataType) -> str | None:
    """"struct" for a `struct<bytes: binary, ...>` (Hugging Face Image), "binary" for a binary
    column, None for anything else."""
    if pa.types.is_struct(dtype):
        idx = dtype.get_field_index("bytes")
        return "struct" if idx >= 0 and _is_binary(dtype.field(idx).type) else None
    return "binary" if _is_binary(dtype) else None


def _is_binary(dtype: pa.DataType) -> bool:
    return (pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)
            or pa.types.is_fixed_size_binary(dtype) or str(dtype) == "binary_view")


def _hf_image_columns(schema: pa.Schema) -> list[str]:
    """Columns the Hugging Face features in the schema metadata declare as `Image`."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return []
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(features, dict):
        return []
    return [name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]


def find_image_column(schema: pa.Schema, given: str | None = None) -> str | None:
    """The image column of a table (see the module docstring), or None when it has none.
    ValueError when `given` is absent or does not hold image bytes."""
    if given:
        if given not in schema.names:
            raise ValueError(f"image column {given!r} is not in the table (columns: {schema.names})")
        if image_kind(schema.field(given).type) is None:
            raise ValueError(f"image column {given!r} holds {schema.field(given).type}, not image bytes "
                             "(a binary column or a struct<bytes, path>); a column of paths or URLs is "
                             "the uri column (--uri-column / ingest.uri_column)")
        return given
    kinds = {f.name: image_kind(f.type) for f in schema}
    for name in _hf_image_columns(schema):
        if kinds.get(name):
            return name
    structs = [n for n, k in kinds.items() if k == "struct"]
    if structs:
        return structs[0]
    binaries = [n for n, k in kinds.items() if k == "binary"]
    named = [n for n in binaries if n.lower() in IMAGE_COLUMN_NAMES]
    if named:
        return named[0]
    return binaries[0] if len(binaries) == 1 else None


def _ipc_is_file(f) -> bool:
    """Arrow IPC file format (random access, `ARROW1` magic) rather than the stream format
    (what `datasets.save_to_disk` writes)."""
    head = f.read(len(_IPC_FILE_MAGIC))
    f.seek(0)
    return head == _IPC_FILE_MAGIC


def read_ipc(f) -> pa.Table:
    """A whole Arrow IPC file, in either the file or the stream format."""
    return pa.ipc.open_file(f).read_all() if _ipc_is_file(f) else pa.ipc.open_stream(f).read_all()


def read_schema(fs: pafs.FileSystem, path: str) -> pa.Schema:
    """The Arrow schema of a Parquet or Arrow IPC file, from its footer or first message."""
    with io.open_input(fs, path) as f:
        if path.lower().endswith(".parquet"):
            return pq.read_schema(f)
        if _ipc_is_file(f):
            return pa.ipc.open_file(f).schema
        return pa.ipc.open_stream(f).schema


def hf_saved_dataset(fs: pafs.FileSystem, directory: str) -> tuple[list[str], str | None] | None:
    """(data files, split) of a `datasets.save_to_disk` folder (its `state.json` lists the
    `.arrow` files; other `.arrow` files there, such as map caches, are not data), or None."""
    state = posixpath.join(directory, "state.json")
    try:
        with io.open_input(fs, state) as f:
            meta = json.loads(f.read())
        files = [posixpath.join(directory, d["filename"]) for d in meta["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    split = meta.get("_split")
    return files, (str(split) if split else None)


def _pieces(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    """Runs of row groups of about PIECE_ROWS rows for Parquet (a row group is never split),
    the whole file for Arrow IPC (its row count is in no footer)."""
    if not path.lower().endswith(".parquet"):
        return [{"format": "ipc", "first_row": 0}]
    with io.open_input(fs, path) as f:
        meta = pq.ParquetFile(f).metadata
    out: list[dict[str, Any]] = []
    groups: list[int] = []
    first = rows = 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if groups and rows + n > PIECE_ROWS:
            out.append({"format": "parquet", "row_groups": groups, "first_row": first})
            groups, first, rows = [], first + rows, 0
        groups.append(g)
        rows += n
    if groups:
        out.append({"format": "parquet", "row_groups": groups, "first_row": first})
    return out


def table_candidates(table_uri: str, fs: pafs.FileSystem, path: str, image_column: str,
                     *, img2dataset: bool = False, split: str | None = None) -> list[dict[str, Any]]:
    """Candidate fields (`kind`, `uri`, `part`) per piece of one table. A candidate's `part`
    (JSON) holds the piece, the image column, and its shard name (see the module docstring)."""
    info = fs.get_file_info(path)
    identity = f"{table_uri}|{info.size}|{info.mtime_ns}|{image_column}"
    out = []
    for piece in _pieces(fs, path):
        piece.update(column=image_column, img2dataset=img2dataset, split=split,
                     shard=hashlib.sha256(f"{identity}|{json.dumps(piece, sort_keys=True)}".encode()).hexdigest()[:32])
        out.append({"kind": "embedded", "uri": table_uri, "part": json.dumps(piece)})
    return out


def _batches(fs: pafs.FileSystem, path: str, piece: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """The piece's rows, `_BATCH_ROWS` at a time (never the whole table in memory)."""
    with io.open_input(fs, path) as f:
        if piece["format"] == "parquet":
            yield from pq.ParquetFile(f).iter_batches(batch_size=_BATCH_ROWS, row_groups=piece["row_groups"])
        elif _ipc_is_file(f):
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield from _split(reader.get_batch(i))
        else:
            for batch in pa.ipc.open_stream(f):
                yield from _split(batch)


def _split(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, _BATCH_ROWS):
        yield batch.slice(start, _BATCH_ROWS)


class _Item:
    """One table row on its way to a pool row: its record (the other columns), its image bytes
    (or the file the struct's path names), and what went wrong."""

    __slots__ = ("row", "record", "data", "path", "error")

    def __init__(self, row: int, record: dict[str, Any], data: bytes | None, path: str | None, error: str | None):
        self.row, self.record, self.data, self.path, self.error = row, record, data, path, error


def _items(table_uri: str, batches: Iterator[pa.RecordBatch], piece: dict[str, Any]) -> Iterator[_Item]:
    """Every row of the piece (img2dataset rows that failed to download are skipped: they
    have no image and discovery counted them)."""
    from curation.steps.ingest.sources import _jsonable

    column = piece["column"]
    base = posixpath.dirname(table_uri)
    row = piece["first_row"]
    for batch in batches:
        images = batch.column(batch.schema.get_field_index(column))
        keep = [i for i, f in enumerate(batch.schema) if f.name != column and image_kind(f.type) is None]
        records = batch.select(keep).to_pylist()
        if pa.types.is_struct(images.type):
            data_col = images.field("bytes")
            path_col = images.field("path") if images.type.get_field_index("path") >= 0 else None
            valid = images.is_valid()
        else:
            data_col, path_col, valid = images, None, None
        for i, record in enumerate(records):
            index, row = row, row + 1
            if piece.get("img2dataset") and record.get("status") != "success":
                continue
            present = valid is None or valid[i].as_py()
            data = data_col[i].as_py() if present else None
            rel = path_col[i].as_py() if (path_col is not None and present) else None
            error = None
            if data is None and not rel:
                error = f"ingest: row {index} of {io.printable(table_uri)} has no image (column {column!r} is empty)"
            path = io.join(base, rel) if (data is None and rel) else None
            rec = _jsonable(record)
            if rel:
                rec["image_path"] = rel
            yield _Item(index, rec, data, path, error)


def expand_piece(cand: dict[str, Any], source: str, root: str) -> list[dict[str, Any]]:
    """Ray task body for one "embedded" candidate: ingested rows (`hashing.INGESTED_SCHEMA`),
    one per table row; the image bytes go to the piece's shard under `<root>/<source>/`."""
    from curation.steps.ingest.hashing import error_row

    table_uri = cand["uri"]
    piece = json.loads(cand["part"])
    fs, path = io.resolve(table_uri)
    shard = f"{shard_dir(root, source)}/{piece['shard']}.tar"
    try:
        existing = shard_index(shard)
        if existing is not None:  # a re-run: point at the complete shard an earlier run wrote
            rows = _rows(table_uri, fs, path, piece, source, existing.get)
            if rows is not None:
                return rows
            shard = f"{shard[:-len('.tar')]}-{hashlib.sha256(str(existing).encode()).hexdigest()[:8]}.tar"
        with ShardWriter(shard) as writer:
            return _rows(table_uri, fs, path, piece, source, lambda name, data: writer.add(name, data))
    except (OSError, pa.ArrowException, ValueError) as exc:
        # The table cannot be read (or the shard written): one error row for the piece, so the
        # failure is visible and the rest of the ingest goes on.
        where = f"{table_uri}#rows={piece['first_row']}-"
        return [error_row(where, source, f"ingest: cannot read embedded images of {io.printable(table_uri)} "
                                         f"(rows from {piece['first_row']}): {exc}")]


def _rows(table_uri: str, fs, path: str, piece: dict[str, Any], source: str, place) -> list[dict[str, Any]] | None:
    """Rows of the piece, each image placed by `place(name, data)` -> ShardMember (None when an
    existing shard lacks it: the whole piece is then written anew; returns None)."""
    from curation.steps.ingest.hashing import embedded_row

    rows = []
    for item in _items(table_uri, _batches(fs, path, piece), piece):
        member = None
        if item.error is None and item.data is not None:
            name = f"{hashlib.sha256(item.data).hexdigest()}.{sniff_extension(item.data)}"
            member = place(name, item.data)
            if member is None:
                return None
        rows.append(embedded_row(table_uri, item, member, source, piece.get("split")))
    return rows
