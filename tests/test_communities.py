"""graph.communities: connected components and Leiden per component (CPU; cuGraph when present)."""

from __future__ import annotations

import itertools
import pickle
import sys
import types

import numpy as np
import pytest

import graph.communities as gc
from graph.communities import (
    BACKENDS,
    _leiden_component,
    canonical_labels,
    communities_by_component,
    connected_components,
    leiden,
)
from graph.proximity import proximity_edges

CPU = "graspologic"


# ----------------------------------------------------------------------------- graph builders


def clique_chain(n_cliques=4, size=10, w_in=0.95, w_bridge=0.8):
    """`n_cliques` cliques of `size` nodes; clique c's last node joined to clique c+1's first by
    one weaker bridge edge. Connected as a whole; its dense cores are the cliques."""
    src, dst, w = [], [], []
    a, b = np.triu_indices(size, 1)
    for c in range(n_cliques):
        src += (a + c * size).tolist()
        dst += (b + c * size).tolist()
        w += [w_in] * a.size
        if c:
            src.append(c * size - 1)
            dst.append(c * size)
            w.append(w_bridge)
    return n_cliques * size, np.array(src), np.array(dst), np.array(w)


def chain_partition(n_cliques=4, size=10):
    return np.repeat(np.arange(n_cliques) * size, size)


def knn_lists(n, src, dst, w, k):
    """The k-NN result a search would return for this graph: neighbours by descending
    similarity, the row itself first (sim 1), -1 / -inf padding."""
    nbrs = [[(1.0, i)] for i in range(n)]
    for s, d, x in zip(src.tolist(), dst.tolist(), w.tolist()):
        nbrs[s].append((x, d))
        nbrs[d].append((x, s))
    ids = np.full((n, k), -1, np.int64)
    sims = np.full((n, k), -np.inf, np.float32)
    for i, lst in enumerate(nbrs):
        lst = sorted(lst, key=lambda t: (-t[0], t[1]))[:k]
        ids[i, :len(lst)] = [j for _, j in lst]
        sims[i, :len(lst)] = [x for x, _ in lst]
    return ids, sims


def planted_vectors(seed=0, n_random=200, group_sizes=(2, 2, 3, 3, 4, 5, 6), dim=48, noise=0.02):
    """Unit vectors: unrelated random ones plus groups of near-copies of a few bases.
    Returns (vectors, expected labels: smallest row of each planted group, own row otherwise)."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal(dim) for _ in range(n_random)]
    for size in group_sizes:
        base = rng.standard_normal(dim)
        base /= np.linalg.norm(base)
        for _ in range(size):
            rows.append(base + noise * rng.standard_normal(dim))
    x = np.array(rows, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(len(x))  # interleave groups and singletons
    x = x[perm]
    group = np.arange(len(x))
    start = n_random
    for size in group_sizes:
        members = np.flatnonzero((perm >= start) & (perm < start + size))
        group[members] = members.min()
        start += size
    return x, group


def exact_knn(x, k):
    sims = x @ x.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int64), np.take_along_axis(sims, ids, 1).astype(np.float32)


# ----------------------------------------------------------------------------- components


def test_connected_components_by_hand():
    # 0-1-2 path, 3-4-5 given in mixed orientation with a duplicate and a self-loop, 6 alone
    src = [0, 1, 4, 3, 5, 4]
    dst = [1, 2, 3, 3, 4, 5]
    labels = connected_components(7, np.array(src), np.array(dst))
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 0, 0, 3, 3, 3, 6]
    # labels are the smallest member whatever order the nodes are connected in
    assert connected_components(4, np.array([3, 2]), np.array([1, 3])).tolist() == [0, 1, 1, 1]


def test_connected_components_empty_and_isolated():
    assert connected_components(0, np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)
    assert connected_components(5, [], []).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        connected_components(3, np.array([0]), np.array([3]))


def test_canonical_labels():
    assert canonical_labels(np.array([7, 7, 3, 9, 3, 7])).tolist() == [0, 0, 2, 3, 2, 0]
    assert canonical_labels(np.zeros(0)).dtype == np.int64


# ----------------------------------------------------------------------------- Leiden


def test_chain_is_one_component_but_leiden_splits_it():
    n, src, dst, w = clique_chain()
    assert np.all(connected_components(n, src, dst) == 0)
    expected = chain_partition()
    np.testing.assert_array_equal(leiden(n, src, dst, w, backend=CPU), expected)
    got = communities_by_component(n, src, dst, w, [1.0], backend=CPU)
    assert got.shape == (n, 1) and got.dtype == np.int64
    np.testing.assert_array_equal(got[:, 0], expected)


def test_chain_through_knn_lists_and_tau():
    n, src, dst, w = clique_chain()
    ids, sims = knn_lists(n, src, dst, w, k=12)
    esrc, edst, esim = proximity_edges(ids, sims, 0.75)  # bridges (0.8) survive the cut
    assert esrc.size == src.size
    assert np.all(connected_components(n, esrc, edst) == 0)
    np.testing.assert_array_equal(communities_by_component(n, esrc, edst, esim, [1.0], backend=CPU)[:, 0],
                                  chain_partition())
    # above the bridge similarity the cliques are separate components already
    hsrc, hdst, _ = proximity_edges(ids, sims, 0.85)
    np.testing.assert_array_equal(connected_components(n, hsrc, hdst), chain_partition())


def test_planted_duplicate_groups_are_recovered():
    x, expected = planted_vectors()
    ids, sims = exact_knn(x, k=10)
    src, dst, sim = proximity_edges(ids, sims, 0.9)
    labels = communities_by_component(len(x), src, dst, sim, [1.0], backend=CPU)[:, 0]
    np.testing.assert_array_equal(labels, expected)


def test_empty_single_and_complete_graphs():
    none = np.zeros(0, np.int64)
    assert communities_by_component(0, none, none, np.zeros(0), [1.0, 0.5], backend=CPU).shape == (0, 2)
    assert leiden(0, none, none, backend=CPU).shape == (0,)
    lonely = communities_by_component(4, none, none, np.zeros(0), [1.0, 0.5], backend=CPU)
    np.testing.assert_array_equal(lonely, np.repeat(np.arange(4)[:, None], 2, axis=1))
    np.testing.assert_array_equal(leiden(4, none, none, backend=CPU), np.arange(4))
    np.testing.assert_array_equal(communities_by_component(1, none, none, None, [1.0], backend=CPU), [[0]])
    # all-identical items: every pair at similarity 1 -> one community at any sensible resolution
    a, b = np.triu_indices(12, 1)
    full = communities_by_component(12, a, b, np.ones(a.size), [1.0, 0.5, 0.1], backend=CPU)
    assert np.all(full == 0)
    assert communities_by_component(3, none, none, None, [], backend=CPU).shape == (3, 0)


def test_isolated_nodes_next_to_a_community():
    # nodes 0 and 4 have no edges; leiden() still returns one label per node
    src, dst = np.array([1, 1, 2]), np.array([2, 3, 3])
    np.testing.assert_array_equal(leiden(5, src, dst, backend=CPU), [0, 1, 1, 1, 4])


def test_resolutions_give_coarser_levels():
    n, src, dst, w = clique_chain(n_cliques=8)
    resolutions = [2.0, 1.0, 0.1, 0.01]  # fine -> coarse
    levels = communities_by_component(n, src, dst, w, resolutions, backend=CPU)
    counts = [np.unique(levels[:, j]).size for j in range(len(resolutions))]
    assert counts[1] == 8
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] < 8
    # nested here: every community of a finer level lies inside one community of the coarser one
    for fine, coarse in itertools.pairwise(range(len(resolutions))):
        for label in np.unique(levels[:, fine]):
            assert np.unique(levels[levels[:, fine] == label, coarse]).size == 1


def test_min_size_keeps_small_components_whole():
    # one pair: modularity keeps it together only while resolution < 2
    src, dst, w = np.array([0]), np.array([1]), np.array([0.9])
    assert communities_by_component(2, src, dst, w, [1.0], backend=CPU)[:, 0].tolist() == [0, 0]
    assert communities_by_component(2, src, dst, w, [5.0], backend=CPU)[:, 0].tolist() == [0, 1]
    kept = communities_by_component(2, src, dst, w, [5.0], backend=CPU, min_size=3)
    assert kept[:, 0].tolist() == [0, 0]


def test_deterministic_with_the_seed_and_labels_canonical():
    rng = np.random.default_rng(11)
    n, k = 1500, 8
    centres = rng.standard_normal((12, 16))
    x = centres[rng.integers(0, 12, n)] + 0.7 * rng.standard_normal((n, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    src, dst, sim = proximity_edges(*exact_knn(x, k), 0.5)
    runs = [communities_by_component(n, src, dst, sim, [1.0, 0.3], seed=7, backend=CPU) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(leiden(n, src, dst, sim, seed=7, backend=CPU),
                                  leiden(n, src, dst, sim, seed=7, backend=CPU))
    labels = runs[0]
    rows = np.arange(n)[:, None]
    assert np.all(labels <= rows) and np.all(np.take_along_axis(labels, labels, 0) == labels)
    assert np.unique(labels[:, 0]).size > 1


def test_edge_orientation_and_duplicates_do_not_change_the_graph():
    n, src, dst, w = clique_chain()
    once = leiden(n, src, dst, w, backend=CPU, seed=3)
    twice = leiden(n, np.r_[src, dst], np.r_[dst, src], np.r_[w, w], backend=CPU, seed=3)
    np.testing.assert_array_equal(once, twice)


def test_parameter_errors():
    n, src, dst, w = clique_chain()
    for backend in ("louvain", "GRASPOLOGIC", ""):
        with pytest.raises(ValueError, match="known backends: " + ", ".join(BACKENDS)):
            leiden(n, src, dst, w, backend=backend)
        with pytest.raises(ValueError, match="unknown Leiden backend"):
            communities_by_component(0, [], [], [], [1.0], backend=backend)
    with pytest.raises(ValueError, match="resolution"):
        communities_by_component(n, src, dst, w, [1.0, 0.0], backend=CPU)
    with pytest.raises(ValueError, match="> 0"):
        leiden(n, src, dst, -w, backend=CPU)
    with pytest.raises(ValueError, match="row numbers"):
        leiden(5, src, dst, w, backend=CPU)


# ----------------------------------------------------------------------------- map_fn hook


def test_map_fn_is_honoured_and_order_free():
    n1, s1, d1, w1 = clique_chain()
    # the chain (nodes 0..39), a separate triangle (40..42), a pair (43, 44) and a singleton (45)
    src = np.r_[s1, [40, 40, 41, 43]]
    dst = np.r_[d1, [41, 42, 42, 44]]
    w = np.r_[w1, [0.9, 0.9, 0.9, 0.95]]
    n = 46
    calls = []

    def counting_reversed_map(fn, items):
        assert fn is _leiden_component
        items = list(items)
        calls.append(len(items))
        return reversed([fn(x) for x in items])  # results out of order, as a parallel map may

    got = communities_by_component(n, src, dst, w, [1.0], backend=CPU, map_fn=counting_reversed_map)
    assert calls == [3]  # one work item per non-trivial component; the singleton needs none
    expected = np.r_[chain_partition(), [40, 40, 40, 43, 43, 45]]
    np.testing.assert_array_equal(got[:, 0], expected)
    np.testing.assert_array_equal(communities_by_component(n, src, dst, w, [1.0], backend=CPU), got)


def test_component_work_items_pickle():
    captured = []

    def capture(fn, items):
        items = list(items)
        captured.extend(items)
        return map(fn, items)

    n, src, dst, w = clique_chain()
    expected = communities_by_component(n, src, dst, w, [1.0, 0.1], backend=CPU, map_fn=capture)
    fn, args = pickle.loads(pickle.dumps((_leiden_component, captured[0])))  # what Ray would ship
    nodes, labels = fn(args)
    np.testing.assert_array_equal(nodes, np.arange(n))
    np.testing.assert_array_equal(labels, expected)


# ----------------------------------------------------------------------------- backends


def test_graspologic_without_leiden_csr(monkeypatch):
    """graspologic-native 1.2 has only the string edge-list `leiden`: same answer on the chain."""
    import graspologic_native

    monkeypatch.delattr(graspologic_native, "leiden_csr")
    n, src, dst, w = clique_chain()
    np.testing.assert_array_equal(leiden(n, src, dst, w, backend=CPU), chain_partition())
    np.testing.assert_array_equal(leiden(n + 2, src, dst, w, backend=CPU), np.r_[chain_partition(), n, n + 1])


def test_auto_uses_the_gpu_only_when_usable_and_worth_it(monkeypatch):
    monkeypatch.setattr(gc, "_cugraph_usable", lambda: False)
    assert gc._resolve_backend("auto", 10**7) == "graspologic"
    monkeypatch.setattr(gc, "_cugraph_usable", lambda: True)
    assert gc._resolve_backend("auto", gc.AUTO_GPU_MIN_NODES) == "cugraph"
    assert gc._resolve_backend("auto", 40) == "graspologic"
    assert gc._resolve_backend("igraph", 40) == "igraph"


@pytest.mark.parametrize("backend,module", [("igraph", "igraph"), ("leidenalg", "leidenalg")])
def test_gpl_backends_are_opt_in(backend, module):
    n, src, dst, w = clique_chain()
    try:
        __import__(module)
        __import__("igraph")
    except ImportError:
        with pytest.raises(ImportError, match="GPL"):
            leiden(n, src, dst, w, backend=backend)
    else:  # installed by the user: must agree with the MIT backend on the chain
        np.testing.assert_array_equal(leiden(n, src, dst, w, backend=backend), chain_partition())


class _FakeDeviceArray(np.ndarray):
    """Marks arrays that went through the fake cupy.asarray (i.e. were 'on the device')."""


def _fake_gpu_modules(seen):
    """Minimal cupy + pylibcugraph stand-ins that run the CPU backend behind cuGraph's calling
    convention, to check the glue (symmetric COO, dtypes, vertex/cluster mapping) without a GPU."""
    cupy = types.ModuleType("cupy")
    cupy.asarray = lambda a: np.asarray(a).view(_FakeDeviceArray)
    cupy.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    plc = types.ModuleType("pylibcugraph")
    plc.ResourceHandle = lambda: "handle"
    plc.GraphProperties = lambda is_symmetric, is_multigraph: ("props", is_symmetric, is_multigraph)

    class SGGraph:
        def __init__(self, handle, props, src, dst, weight_array=None, store_transposed=False, renumber=True,
                     do_expensive_check=False):
            assert all(isinstance(a, _FakeDeviceArray) for a in (src, dst, weight_array))
            seen.update(props=props, src=src, dst=dst, weight=weight_array, renumber=renumber)
            self.edges = (np.asarray(src), np.asarray(dst), np.asarray(weight_array))

    def fake_leiden(resource_handle, random_state, graph, max_level, resolution, theta, do_expensive_check):
        seen.update(random_state=random_state, max_level=max_level, resolution=resolution, theta=theta)
        s, d, w = graph.edges
        keep = s < d
        verts = np.unique(np.r_[s, d])
        n = int(verts.max()) + 1
        labels = gc._leiden_graspologic(n, s[keep].astype(np.int64), d[keep].astype(np.int64),
                                        w[keep].astype(np.float64), resolution, random_state, 2, {})
        # cuGraph numbers clusters its own way and lists only vertices that have edges
        clusters = (labels[verts] * 7 + 3).astype(np.int32)
        return cupy.asarray(verts[::-1].copy()), cupy.asarray(clusters[::-1].copy()), 0.5

    plc.SGGraph = SGGraph
    plc.leiden = fake_leiden
    return cupy, plc


def test_cugraph_glue_with_fake_modules(monkeypatch):
    seen = {}
    cupy, plc = _fake_gpu_modules(seen)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "pylibcugraph", plc)
    n, src, dst, w = clique_chain()
    got = leiden(n + 1, src, dst, w, seed=5, resolution=1.0, backend="cugraph")  # node n is isolated
    np.testing.assert_array_equal(got, np.r_[chain_partition(), n])
    assert seen["props"] == ("props", True, False)  # undirected: symmetric, both directions stored
    assert seen["src"].size == 2 * src.size and seen["src"].dtype == np.int32
    assert seen["weight"].dtype == np.float32
    assert seen["random_state"] == 5 and seen["resolution"] == 1.0
    levels = communities_by_component(n, src, dst, w, [1.0, 0.01], backend="cugraph")
    np.testing.assert_array_equal(levels, communities_by_component(n, src, dst, w, [1.0, 0.01], backend=CPU))


def _real_cugraph_or_skip():
    pytest.importorskip("pylibcugraph", reason="cuGraph not installed (GPU extra)")
    gc._cugraph_usable.cache_clear()
    if not gc._cugraph_usable():
        pytest.skip("no CUDA device visible")


def test_cugraph_matches_cpu_on_small_graphs():
    _real_cugraph_or_skip()
    n, src, dst, w = clique_chain()
    np.testing.assert_array_equal(leiden(n, src, dst, w, backend="cugraph"), chain_partition())
    x, expected = planted_vectors()
    esrc, edst, esim = proximity_edges(*exact_knn(x, 10), 0.9)
    gpu = communities_by_component(len(x), esrc, edst, esim, [1.0], backend="cugraph")
    np.testing.assert_array_equal(gpu[:, 0], expected)
