"""curation.steps.vectors.embeddings: float16 vectors packed as binary, one reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.steps.vectors.embeddings import (
    decode_vectors, embeddings_rows, encode_vectors, encoders_in, read_embeddings, resolve_encoder,
)
from curation.storage.schemas import embeddings_schema, table_spec


class FakeLake:
    """The two lake calls the reader uses (tables, read), over in-memory tables."""

    uri = "mem://lake"

    def __init__(self, tables: dict[str, pa.Table]):
        self._tables = tables
        self.reads: list[tuple] = []

    def tables(self) -> list[str]:
        return sorted(self._tables)

    def read(self, table, columns=None, version=None):
        self.reads.append((table, columns, version))
        t = self._tables[table]
        return t.select(columns) if columns else t


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_encode_decode_round_trip_is_exact_and_zero_copy():
    v = _vectors(7, 12)
    packed = encode_vectors(v)
    assert packed.type == pa.binary() and len(packed) == 7
    assert packed[0].as_py() == v[0].astype("<f2").tobytes()  # float16 little-endian, dim*2 bytes
    out = decode_vectors(packed)
    assert out.dtype == np.float16 and np.array_equal(out, v)
    assert not out.flags.writeable  # a view of the Arrow buffer, not a copy
    assert np.shares_memory(out, np.frombuffer(packed.buffers()[2], np.uint8))
    f32 = decode_vectors(packed, 12, dtype=np.float32)
    assert f32.dtype == np.float32 and np.array_equal(f32, v.astype(np.float32))


def test_decode_handles_slices_chunks_and_large_binary():
    v = _vectors(10, 4)
    packed = encode_vectors(v)
    assert np.array_equal(decode_vectors(packed.slice(3, 4)), v[3:7])
    chunked = pa.chunked_array([packed.slice(0, 6), packed.slice(6)])
    assert np.array_equal(decode_vectors(chunked, 4), v)
    assert np.array_equal(decode_vectors(packed.cast(pa.large_binary())), v)
    assert decode_vectors(pa.chunked_array([], pa.binary()), 4).shape == (0, 4)


def test_decode_rejects_wrong_lengths_nulls_and_types():
    good = encode_vectors(_vectors(3, 4))
    bad = pa.array([good[0].as_py(), b"\x00" * 6, good[2].as_py()], pa.binary())
    with pytest.raises(ValueError, match="row 1 holds 6 bytes, expected 8"):
        decode_vectors(bad, 4)
    with pytest.raises(ValueError, match="row 1 holds 6 bytes"):
        decode_vectors(bad)  # dim from the first row
    with pytest.raises(ValueError, match="expected 6"):
        decode_vectors(good, 3)  # the metadata's dim disagrees with the rows
    with pytest.raises(ValueError, match="null"):
        decode_vectors(encode_vectors(_vectors(3, 4), valid=np.array([True, False, True])), 4)
    with pytest.raises(TypeError, match="expected binary"):
        decode_vectors(pa.array([[1.0]], pa.list_(pa.float16())), 1)
    with pytest.raises(ValueError, match="float16"):
        decode_vectors(pa.array([b"\x00" * 3]))


def test_embeddings_rows_fit_the_catalogue():
    v = _vectors(3, 8)
    t = embeddings_rows(pa.array(["a", "b", "c"]), "clip", v)
    assert t.schema == embeddings_schema(8) and t.schema.field("vector").metadata[b"dim"] == b"8"
    table_spec("embeddings/clip").check(t.schema)
    assert t["encoder"].to_pylist() == ["clip"] * 3
    empty = embeddings_rows(pa.array([], pa.string()), "clip", np.zeros((0, 8), np.float16))
    assert empty.num_rows == 0 and empty.schema == embeddings_schema(8)


def test_read_embeddings_selects_encoder_ids_and_version():
    v = _vectors(5, 8)
    lake = FakeLake({"pool": pa.table({"id": list("abcde")}),
                     "embeddings/clip": embeddings_rows(pa.array(list("abcde")), "clip", v)})
    assert encoders_in(lake) == ["clip"] and resolve_encoder(lake) == "clip"
    ids, vectors = read_embeddings(lake)
    assert ids.to_pylist() == list("abcde") and np.array_equal(vectors, v)
    assert lake.reads[-1] == ("embeddings/clip", ["id", "vector"], None)
    ids, vectors = read_embeddings(lake, "clip", ids=["d", "b"], version=3, dtype=np.float32)
    assert ids.to_pylist() == ["b", "d"] and np.array_equal(vectors, v[[1, 3]].astype(np.float32))
    assert lake.reads[-1][2] == 3


def test_read_embeddings_without_dim_metadata():
    """A reader that drops field metadata still decodes: dim from the rows."""
    v = _vectors(4, 6)
    t = embeddings_rows(pa.array(list("abcd")), "e", v)
    t = t.replace_schema_metadata(None).cast(pa.schema([pa.field(f.name, f.type) for f in t.schema]))
    _, vectors = read_embeddings(FakeLake({"embeddings/e": t}))
    assert np.array_equal(vectors, v)


def test_encoder_errors_say_what_to_set():
    with pytest.raises(ValueError, match="no embeddings: run `curate score`"):
        resolve_encoder(FakeLake({"pool": pa.table({"id": ["a"]})}))
    two = FakeLake({f"embeddings/{n}": embeddings_rows(pa.array(["a"]), n, _vectors(1, 2)) for n in ("x", "y")})
    with pytest.raises(ValueError, match=r"several embeddings tables \['x', 'y'\]: set dedup.encoder"):
        resolve_encoder(two, setting="dedup.encoder")
    with pytest.raises(ValueError, match=r"no embeddings/z in the lake \(have \['x', 'y'\]\)"):
        read_embeddings(two, "z")


def test_read_embeddings_from_a_real_lake(tmp_path):
    from curation.storage.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    v = _vectors(6, 16)
    lake.write("embeddings/clip", embeddings_rows(pa.array(list("abcdef")), "clip", v), producer={"step": "test"})
    ids, vectors = read_embeddings(lake, "clip")
    order = np.argsort(ids.to_pylist())
    assert sorted(ids.to_pylist()) == list("abcdef") and np.array_equal(vectors[order], v)
