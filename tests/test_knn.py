"""graph.knn: validation, KnnResult algebra, faiss backends against a numpy reference, the
backend registry, and (where cuVS and a GPU exist) the cuVS backends against faiss."""

from __future__ import annotations

import numpy as np
import pytest

from graph.knn import (KnnResult, available_backends, choose_backend, cuvs_knn_graph,
                       gpu_knn_missing, knn_graph, make_index, recall_at_k, rerank_exact,
                       validate_vectors)


def clustered(n=2000, d=32, centers=20, spread=0.35, seed=0) -> np.ndarray:
    """Unit vectors around `centers` random directions (float32, deterministic)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_knn(queries, base, k, exclude_self=False) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64 numpy: (ids, sims) most similar first."""
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(sims, ids, axis=1)


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(scope="module")
def exact_graph(data):
    return knn_graph(data, 10, backend="faiss-flat")


# --- validation -------------------------------------------------------------------------

def test_validate_normalises_and_keeps_input():
    x = np.array([[3.0, 4.0], [0.0, -2.0]])
    before = x.copy()
    v = validate_vectors(x)
    assert v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(v, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-7)
    np.testing.assert_array_equal(x, before)
    assert validate_vectors(v) is v  # already valid: no copy
    # extreme magnitudes normalise without overflow / underflow
    tiny_huge = validate_vectors(np.array([[1e-30, 1e-30], [3e30, 4e30]], dtype=np.float32))
    np.testing.assert_allclose(np.linalg.norm(tiny_huge, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.array([1.0, 2.0]), "2-D"),
    (np.ones((2, 3, 4)), "2-D"),
    (np.ones((3, 0)), "dimension 0"),
    (np.array([["a", "b"]]), "numeric"),
    (np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0], [np.inf, 0.0]]), r"rows \[1, 3\].*NaN or inf"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), r"row \[1\].*zeros"),
    (np.array([[1e300, 1.0]]), "beyond float32"),
])
def test_validate_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_vectors(bad)


def test_validate_lists_first_bad_rows_of_many():
    x = np.ones((50, 4))
    x[5:40] = np.nan
    with pytest.raises(ValueError, match=r"\[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, \.\.\. \(35 rows in total\)\]"):
        validate_vectors(x)


def test_float16_input(data):
    half = data.astype(np.float16)
    g = knn_graph(half, 5, backend="faiss-flat")
    ids, sims = reference_knn(validate_vectors(half), validate_vectors(half), 5, exclude_self=True)
    assert (g.ids == ids).mean() > 0.99  # fp16 rounding can swap near-ties
    np.testing.assert_allclose(g.sims, sims, atol=1e-5)


# --- KnnResult --------------------------------------------------------------------------

def test_merge_takes_top_k_of_both():
    a = KnnResult([[0, 1, -1]], [[0.9, 0.5, -np.inf]])
    b = KnnResult([[7, 8, 9]], [[0.95, 0.6, 0.1]])
    m = a.merge(b)
    assert m.ids.tolist() == [[7, 0, 8]]
    np.testing.assert_allclose(m.sims, [[0.95, 0.9, 0.6]])
    assert a.merge(b, k=5).ids.tolist() == [[7, 0, 8, 1, 9]]
    empty = KnnResult.empty(1, 2)
    assert empty.merge(empty).ids.tolist() == [[-1, -1]]
    with pytest.raises(ValueError, match="queries"):
        a.merge(KnnResult.empty(2, 3))


def test_exclude_self_drops_only_own_id():
    r = KnnResult([[5, 0, 1], [2, 3, 4], [7, 7, -1]], [[1.0, 1.0, 0.5], [0.9, 0.8, 0.7], [1, 1, -np.inf]])
    out = r.exclude_self([0, 9, 7])
    # row 0: self (id 0) tied with a duplicate (id 5) - the duplicate stays;
    # row 1: self absent - the least similar column goes; row 2: only the first 7 goes.
    assert out.ids.tolist() == [[5, 1], [2, 3], [7, -1]]
    assert out.k == 2 and len(out) == 3


def test_result_validates_shapes():
    with pytest.raises(ValueError, match="shapes"):
        KnnResult(np.zeros((2, 3)), np.zeros((2, 2)))
    r = KnnResult(np.zeros((2, 3), dtype=np.int32), np.zeros((2, 3)))
    assert r.ids.dtype == np.int64 and r.sims.dtype == np.float32


def test_recall_at_k():
    exact = KnnResult([[1, 2, 3], [4, 5, -1]], np.zeros((2, 3)))
    approx = KnnResult([[3, 1, 9], [5, 4, 6]], np.zeros((2, 3)))
    assert recall_at_k(approx, exact) == pytest.approx(4 / 5)
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(KnnResult.empty(1, 2), KnnResult.empty(1, 2)) == 1.0


def test_rerank_exact_on_host(data):
    base, queries = data[:100], data[100:105]
    cand = np.array([[3, 1, 2, 200, -1]] * 5)  # 200 and -1 are not rows of base
    pos, sims = rerank_exact(queries, base, cand)
    assert (pos[:, -2:] == -1).all() and np.isneginf(sims[:, -2:]).all()
    want = np.einsum("nd,nkd->nk", queries, base[pos[:, :3]])
    np.testing.assert_allclose(sims[:, :3], want, rtol=1e-6)
    assert (np.diff(sims[:, :3], axis=1) <= 0).all()


# --- faiss backends ---------------------------------------------------------------------

def test_flat_equals_numpy_reference(data, exact_graph):
    ids, sims = reference_knn(data, data, 10, exclude_self=True)
    assert exact_graph.ids.shape == (len(data), 10)
    np.testing.assert_allclose(exact_graph.sims, sims, atol=1e-5)
    # ids equal except where two neighbours' sims tie to float32 precision
    differ = exact_graph.ids != ids
    assert differ.mean() < 0.001
    for row, col in np.argwhere(differ):
        got = float(data[row] @ data[exact_graph.ids[row, col]])
        assert got == pytest.approx(float(sims[row, col]), abs=1e-5)


def test_flat_search_external_queries_and_ids(data):
    index = make_index("faiss-flat", threads=1)
    index.add(data[:1000], ids=np.arange(1000) + 10_000)
    index.add(data[1000:1500])  # default ids continue the running row count
    res = index.search(data[1500:1600], 7)
    ids, sims = reference_knn(data[1500:1600], data[:1500], 7)
    expect = np.where(ids < 1000, ids + 10_000, ids)
    assert (res.ids == expect).mean() > 0.999
    np.testing.assert_allclose(res.sims, sims, atol=1e-5)
    assert index.ntotal == 1500 and index.params["backend"] == "faiss-flat"
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 5)), 3)


@pytest.mark.parametrize("backend, params", [
    ("faiss-ivf", {}),
    ("faiss-ivf", {"nlist": 16, "nprobe": 4}),
    ("faiss-hnsw", {}),
    ("faiss-hnsw", {"M": 16, "ef_construction": 40, "ef_search": 32}),
])
def test_approximate_recall(data, exact_graph, backend, params):
    g = knn_graph(data, 10, backend=backend, threads=2, **params)
    assert g.ids.shape == exact_graph.ids.shape
    assert recall_at_k(g, exact_graph) >= 0.95
    valid = g.ids >= 0
    np.testing.assert_allclose(g.sims[valid], np.einsum("nd,nd->n", data[np.nonzero(valid)[0]],
                                                       data[g.ids[valid]]), atol=1e-5)
    assert (g.ids != np.arange(len(data))[:, None]).all()


def test_ivf_params_are_recorded(data):
    index = make_index("faiss-ivf")
    index.add(data)
    p = index.params
    assert p["nlist"] == 2 and p["nprobe"] == 2 and p["train_size"] == 80 and p["batch_search"]


def test_ivf_self_search_reuses_the_routing_of_the_added_rows(data):
    index = make_index("faiss-ivf", nlist=16, nprobe=4)
    x = validate_vectors(data)
    index.add(x)
    assert index._routed is not None and index._routed[0]() is x and index._routed[1].shape == (len(x), 4)
    reused = index.search(x, 10)
    fresh = index.search(x.copy(), 10)  # another array: routed again by the quantizer
    assert (reused.ids == fresh.ids).mean() > 0.999


def test_ivf_list_by_list_batch_search_equals_per_query_search(data):
    # 2000 queries >= 4 x 16 lists: the batch path runs; it must give the per-query answer
    batched = knn_graph(data, 10, backend="faiss-ivf", nlist=16, nprobe=4)
    single = knn_graph(data, 10, backend="faiss-ivf", nlist=16, nprobe=4, batch_search=False)
    assert (batched.ids == single.ids).mean() > 0.999
    np.testing.assert_allclose(batched.sims, single.sims, atol=1e-5)


def test_unknown_backend_parameter_is_an_error():
    with pytest.raises(TypeError):
        make_index("faiss-hnsw", efsearch=10)
    with pytest.raises(ValueError, match="positive integer"):
        make_index("faiss-ivf", nprobe=0)


# --- knn_graph edge cases ----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_identical_duplicate_is_top_neighbour(data, backend):
    x = np.vstack([data[:300], data[42:43]])  # row 300 duplicates row 42
    g = knn_graph(x, 5, backend=backend)
    assert g.ids[42, 0] == 300 and g.ids[300, 0] == 42
    assert g.sims[42, 0] == pytest.approx(1.0, abs=1e-6)
    assert (g.ids != np.arange(len(x))[:, None]).all()


def test_empty_single_and_small_inputs():
    empty = knn_graph(np.zeros((0, 8)), 3)
    assert empty.ids.shape == (0, 3)
    one = knn_graph(np.ones((1, 8)), 3)
    assert one.ids.tolist() == [[-1, -1, -1]] and np.isneginf(one.sims).all()
    three = knn_graph(clustered(3, 8), 5)  # k > n - 1: two neighbours, then padding
    assert (three.ids[:, :2] >= 0).all() and (three.ids[:, 2:] == -1).all()
    assert np.isneginf(three.sims[:, 2:]).all()
    assert make_index("faiss-flat").search(np.ones((2, 4)), 2).ids.tolist() == [[-1, -1]] * 2
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(np.ones((3, 4)), 0)


def test_all_identical_rows():
    x = np.tile(np.array([[1.0, 2.0, 3.0]]), (6, 1))
    g = knn_graph(x, 3, backend="faiss-flat")
    assert (g.ids != np.arange(6)[:, None]).all()
    assert ((g.ids >= 0) & (g.ids < 6)).all()
    np.testing.assert_allclose(g.sims, 1.0, atol=1e-6)
    assert all(len(set(row)) == 3 for row in g.ids.tolist())


def test_knn_graph_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        knn_graph(np.ones(8), 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_graph(np.array([[1.0, np.nan], [1.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="zeros"):
        knn_graph(np.array([[1.0, 1.0], [0.0, 0.0]]), 1)


# --- registry ------------------------------------------------------------------------------

def test_choose_backend_rules():
    assert choose_backend(10, gpu=False) == "faiss-flat"
    assert choose_backend(50_000, gpu=False) == "faiss-flat"
    assert choose_backend(50_001, gpu=False) == "faiss-ivf"
    assert choose_backend(1_000_000, gpu=True) == "cuvs-brute"
    assert choose_backend(1_000_001, gpu=True) == "cuvs-cagra"
    assert choose_backend(10, gpu=False, override="faiss-hnsw") == "faiss-hnsw"
    assert choose_backend(10, gpu=True, override="cuvs-cagra") == "cuvs-cagra"  # trusted
    assert choose_backend(10, override="auto") in ("faiss-flat", "cuvs-brute")
    with pytest.raises(ValueError, match="known: faiss-flat, faiss-ivf, faiss-hnsw, cuvs-brute"):
        choose_backend(10, override="annoy")
    with pytest.raises(RuntimeError, match="GPU"):
        choose_backend(10, gpu=False, override="cuvs-brute")


def test_cuvs_unavailable_is_explained():
    missing = gpu_knn_missing()
    if missing is None:
        pytest.skip("cuVS and a GPU are present")
    assert "cuvs-brute" not in available_backends()
    assert {"faiss-flat", "faiss-ivf", "faiss-hnsw"} <= set(available_backends())
    assert choose_backend(10) == "faiss-flat"
    with pytest.raises(RuntimeError, match="cuVS|GPU"):
        choose_backend(10, override="cuvs-brute")
    with pytest.raises(RuntimeError, match="cuVS|GPU"):
        knn_graph(clustered(10, 4), 2, backend="cuvs-cagra")


# --- cuVS (GPU machines only) ----------------------------------------------------------------

@pytest.fixture
def cuvs_gpu():
    pytest.importorskip("cuvs")
    missing = gpu_knn_missing()
    if missing:
        pytest.skip(f"no GPU k-NN here: needs {missing}")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuvs_brute_matches_flat(cuvs_gpu, data, exact_graph, dtype):
    g = knn_graph(data, 10, backend="cuvs-brute", dtype=dtype, query_batch=700)
    assert recall_at_k(g, exact_graph) >= (0.999 if dtype == "float32" else 0.98)
    np.testing.assert_allclose(g.sims[:, 0], exact_graph.sims[:, 0], atol=1e-5 if dtype == "float32" else 2e-3)


def test_cuvs_cagra_recall_and_ids(cuvs_gpu, data, exact_graph):
    g = knn_graph(data, 10, backend="cuvs-cagra", graph_degree=32, intermediate_graph_degree=64)
    assert g.ids.dtype == np.int64 and recall_at_k(g, exact_graph) >= 0.95
    valid = g.ids >= 0
    sims = np.einsum("nd,nd->n", data[np.nonzero(valid)[0]], data[g.ids[valid]])
    np.testing.assert_allclose(g.sims[valid], sims, atol=1e-5)  # cosine, not a distance


@pytest.mark.parametrize("method, n_clusters", [("brute_force", 1), ("nn_descent", 1), ("nn_descent", 4)])
def test_cuvs_knn_graph(cuvs_gpu, method, n_clusters):
    x = clustered(5000, 32, seed=3)  # above the size where every method turns exact
    exact = knn_graph(x, 10, backend="faiss-flat")
    g = cuvs_knn_graph(x, 10, method=method, n_clusters=n_clusters)
    assert recall_at_k(g, exact) >= (0.999 if method == "brute_force" else 0.9)
    assert (g.ids != np.arange(len(x))[:, None]).all()
    np.testing.assert_allclose(g.sims[:, 0], np.einsum("nd,nd->n", x, x[g.ids[:, 0]]), atol=1e-5)
    assert cuvs_knn_graph(x[:1], 3).ids.tolist() == [[-1, -1, -1]]
    small = cuvs_knn_graph(x[:50], 5, method=method)  # exact below 2,048 rows
    assert recall_at_k(small, knn_graph(x[:50], 5, backend="faiss-flat")) == 1.0
