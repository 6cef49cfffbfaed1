"""PageRank: agreement with networkx, the n-independent stopping rule, edge cases, cuGraph."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from graph.kg.pagerank import pagerank, to_csr
from graph.knn.registry import gpu_available


def random_graph(n: int, m: int, seed: int, dangling_frac: float = 0.2):
    """m random edges (duplicates and self-loops included); the last dangling_frac of the nodes
    have no out-links."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, int(n * (1 - dangling_frac)), m)
    dst = rng.integers(0, n, m)
    return src, dst


def nx_pagerank(n, src, dst, **kw) -> np.ndarray:
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    ref = nx.pagerank(g, **kw)
    return np.array([ref[i] for i in range(n)])


def bottom(scores: np.ndarray, q: float = 10) -> set[int]:
    return set(np.flatnonzero(scores < np.percentile(scores, q)).tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_networkx(seed):
    n = 150
    src, dst = random_graph(n, 600, seed)
    ref = nx_pagerank(n, src, dst, tol=1e-12)
    r = pagerank(n, src, dst, backend="scipy")
    assert r.backend == "scipy" and r.converged and r.l1_change < 1e-9 and r.iterations > 1
    assert r.scores.dtype == np.float64 and r.scores.shape == (n,)
    assert r.scores.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(r.scores - ref).sum() < 1e-9
    assert bottom(r.scores) == bottom(ref)


def test_personalization_matches_networkx():
    n = 120
    src, dst = random_graph(n, 500, 3)
    rng = np.random.default_rng(4)
    p = rng.random(n)
    p[rng.random(n) < 0.4] = 0.0
    for damping in (0.85, 0.9):
        # networkx sends dangling mass along the personalization too (dangling=None).
        ref = nx_pagerank(n, src, dst, alpha=damping, tol=1e-12, personalization=dict(enumerate(p.tolist())))
        r = pagerank(n, src, dst, damping=damping, personalization=p * 7.0)  # the scale does not matter
        assert r.converged and np.abs(r.scores - ref).sum() < 1e-9


def test_bottom_decile_equals_tight_networkx():
    n = 3000
    rng = np.random.default_rng(5)
    w = 1.0 / (np.arange(n) + 10.0) ** 0.8  # heavy-tailed in-degree, like links
    src = rng.integers(0, int(0.9 * n), 30_000)
    dst = rng.choice(n, 30_000, p=w / w.sum())
    ref = nx_pagerank(n, src, dst, tol=1e-13, max_iter=1000)
    r = pagerank(n, src, dst)
    assert bottom(r.scores) == bottom(ref) and len(bottom(ref)) == n // 10


@pytest.mark.parametrize("n", [100, 100_000])
def test_stopping_rule_does_not_depend_on_n(n):
    """The L1 distance to the fixed point after stopping is bounded by d/(1-d)·tol at any n
    (networkx's n·tol rule would loosen with n)."""
    src, dst = random_graph(n, 8 * n, seed=n)
    tol, d = 1e-6, 0.85
    r = pagerank(n, src, dst, tol=tol, damping=d, backend="scipy")
    exact = pagerank(n, src, dst, tol=1e-14, damping=d, max_iter=1000, backend="scipy")
    assert r.converged and r.l1_change < tol and exact.converged
    assert np.abs(r.scores - exact.scores).sum() <= d / (1 - d) * tol


def test_max_iter_reports_non_convergence():
    src, dst = random_graph(200, 800, 6)
    r = pagerank(200, src, dst, tol=1e-14, max_iter=3, backend="scipy")
    assert not r.converged and r.iterations == 3 and r.l1_change >= 1e-14
    assert r.scores.sum() == pytest.approx(1.0)


def test_empty_and_edgeless():
    r = pagerank(0, [], [], backend="scipy")
    assert r.scores.shape == (0,) and r.converged
    r = pagerank(4, [], [], backend="scipy")
    np.testing.assert_allclose(r.scores, np.full(4, 0.25))
    r = pagerank(4, [], [], personalization=[1, 0, 0, 3], backend="scipy")
    np.testing.assert_allclose(r.scores, [0.25, 0, 0, 0.75])


def test_to_csr_dedups_and_keeps_self_loops():
    a = to_csr(4, [0, 0, 1, 2, 2], [1, 1, 2, 2, 3])
    assert a.shape == (4, 4) and a.nnz == 4
    np.testing.assert_array_equal(a.toarray(), [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    # Duplicates do not double a link's weight in PageRank either.
    np.testing.assert_allclose(pagerank(4, [0, 0, 1], [1, 1, 2]).scores, pagerank(4, [0, 1], [1, 2]).scores)


def test_bad_input():
    with pytest.raises(ValueError, match="outside"):
        pagerank(3, [0, 3], [1, 1])
    with pytest.raises(ValueError, match="outside"):
        to_csr(3, [-1], [0])
    with pytest.raises(ValueError, match="non-negative"):
        pagerank(-1, [], [])
    with pytest.raises(ValueError, match="equal length"):
        pagerank(3, [0, 1], [1])
    for damping in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="damping"):
            pagerank(3, [0], [1], damping=damping)
    with pytest.raises(ValueError, match="tol"):
        pagerank(3, [0], [1], tol=0)
    with pytest.raises(ValueError, match="personalization"):
        pagerank(3, [0], [1], personalization=[0, 0, 0])
    with pytest.raises(ValueError, match="personalization"):
        pagerank(3, [0], [1], personalization=[1, -1, 1])
    with pytest.raises(ValueError, match="backend"):
        pagerank(3, [0], [1], backend="igraph")


def test_cugraph_matches_scipy():
    pytest.importorskip("pylibcugraph")
    if not gpu_available():
        pytest.skip("no CUDA GPU visible")
    n = 500
    src, dst = random_graph(n, 3000, 7)
    src = np.concatenate([src, src[:50]])  # duplicates must count once, as on the CPU
    dst = np.concatenate([dst, dst[:50]])
    cpu = pagerank(n + 3, src, dst, backend="scipy")  # 3 isolated nodes at the end
    gpu = pagerank(n + 3, src, dst, backend="cugraph")
    assert gpu.backend == "cugraph" and gpu.converged and gpu.l1_change < 1e-8
    assert np.abs(gpu.scores - cpu.scores).sum() < 1e-8
    p = np.random.default_rng(8).random(n + 3)
    p[:100] = 0
    cpu = pagerank(n + 3, src, dst, personalization=p, backend="scipy")
    gpu = pagerank(n + 3, src, dst, personalization=p, backend="cugraph")
    assert np.abs(gpu.scores - cpu.scores).sum() < 1e-8
