"""The `embeddings/<encoder>` tables: the one writer-side encoder and the one reader.

Delta Lake has neither float16 nor fixed-size lists, so a vector is stored as `binary`: `dim`
float16 values, little-endian, packed (dim*2 bytes per row; `dim` is in the field metadata,
see `curation.storage.schemas.embeddings_schema`). `encode_vectors` packs a float16 matrix
into such a column without a per-row loop; `decode_vectors` unpacks it with numpy straight
from the Arrow buffers (zero-copy for one chunk of float16), checking that every row holds
exactly dim*2 bytes.

    from curation.steps.vectors.embeddings import read_embeddings
    ids, vectors = read_embeddings(lake, "clip_b32", dtype=np.float32)   # pa.Array, (n, dim)

Dedup, search and the notebooks read vectors only through `read_embeddings`.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage.schemas import embeddings_schema, table_spec

F16 = np.dtype("<f2")  # the stored dtype: float16, little-endian
_SPEC = table_spec("embeddings/<encoder>")


class Embeddings(NamedTuple):
    """ids: the rows' ids (pa.Array of strings); vectors: (n, dim) in the requested dtype."""

    ids: pa.Array
    vectors: np.ndarray


def encoders_in(lake) -> list[str]:
    """Encoder names with an `embeddings/<encoder>` table in the lake, sorted."""
    return _SPEC.members(lake.tables())


def resolve_encoder(lake, encoder: str | None = None, *, setting: str = "encoder") -> str:
    """`encoder` if the lake has its table; with None, the only one. Errors say what to set."""
    have = encoders_in(lake)
    if not have:
        raise ValueError(f"lake {lake.uri} has no embeddings: run `curate score` with an encoder first")
    if encoder is None:
        if len(have) > 1:
            raise ValueError(f"several embeddings tables {have}: set {setting}")
        return have[0]
    if encoder not in have:
        raise ValueError(f"no embeddings/{encoder} in the lake (have {have})")
    return encoder


def read_embeddings(lake, encoder: str | None = None, *, ids: Iterable[str] | pa.Array | None = None,
                    version: int | None = None, dtype: np.dtype | type = np.float16) -> Embeddings:
    """Ids and vectors of `embeddings/<encoder>` (the lake's only embeddings table if None).

    ids: only these ids (in table order), None = all rows. version: a table version (time
    travel), None = the latest. dtype: float16 returns a read-only view of the Arrow buffer
    (zero-copy when the table is one chunk); float32 (what k-NN backends take) copies once.
    """
    encoder = resolve_encoder(lake, encoder)
    table = lake.read(_SPEC.instance(encoder), columns=["id", "vector"], version=version)
    if ids is not None:
        table = table.filter(pc.is_in(table["id"], value_set=pa.array(ids, pa.string()) if not isinstance(ids, pa.Array) else ids))
    dim = vector_dim(table.schema.field("vector"))
    vectors = decode_vectors(table["vector"], dim, dtype=dtype)
    return Embeddings(table["id"].combine_chunks(), vectors)


def vector_dim(vector_field: pa.Field) -> int | None:
    """The `dim` recorded in the vector field's metadata, or None (e.g. lost by a reader)."""
    meta = vector_field.metadata or {}
    raw = meta.get(b"dim")
    return int(raw) if raw else None


def decode_vectors(column: pa.Array | pa.ChunkedArray, dim: int | None = None, *,
                   dtype: np.dtype | type = np.float16) -> np.ndarray:
    """(n, dim) array from a binary vector column. `dim` None: taken from the first row; every
    row must then hold dim*2 bytes. Nulls are an error (the writer stores only real vectors)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    chunks = [c for c in chunks if len(c)]
    if dim is None:
        dim = _first_row_dim(chunks)
    if dim is None:  # no rows and no metadata
        return np.zeros((0, 0), dtype)
    parts = [_decode_chunk(c, dim) for c in chunks]
    out = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.zeros((0, dim), F16))
    return out if np.dtype(dtype) == F16 else out.astype(dtype)


def _first_row_dim(chunks: list[pa.Array]) -> int | None:
    if not chunks:
        return None
    first = chunks[0][0]
    if not first.is_valid:
        raise ValueError("embeddings: a null vector")
    nbytes = len(first.as_py())
    if nbytes == 0 or nbytes % 2:
        raise ValueError(f"embeddings: a vector of {nbytes} bytes is not float16 values")
    return nbytes // 2


def _decode_chunk(arr: pa.Array, dim: int) -> np.ndarray:
    t = arr.type
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        if pa.types.is_fixed_size_binary(t) or getattr(pa.types, "is_binary_view", lambda _: False)(t):
            arr = arr.cast(pa.large_binary())  # a copy; Delta readers may hand out views
        else:
            raise TypeError(f"embeddings: the vector column is {t}, expected binary (float16 packed)")
    if arr.null_count:
        raise ValueError(f"embeddings: {arr.null_count} null vector(s)")
    n = len(arr)
    width = 8 if pa.types.is_large_binary(arr.type) else 4
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=f"<i{width}", count=n + 1, offset=arr.offset * width)
    lengths = np.diff(offsets)
    bad = np.flatnonzero(lengths != 2 * dim)
    if bad.size:
        raise ValueError(f"embeddings: row {int(bad[0])} holds {int(lengths[bad[0]])} bytes, expected {2 * dim} "
                         f"(dim {dim} float16); {bad.size} such row(s)")
    return np.frombuffer(data_buf, dtype=F16, count=n * dim, offset=int(offsets[0])).reshape(n, dim)


def encode_vectors(vectors: np.ndarray, valid: np.ndarray | None = None) -> pa.BinaryArray:
    """Pack an (n, dim) matrix as float16 little-endian rows (one binary value per row).
    valid: optional bool mask; False rows are null (their bytes are still stored)."""
    v = np.ascontiguousarray(vectors, dtype=F16)
    if v.ndim != 2 or v.shape[1] < 1:
        raise ValueError(f"expected an (n, dim) matrix, got shape {v.shape}")
    n, dim = v.shape
    if v.nbytes >= 2**31:
        raise ValueError(f"{v.nbytes} bytes of vectors exceed one binary array (2 GiB): encode in batches")
    offsets = pa.py_buffer((np.arange(n + 1, dtype="<i4") * (2 * dim)).tobytes())
    validity = None
    if valid is not None and not np.all(valid):
        validity = pa.array(np.asarray(valid, bool)).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), n, [validity, offsets, pa.py_buffer(v.tobytes())])


def embeddings_rows(ids: pa.Array, encoder: str, vectors: np.ndarray) -> pa.Table:
    """An `embeddings/<encoder>` table of `ids` and their (n, dim) vectors, in the catalogue
    schema (with `dim` in the vector field's metadata)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    ids = ids.cast(pa.string()) if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
    packed = encode_vectors(vectors)
    if len(ids) != len(packed):
        raise ValueError(f"{len(ids)} ids for {len(packed)} vectors")
    return pa.Table.from_arrays([ids, pa.array([encoder] * len(ids), pa.string()), packed],
                                schema=embeddings_schema(np.shape(vectors)[1]))
