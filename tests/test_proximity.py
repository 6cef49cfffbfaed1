"""graph.proximity: k-NN lists -> undirected proximity edges, saturation, Arrow edge table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from graph.proximity import EDGE_SCHEMA, edges_table, proximity_edges, saturation_rate

NEG = -np.inf


def _knn(rows):
    """ids/sims arrays from [(ids, sims), ...] rows of equal length."""
    ids = np.array([r[0] for r in rows], np.int64)
    sims = np.array([r[1] for r in rows], np.float32)
    return ids, sims


def _brute_force(ids, sims, tau):
    """Reference: a dict over canonical pairs, max similarity of the sides that list the pair."""
    best: dict[tuple[int, int], float] = {}
    for i in range(ids.shape[0]):
        for j, s in zip(ids[i].tolist(), sims[i].tolist()):
            if j < 0 or j == i or not s >= np.float32(tau):
                continue
            key = (min(i, j), max(i, j))
            best[key] = max(best.get(key, -np.inf), s)
    keys = sorted(best)
    return (np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
            np.array([best[k] for k in keys], np.float32))


def test_symmetrised_deduplicated_and_filtered():
    ids, sims = _knn([
        ([0, 1, 2], [1.0, 0.95, 0.91]),   # row 0 sees 1 and 2
        ([1, 0, 3], [1.0, 0.95, 0.50]),   # row 1 sees 0 again (same pair) and 3 below tau
        ([2, -1, -1], [1.0, NEG, NEG]),   # row 2 does not list 0: (0, 2) seen from one side only
        ([3, 2, -1], [1.0, 0.92, NEG]),   # (2, 3) found only from the larger endpoint
    ])
    src, dst, sim = proximity_edges(ids, sims, 0.9)
    assert src.dtype == np.int64 and dst.dtype == np.int64 and sim.dtype == np.float32
    assert src.tolist() == [0, 0, 2]
    assert dst.tolist() == [1, 2, 3]
    np.testing.assert_allclose(sim, [0.95, 0.91, 0.92], rtol=1e-6)


def test_both_sides_keep_the_larger_similarity():
    ids, sims = _knn([([1], [0.95]), ([0], [0.96])])
    src, dst, sim = proximity_edges(ids, sims, 0.9)
    assert (src.tolist(), dst.tolist()) == ([0], [1])
    assert sim[0] == np.float32(0.96)


def test_tau_is_inclusive_in_the_similarity_dtype():
    ids, sims = _knn([([1, 2], [0.9, 0.8999]), ([0, 2], [0.9, 0.1]), ([0, 1], [0.8999, 0.1])])
    for tau in (0.9, np.float64(0.9), np.float32(0.9)):
        src, dst, _ = proximity_edges(ids, sims, tau)
        assert list(zip(src.tolist(), dst.tolist())) == [(0, 1)], tau
    assert proximity_edges(ids, sims, 0.95)[0].size == 0
    assert proximity_edges(ids, sims, 0.5)[0].size == 2  # (0,1), (0,2)


def test_padding_self_matches_and_nan_are_dropped():
    ids, sims = _knn([
        ([-1, 0, -1], [0.99, 1.0, 0.99]),   # padding slots carry a high similarity: still ignored
        ([1, 1, -1], [1.0, 1.0, np.nan]),   # self-match twice
        ([0, 1, 2], [np.nan, 0.97, 1.0]),   # NaN similarity never passes
    ])
    src, dst, sim = proximity_edges(ids, sims, 0.5)
    assert list(zip(src.tolist(), dst.tolist())) == [(1, 2)]
    assert sim.tolist() == [np.float32(0.97)]


def test_matches_brute_force_and_ignores_column_order():
    rng = np.random.default_rng(3)
    n, k = 60, 7
    ids = rng.integers(-1, n, size=(n, k))
    sims = rng.uniform(0.0, 1.0, size=(n, k)).astype(np.float32)
    sims = -np.sort(-sims, axis=1)
    ref = _brute_force(ids, sims, 0.6)
    got = proximity_edges(ids, sims, 0.6)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    perm = np.argsort(rng.random((n, k)), axis=1)  # shuffled neighbour order: same edge list
    shuffled = proximity_edges(np.take_along_axis(ids, perm, 1), np.take_along_axis(sims, perm, 1), 0.6)
    for a, b in zip(shuffled, got):
        np.testing.assert_array_equal(a, b)


def test_chunked_scan_gives_the_same_edges(monkeypatch):
    import graph.proximity as prox

    rng = np.random.default_rng(5)
    n, k = 500, 6
    ids = rng.integers(0, n, size=(n, k))
    sims = rng.uniform(0.5, 1.0, size=(n, k)).astype(np.float32)
    whole = proximity_edges(ids, sims, 0.8)
    monkeypatch.setattr(prox, "_CHUNK_ELEMENTS", 13)  # two rows per chunk, pairs across chunks
    chunked = proximity_edges(ids, sims, 0.8)
    for a, b in zip(chunked, whole):
        np.testing.assert_array_equal(a, b)


def test_empty_inputs_and_bad_ids():
    for ids, sims in [(np.zeros((0, 5), np.int64), np.zeros((0, 5), np.float32)),
                      (np.full((3, 2), -1, np.int64), np.zeros((3, 2), np.float32)),
                      (np.zeros((4, 0), np.int64), np.zeros((4, 0), np.float32))]:
        src, dst, sim = proximity_edges(ids, sims, 0.5)
        assert src.size == dst.size == sim.size == 0
        assert (src.dtype, dst.dtype, sim.dtype) == (np.int64, np.int64, np.float32)
    with pytest.raises(ValueError, match="row numbers"):
        proximity_edges(np.array([[1], [2]]), np.ones((2, 1), np.float32), 0.5)
    with pytest.raises(ValueError, match="same shape"):
        proximity_edges(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.float32), 0.5)


def test_saturation_rate_by_hand():
    sims = np.array([
        [1.0, 0.95, 0.92],   # k-th neighbour still >= 0.9: saturated
        [1.0, 0.91, 0.50],
        [1.0, 0.80, 0.70],
        [1.0, 0.99, np.nan],  # padded last slot: fewer than k candidates, not saturated
    ], np.float32)
    assert saturation_rate(sims, 0.9) == 0.25
    assert saturation_rate(sims, 0.4) == 0.75
    assert saturation_rate(sims, 0.99) == 0.0
    ids = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 0, -1]])
    padded = sims.copy()
    padded[3, 2] = 0.99  # a backend that pads with a high value: the id says it is padding
    assert saturation_rate(padded, 0.9, ids=ids) == 0.25
    assert saturation_rate(np.zeros((0, 3), np.float32), 0.9) == 0.0


def test_edges_table_schema_and_values():
    src, dst, sim = np.array([0, 2]), np.array([1, 3]), np.array([0.95, 0.91])
    table = edges_table(src, dst, sim)
    assert table.schema.equals(EDGE_SCHEMA)
    assert table.column_names == ["src", "dst", "sim"]
    assert table.schema.field("src").type == pa.int64()
    assert table.schema.field("sim").type == pa.float32()
    assert table["src"].to_pylist() == [0, 2] and table["dst"].to_pylist() == [1, 3]
    assert table["sim"].to_pylist() == pytest.approx([0.95, 0.91], rel=1e-6)
    empty = edges_table(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert empty.num_rows == 0 and empty.schema.equals(EDGE_SCHEMA)
    with pytest.raises(ValueError):
        edges_table(np.array([0, 1]), np.array([1]), np.array([0.9]))
