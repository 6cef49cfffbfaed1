"""PageRank of a directed edge list over nodes 0..n-1: scipy sparse power iteration (CPU) or
pylibcugraph (cuGraph's core library, GPU), with one convergence criterion for both.

Model (the same as networkx.pagerank and cuGraph): x = d·(Pᵀx + (Σ_dangling x)·p) + (1 − d)·p,
where P is the out-degree-normalised adjacency (duplicate edges count once, self-loops are kept,
as in a networkx DiGraph), dangling nodes (out-degree 0) hand their mass to the personalization
vector p (uniform by default), and x is a probability vector (sums to 1; a node's score is its
share of a random surfer's time, so scores scale like 1/n).

Convergence: iterate until ‖x_k − x_{k−1}‖₁ < tol. Because x sums to 1, that L1 change is a
fraction of the total mass whatever n is, and the distance to the fixed point is bounded by
d/(1 − d)·tol (each step contracts L1 distances by d). networkx instead stops when the change is
below n·tol: at n = 7M and its default tol = 1e-6 it accepts an L1 change of 7, i.e. it may stop
after the first iterations, far from the fixed point (field notes: on 1M nodes only 71% of the
true bottom-10% was found). cuGraph stops on the same L1 sum as here (`diff_sum < epsilon` in
cpp/src/link_analysis/pagerank_impl.cuh; the Python `tol` / pylibcugraph `epsilon` is passed
through unscaled), so `tol` maps to cuGraph's epsilon 1:1. An L1 change below ~1e-15 is
float64 rounding noise, hence tol must stay above that; cuGraph runs in the edge weights' dtype,
so weights are sent as float64 (in float32 a tol of 1e-9 could never be met).

Backends (`backend=`): "scipy"; "cugraph" (pylibcugraph importable and a CUDA GPU visible,
`graph.knn.registry.gpu_available`); "auto" = cugraph when usable, else scipy. "auto" is
resolved in the process that runs the call.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from graph.knn.registry import gpu_available

__all__ = ["BACKENDS", "PageRankResult", "cugraph_usable", "pagerank", "to_csr"]

BACKENDS = ("auto", "scipy", "cugraph")


@dataclass(frozen=True)
class PageRankResult:
    """scores: float64 [n], sums to 1 (empty for n = 0), in node order.
    iterations: power iterations run (None from cuGraph, which does not report it).
    converged: the last L1 change fell below tol within max_iter iterations.
    l1_change: ‖x_k − x_{k−1}‖₁ of the last iteration (scipy), or of one more iteration from
        the returned vector (cugraph, computed on the GPU) — the quantity compared with tol.
    backend: "scipy" or "cugraph", the one that ran.
    """

    scores: np.ndarray
    iterations: int | None
    converged: bool
    l1_change: float
    backend: str


def _check_edges(n: int, src, dst) -> tuple[np.ndarray, np.ndarray]:
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    src, dst = np.asarray(src), np.asarray(dst)
    if src.size == 0 and dst.size == 0:  # np.asarray([]) is float64: give empty lists an index dtype
        src = dst = np.zeros(0, np.int32)
    if src.ndim != 1 or src.shape != dst.shape:
        raise ValueError(f"src and dst must be 1-D and of equal length, got shapes {src.shape} and {dst.shape}")
    if src.size and not (np.issubdtype(src.dtype, np.integer) and np.issubdtype(dst.dtype, np.integer)):
        raise ValueError(f"src and dst must be integer node positions, got {src.dtype} and {dst.dtype}")
    for name, ends in (("src", src), ("dst", dst)):
        if ends.size and (int(ends.min()) < 0 or int(ends.max()) >= n):
            raise ValueError(f"{name} has node ids outside [0, {n}): min {int(ends.min())}, max {int(ends.max())}")
    return src, dst


def to_csr(n: int, src, dst) -> sparse.csr_matrix:
    """n×n adjacency, row = src, column = dst, float64 data 1.0: duplicate edges count once
    (as in a networkx DiGraph), self-loops are kept. to_csr(n, dst, src) is the transpose.
    Raises ValueError on negative n, unequal lengths or ids outside [0, n)."""
    src, dst = _check_edges(n, src, dst)
    # The COO -> CSR conversion sums duplicates; resetting the data to 1 drops them.
    a = sparse.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _personalization(n: int, personalization) -> np.ndarray | None:
    """None, or the personalization normalised to sum 1 (float64 [n])."""
    if personalization is None:
        return None
    p = np.asarray(personalization, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"personalization must have shape ({n},), got {p.shape}")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError("personalization values must be finite and non-negative")
    total = p.sum()
    if n and total <= 0:
        raise ValueError("personalization must have a positive sum")
    return p / total if n else p


def cugraph_usable() -> bool:
    """pylibcugraph importable and a CUDA GPU visible to this process."""
    return importlib.util.find_spec("pylibcugraph") is not None and gpu_available()


def pagerank(n: int, src, dst, *, damping: float = 0.85, tol: float = 1e-9, max_iter: int = 200,
             personalization=None, backend: str = "auto") -> PageRankResult:
    """PageRank of the directed graph (src[i] -> dst[i]) over nodes 0..n-1.

    damping: probability of following a link, in [0, 1).
    tol: stop when the L1 change of the whole score vector (which sums to 1) is below tol;
        a criterion whose meaning does not depend on n (see the module docstring). The L1
        distance to the exact fixed point is then at most damping/(1 − damping)·tol.
    max_iter: iteration cap; reaching it gives converged=False (no exception).
    personalization: optional non-negative weights [n] (normalised here): the teleport
        distribution and where dangling nodes' mass goes, as in networkx. Default uniform.
    backend: "auto", "scipy" or "cugraph".
    Returns scores in node order. n = 0 gives empty scores; a graph without edges gives the
    personalization (uniform by default). Raises ValueError on bad input.
    """
    src, dst = _check_edges(n, src, dst)
    n = int(n)
    if not (np.isfinite(damping) and 0.0 <= damping < 1.0):
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown PageRank backend {backend!r}; known: {', '.join(BACKENDS)}")
    p = _personalization(n, personalization)
    if backend == "auto":
        backend = "cugraph" if cugraph_usable() else "scipy"
    if n == 0:
        return PageRankResult(np.zeros(0), 0, True, 0.0, backend)
    if backend == "cugraph":
        if not cugraph_usable():
            raise RuntimeError("backend 'cugraph' needs pylibcugraph (the `gpu` extra) and a visible CUDA GPU")
        return _pagerank_cugraph(n, src, dst, damping, tol, int(max_iter), p)
    return _pagerank_scipy(n, src, dst, damping, tol, int(max_iter), p)


def _pagerank_scipy(n, src, dst, damping, tol, max_iter, p) -> PageRankResult:
    at = to_csr(n, dst, src)  # transposed: row v lists the nodes linking to v
    out_degree = np.bincount(at.indices, minlength=n)
    dangling = np.flatnonzero(out_degree == 0)
    inv_out = np.zeros(n)
    np.divide(1.0, out_degree, out=inv_out, where=out_degree > 0)
    teleport = np.full(n, 1.0 / n) if p is None else p
    x = np.full(n, 1.0 / n)
    change = np.inf
    for it in range(1, max_iter + 1):
        # Mass that leaves by teleport or from dangling nodes goes to p; the rest follows links.
        spread = damping * x[dangling].sum() + (1.0 - damping)
        x_new = at @ (x * inv_out)
        x_new *= damping
        x_new += spread * teleport
        change = float(np.abs(x_new - x).sum())
        x = x_new
        if change < tol:
            return PageRankResult(x, it, True, change, "scipy")
    return PageRankResult(x, max_iter, False, change, "scipy")


def _pagerank_cugraph(n, src, dst, damping, tol, max_iter, p) -> PageRankResult:
    import cupy as cp
    import pylibcugraph as plc

    if n >= 2**31:
        raise ValueError(f"the cuGraph backend takes int32 vertex ids; n = {n} is too large")
    # Drop duplicate edges on the GPU (cuGraph would otherwise count them as parallel edges).
    keys = cp.unique(cp.asarray(src, dtype=cp.int64) * n + cp.asarray(dst, dtype=cp.int64))
    s, d = (keys // n).astype(cp.int32), (keys % n).astype(cp.int32)
    del keys
    handle = plc.ResourceHandle()
    props = plc.GraphProperties(is_symmetric=False, is_multigraph=False)
    # float64 weights make cuGraph compute in double (its result type is the weight type);
    # vertices_array keeps nodes without edges in the graph, so the teleport share is 1/n.
    graph = plc.SGGraph(handle, props, s, d, weight_array=cp.ones(s.size, dtype=cp.float64),
                        vertices_array=cp.arange(n, dtype=cp.int32), store_transposed=True,
                        renumber=True, do_expensive_check=False)
    common = dict(resource_handle=handle, graph=graph, precomputed_vertex_out_weight_vertices=None,
                  precomputed_vertex_out_weight_sums=None, initial_guess_vertices=None,
                  initial_guess_values=None, alpha=float(damping), epsilon=float(tol),
                  max_iterations=max_iter, do_expensive_check=False, fail_on_nonconvergence=False)
    if p is None:
        vertices, values, converged = plc.pagerank(**common)
    else:
        nz = np.flatnonzero(p)
        vertices, values, converged = plc.personalized_pagerank(
            personalization_vertices=cp.asarray(nz, dtype=cp.int32),
            personalization_values=cp.asarray(p[nz], dtype=cp.float64), **common)
    del graph
    x = cp.zeros(n, dtype=cp.float64)
    x[vertices] = values
    # cuGraph does not report its last change: measure one more iteration from its result.
    out_degree = cp.bincount(s, minlength=n)
    inv_out = cp.where(out_degree > 0, 1.0 / cp.maximum(out_degree, 1), 0.0)
    teleport = cp.full(n, 1.0 / n) if p is None else cp.asarray(p)
    spread = damping * x[out_degree == 0].sum() + (1.0 - damping)
    x_next = damping * cp.bincount(d, weights=(x * inv_out)[s], minlength=n) + spread * teleport
    change = float(cp.abs(x_next - x).sum())
    return PageRankResult(cp.asnumpy(x), None, bool(converged), change, "cugraph")
