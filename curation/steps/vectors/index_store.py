"""The dedup k-NN index, persisted in the lake beside the embeddings it was built from.

    <lake>/_indexes/<encoder>/knn.json                which files hold the index, what it covers
    <lake>/_indexes/<encoder>/knn-<tag>.index         faiss's file (`KnnIndex.save`)
    <lake>/_indexes/<encoder>/knn-<tag>.index.ids.npy the int64 id of each index position
    <lake>/_indexes/<encoder>/ids-<tag>.parquet       the item `id` at each position

`knn.json`: {encoder, embeddings_version (the table version whose rows the index holds, no
more, no fewer), header (backend, effective parameters, dim, n), knn (the settings it was
built with: backend and knn_params), files, created_at, created_by}. It is written last, so a
crash while saving leaves the previous pointer and files; files of older saves are removed
after the pointer moves.

Why persisted (and not rebuilt from the embeddings each night): a rebuild reads every vector
(200k x 256 float16: ~1 s to read and convert, ~0.8 s to validate), retrains the IVF
quantizer and routes every vector again (~0.8 s): ~3.5 s of a 5 s incremental dedup at 200k,
growing with the lake, while a night adds ~1%. Loading the saved index reads one file; the
night's new vectors are searched against it and, exactly, against the vectors appended since
it was saved (`curation.steps.vectors.incremental.search_new`).

It is saved again only when those appended vectors exceed `RESAVE_FRACTION` of it (a save
writes every vector: at 1% a night, about every tenth night), or when it was rebuilt. The
embeddings table stays the source of truth: the index is used only when the table's history
since the version it names is appends alone (`Lake.added_since`), else it is rebuilt from the
table. The `_indexes` folder is outside every table (a leading '_'), not versioned, and
removing it only costs one rebuild. Backends that cannot be saved (cuVS) always rebuild.
Lakes on object stores go through a local temporary copy of the files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.storage.lake import Lake
from graph.knn import KnnIndex, load_index

__all__ = ["INDEX_DIR", "RESAVE_FRACTION", "StoredIndex", "index_dir", "load_stored", "save_stored"]

INDEX_DIR = "_indexes"
POINTER = "knn.json"
RESAVE_FRACTION = 0.1  # re-save once the vectors appended since the save exceed this share of it


@dataclass
class StoredIndex:
    """A loaded index: `index` (positions 0..n-1), `ids` (the id at each position) and the
    embeddings version it covers."""

    index: KnnIndex
    ids: pa.Array
    embeddings_version: int
    meta: dict[str, Any]


def index_dir(lake: Lake, encoder: str) -> str:
    return posixpath.join(lake.root, INDEX_DIR, encoder)


def _read_pointer(lake: Lake, encoder: str) -> dict | None:
    path = posixpath.join(index_dir(lake, encoder), POINTER)
    try:
        with lake.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None


@contextlib.contextmanager
def _local(lake: Lake, folder: str):
    """A local folder standing for the lake folder `folder`: itself on a local lake, else a
    temporary one (the caller copies in or out)."""
    if isinstance(lake.fs, pafs.LocalFileSystem):
        yield folder, False
    else:
        with tempfile.TemporaryDirectory(prefix="knn-index-") as tmp:
            yield tmp, True


def load_stored(lake: Lake, encoder: str, knn: dict[str, Any]) -> StoredIndex | str:
    """The saved index of `encoder` if it was built with the k-NN settings `knn` (backend
    setting and knn_params), else the reason it cannot be used (no index yet, other settings,
    unreadable files)."""
    try:
        meta = _read_pointer(lake, encoder)
    except ValueError as exc:
        return str(exc)
    if meta is None:
        return "no saved index yet"
    if meta.get("knn") != knn:
        return f"the saved index was built with other k-NN settings ({meta.get('knn')} != {knn})"
    folder = index_dir(lake, encoder)
    try:
        with _local(lake, folder) as (local, remote):
            names = [meta["index_file"], meta["index_file"] + ".ids.npy"]
            if remote:
                for name in names:
                    pafs.copy_files(posixpath.join(folder, name), posixpath.join(local, name),
                                    source_filesystem=lake.fs, destination_filesystem=pafs.LocalFileSystem())
            index = load_index(posixpath.join(local, meta["index_file"]), meta["header"])
        ids = pq.read_table(posixpath.join(folder, meta["ids_file"]), filesystem=lake.fs)["id"].combine_chunks()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # faiss raises RuntimeError on a bad file
        return f"the saved index is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if len(ids) != index.ntotal:
        return f"the saved index holds {index.ntotal} vectors for {len(ids)} ids"
    return StoredIndex(index, ids, int(meta["embeddings_version"]), meta)


def save_stored(lake: Lake, encoder: str, index: KnnIndex, ids: pa.Array, embeddings_version: int,
                knn: dict[str, Any], created_by: str) -> str | None:
    """Save `index` (positions = rows of `ids`) as covering `embeddings/<encoder>` at
    `embeddings_version`; None when saved, else why not (a backend that cannot be saved)."""
    folder = index_dir(lake, encoder)
    tag = uuid.uuid4().hex[:12]
    index_file, ids_file = f"knn-{tag}.index", f"ids-{tag}.parquet"
    lake.fs.create_dir(folder, recursive=True)
    with _local(lake, folder) as (local, remote):
        try:
            header = index.save(posixpath.join(local, index_file))
        except NotImplementedError as exc:
            return str(exc)
        if remote:
            for name in (index_file, index_file + ".ids.npy"):
                pafs.copy_files(posixpath.join(local, name), posixpath.join(folder, name),
                                source_filesystem=pafs.LocalFileSystem(), destination_filesystem=lake.fs)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), posixpath.join(folder, ids_file), filesystem=lake.fs)
    meta = {"encoder": encoder, "embeddings_version": int(embeddings_version), "header": header, "knn": knn,
            "index_file": index_file, "ids_file": ids_file,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "created_by": created_by}
    tmp = posixpath.join(folder, f".{POINTER}.{tag}")
    with lake.fs.open_output_stream(tmp) as f:
        f.write(json.dumps(meta, indent=1).encode())
    lake.fs.move(tmp, posixpath.join(folder, POINTER))
    for info in lake.fs.get_file_info(pafs.FileSelector(folder)):
        name = posixpath.basename(info.path)
        if name.startswith(("knn-", "ids-")) and not name.startswith((index_file, ids_file)):
            lake.fs.delete_file(info.path)
    return None
