"""Connected components and Leiden communities of an undirected, weighted edge list.

Conventions shared by every function here:

* Nodes are row numbers 0..n-1; an edge list is `(src, dst[, weight])` in any orientation.
  Pairs are made canonical (src < dst), duplicates collapse to one edge (the largest weight),
  self-loops are dropped: the graph is simple and undirected.
* Weights are similarities (cosine of L2-normalised embeddings, as `graph.proximity` returns
  them): larger = more alike. Leiden maximises modularity, which needs positive weights, so a
  zero, negative or non-finite weight is an error (cut the graph at tau > 0).
* Labels are int64 row numbers: every node gets the smallest node index of its component /
  community. Labels are therefore deterministic, comparable across backends, and can index
  the input rows directly (the community's representative).

Leiden backends (`backend=`):
    "graspologic"  graspologic-native (MIT), CPU; deterministic for a given seed.
    "cugraph"      pylibcugraph (Apache-2.0) on the GPU; seeded, but GPU reductions make runs
                   only near-reproducible. Imported lazily.
    "igraph"       python-igraph (GPL-2.0-or-later), opt-in, not installed by this project.
    "leidenalg"    leidenalg (GPL-3.0-or-later), opt-in, not installed by this project.
    "auto"         cugraph when pylibcugraph imports and a GPU is visible *and* the graph has at
                   least AUTO_GPU_MIN_NODES nodes, else graspologic. The size floor exists
                   because a GPU graph build costs milliseconds, more than CPU Leiden on the
                   tiny components a dedup graph is mostly made of. "auto" is resolved in the
                   process that runs the call (a Ray worker without a GPU falls back to CPU);
                   pin a backend when results must not depend on placement.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

__all__ = [
    "BACKENDS",
    "AUTO_GPU_MIN_NODES",
    "canonical_labels",
    "connected_components",
    "leiden",
    "communities_by_component",
]

BACKENDS = ("auto", "graspologic", "cugraph", "igraph", "leidenalg")
AUTO_GPU_MIN_NODES = 20_000
# graspologic's default exploration in the refinement step (the `randomness` of the paper).
_RANDOMNESS = 0.001
# cuGraph's own bound on Leiden levels (its `max_iter` / `max_level`, default 100); graspologic's
# `iterations` (full Leiden passes seeded with the previous result) has no cuGraph counterpart.
_CUGRAPH_MAX_LEVEL = 100
_CUGRAPH_THETA = 1.0
_UINT64_MAX = (1 << 64) - 1


# ----------------------------------------------------------------------------- edge handling


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel a partition so each node carries the smallest node index of its group."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64, copy=False)


def _clean_edges(n: int, src: Any, dst: Any, weight: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical simple undirected edge list: lo < hi, unique pairs sorted by (lo, hi), no
    self-loops, float64 weights > 0 (max over duplicates; 1.0 when `weight` is None)."""
    src = np.asarray(src).reshape(-1)
    dst = np.asarray(dst).reshape(-1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same length, got {src.size} and {dst.size}")
    if src.size and not (np.issubdtype(src.dtype, np.integer) and np.issubdtype(dst.dtype, np.integer)):
        raise TypeError(f"src and dst must be integer row numbers, got {src.dtype} and {dst.dtype}")
    src = src.astype(np.int64, copy=False)
    dst = dst.astype(np.int64, copy=False)
    if weight is None:
        w = np.ones(src.size, np.float64)
    else:
        w = np.asarray(weight, dtype=np.float64).reshape(-1)
        if w.shape != src.shape:
            raise ValueError(f"weight must have one value per edge ({src.size}), got {w.size}")
    if src.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    lo_all = min(int(src.min()), int(dst.min()))
    hi_all = max(int(src.max()), int(dst.max()))
    if lo_all < 0 or hi_all >= n:
        raise ValueError(f"edge endpoints must be row numbers in [0, {n}), got [{lo_all}, {hi_all}]")
    keep = src != dst
    if not keep.all():
        src, dst, w = src[keep], dst[keep], w[keep]
    if not np.all(np.isfinite(w)) or (w.size and w.min() <= 0.0):
        raise ValueError("edge weights (similarities) must be finite and > 0 for modularity-based "
                         "Leiden; cut the proximity graph at tau > 0")
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    key = lo * np.int64(max(n, 1)) + hi
    order = np.argsort(key)  # ties only within one pair, reduced by max below: order-free
    key, w = key[order], w[order]
    if key.size:
        first = np.ones(key.size, bool)
        first[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(first)
        if starts.size != key.size:
            w = np.maximum.reduceat(w, starts)
            key = key[starts]
    return key // max(n, 1), key % max(n, 1), w


def _symmetric_csr(n: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of the symmetric adjacency (both directions stored), in the exact dtypes
    graspologic-native's `leiden_csr` takes: int64 indptr, int32 indices, float64 data."""
    if n >= 2**31:
        raise ValueError(f"graph too large for int32 node indices: {n} nodes")
    # Plain numpy rather than scipy.sparse: a dedup graph is mostly tiny components, and
    # scipy's constructor overhead (~100 us) would cost more than Leiden on them. Pairs are
    # unique, so sorting by (row, col) is all the CSR conversion there is to do.
    rows = np.concatenate([lo, hi])
    cols = np.concatenate([hi, lo])
    order = np.argsort(rows * np.int64(n) + cols)  # unique keys: any sort gives one order
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order].astype(np.int32), np.concatenate([w, w])[order].astype(np.float64, copy=False)


def connected_components(n: int, src: Any, dst: Any) -> np.ndarray:
    """Connected-component label per node 0..n-1 of the undirected graph with edges (src, dst).

    Edges may repeat, appear in both orientations or be self-loops. Isolated nodes are their
    own component. Label = the smallest node index in the component (int64[n]).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.zeros(0, np.int64)
    src = np.asarray(src, dtype=np.int64).reshape(-1)
    dst = np.asarray(dst, dtype=np.int64).reshape(-1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same length, got {src.size} and {dst.size}")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise ValueError(f"edge endpoints must be row numbers in [0, {n})")
    # int32 data: duplicate edges are summed by the COO->CSR conversion, and a narrow dtype
    # could wrap to an explicit 0. directed=False follows edges both ways, so no symmetrising.
    graph = sparse.csr_matrix((np.ones(src.size, np.int32), (src, dst)), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    return canonical_labels(labels)


# ----------------------------------------------------------------------------- backends


@functools.lru_cache(maxsize=None)
def _cugraph_usable() -> bool:
    """pylibcugraph importable and at least one CUDA device visible to this process."""
    if importlib.util.find_spec("pylibcugraph") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, CUDA_VISIBLE_DEVICES="" in a CPU Ray worker, ...
        return False


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown Leiden backend {backend!r}; known backends: {', '.join(BACKENDS)}")


def _resolve_backend(backend: str, n_nodes: int) -> str:
    _check_backend(backend)
    if backend != "auto":
        return backend
    return "cugraph" if n_nodes >= AUTO_GPU_MIN_NODES and _cugraph_usable() else "graspologic"


def _import_gpl(module: str, package: str, licence: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"Leiden backend needs `{package}` ({licence}), which this project does not install "
            f"because of its licence. Install it yourself to opt in (pip install {package}), or "
            f"use backend='graspologic' (MIT) or 'cugraph' (Apache-2.0, GPU)."
        ) from exc


def _membership_from_pairs(n: int, nodes: np.ndarray, comms: np.ndarray) -> np.ndarray:
    """Dense membership from (node, community) pairs; nodes a backend left out (isolated) get
    fresh singleton ids that cannot collide with the backend's."""
    out = np.full(n, -1, np.int64)
    out[nodes] = comms
    missing = out < 0
    if missing.any():
        base = int(comms.max()) + 1 if comms.size else 0
        out[missing] = base + np.arange(int(missing.sum()), dtype=np.int64)
    return out


def _leiden_graspologic(n, lo, hi, w, resolution, seed, iterations, cache):
    import graspologic_native as gn

    if hasattr(gn, "leiden_csr"):  # graspologic-native >= 1.3: zero-copy CSR, integer node ids
        if "csr" not in cache:  # shared by the resolutions of one component
            cache["csr"] = _symmetric_csr(n, lo, hi, w)
        indptr, indices, data = cache["csr"]
        _, parts = gn.leiden_csr(indptr, indices, data, n, resolution=resolution, randomness=_RANDOMNESS,
                                 iterations=iterations, use_modularity=True, seed=seed, trials=1)
        nodes = np.fromiter(parts.keys(), np.int64, count=len(parts))
    else:  # 1.2: list of (str, str, float) edges, each undirected edge once
        if "edges" not in cache:
            cache["edges"] = list(zip(map(str, lo.tolist()), map(str, hi.tolist()), w.tolist()))
        edges = cache["edges"]
        _, parts = gn.leiden(edges, resolution=resolution, randomness=_RANDOMNESS, iterations=iterations,
                             use_modularity=True, seed=seed, trials=1)
        nodes = np.fromiter((int(k) for k in parts.keys()), np.int64, count=len(parts))
    comms = np.fromiter(parts.values(), np.int64, count=len(parts))
    return _membership_from_pairs(n, nodes, comms)


def _leiden_cugraph(n, lo, hi, w, resolution, seed, iterations, cache):
    import cupy as cp
    import pylibcugraph as plc

    if "graph" not in cache:  # one device graph serves every resolution of this component
        vtype = np.int32 if n < 2**31 else np.int64
        # A symmetric (undirected) SGGraph stores both directions of every edge.
        src = cp.asarray(np.concatenate([lo, hi]).astype(vtype))
        dst = cp.asarray(np.concatenate([hi, lo]).astype(vtype))
        wt = cp.asarray(np.concatenate([w, w]).astype(np.float32))
        handle = plc.ResourceHandle()
        props = plc.GraphProperties(is_symmetric=True, is_multigraph=False)
        cache["graph"] = (handle, plc.SGGraph(handle, props, src, dst, weight_array=wt, store_transposed=False,
                                              renumber=True, do_expensive_check=False))
    handle, graph = cache["graph"]
    # Results come back as (vertex ids, cluster ids) device arrays in the caller's vertex ids;
    # vertices without edges do not appear (filled as singletons below).
    vertices, clusters, _modularity = plc.leiden(
        resource_handle=handle, random_state=seed, graph=graph, max_level=_CUGRAPH_MAX_LEVEL,
        resolution=resolution, theta=_CUGRAPH_THETA, do_expensive_check=False)
    return _membership_from_pairs(n, cp.asnumpy(vertices).astype(np.int64), cp.asnumpy(clusters).astype(np.int64))


def _igraph_graph(ig, n, lo, hi):
    return ig.Graph(n=n, edges=np.column_stack([lo, hi]).tolist(), directed=False)


def _leiden_igraph(n, lo, hi, w, resolution, seed, iterations, cache):
    import random

    ig = _import_gpl("igraph", "igraph", "GPL-2.0-or-later")
    g = _igraph_graph(ig, n, lo, hi)
    # igraph draws from a process-global RNG: seed it for this call, then restore the default.
    ig.set_random_number_generator(random.Random(seed))
    try:
        cl = g.community_leiden(objective_function="modularity", weights=w.tolist(), resolution=resolution,
                                n_iterations=iterations)
    finally:
        ig.set_random_number_generator(random)
    return np.asarray(cl.membership, np.int64)


def _leiden_leidenalg(n, lo, hi, w, resolution, seed, iterations, cache):
    ig = _import_gpl("igraph", "igraph", "GPL-2.0-or-later")
    la = _import_gpl("leidenalg", "leidenalg", "GPL-3.0-or-later")
    g = _igraph_graph(ig, n, lo, hi)
    # RBConfiguration = modularity with a resolution parameter, the same objective as the others.
    part = la.find_partition(g, la.RBConfigurationVertexPartition, weights=w.tolist(), n_iterations=iterations,
                             seed=seed % (2**31), resolution_parameter=resolution)
    return np.asarray(part.membership, np.int64)


_BACKEND_FNS: dict[str, Callable[..., np.ndarray]] = {
    "graspologic": _leiden_graspologic,
    "cugraph": _leiden_cugraph,
    "igraph": _leiden_igraph,
    "leidenalg": _leiden_leidenalg,
}


def _check_params(resolution: float, seed: int, iterations: int) -> None:
    if not (np.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be > 0, got {resolution}")
    if not 0 <= int(seed) <= _UINT64_MAX:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")


def _leiden_clean(n, lo, hi, w, resolution, seed, backend, iterations, cache=None) -> np.ndarray:
    """Leiden on an already-clean edge list; canonical labels. `cache` keeps a backend's
    input structures between calls on the same graph (one per resolution)."""
    if n == 0:
        return np.zeros(0, np.int64)
    if lo.size == 0:  # graspologic-native panics on an empty network; every node is alone
        return np.arange(n, dtype=np.int64)
    name = _resolve_backend(backend, n)
    raw = _BACKEND_FNS[name](n, lo, hi, w, float(resolution), int(seed), int(iterations),
                             {} if cache is None else cache.setdefault(name, {}))
    return canonical_labels(raw)


# ----------------------------------------------------------------------------- public API


def leiden(n: int, src: Any, dst: Any, weight: Any = None, resolution: float = 1.0, seed: int = 0,
           backend: str = "auto", iterations: int = 2) -> np.ndarray:
    """Leiden communities (modularity with a resolution parameter) of the undirected graph.

    n: number of nodes (row numbers 0..n-1; nodes without edges are singleton communities).
    weight: per-edge similarity (> 0), None = unweighted. resolution: gamma in the modularity
    formula; higher = more, smaller communities. seed: RNG seed (same input + seed + backend =
    same labels on CPU backends). iterations: full Leiden passes, each refining the last
    (graspologic / igraph / leidenalg; cuGraph runs to convergence up to its level bound).
    Returns int64[n]: the smallest node index of each node's community.
    """
    _check_backend(backend)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_params(resolution, seed, iterations)
    lo, hi, w = _clean_edges(n, src, dst, weight)
    return _leiden_clean(n, lo, hi, w, resolution, seed, backend, iterations)


def _leiden_component(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Leiden on one connected component at every resolution: the unit of work `map_fn` runs.

    args = (nodes int64[m] ascending global row numbers, lsrc int64[e], ldst int64[e] local
    indices into `nodes` with lsrc < ldst, weight float64[e], resolutions, seed, backend,
    iterations). Pure and picklable (module-level, numpy in / numpy out), so a Ray map can
    ship it to tasks. Returns (nodes, labels int64[m, len(resolutions)]) with global labels
    (smallest global row number per community); returning `nodes` makes the result
    independent of the order in which a parallel map hands results back.
    """
    nodes, lsrc, ldst, w, resolutions, seed, backend, iterations = args
    m = len(nodes)
    labels = np.empty((m, len(resolutions)), np.int64)
    cache: dict = {}
    for j, res in enumerate(resolutions):
        local = _leiden_clean(m, lsrc, ldst, w, res, seed, backend, iterations, cache)
        # `nodes` is ascending, so the smallest local index is also the smallest global one.
        labels[:, j] = nodes[local]
    return nodes, labels


def communities_by_component(n: int, src: Any, dst: Any, sim: Any, resolutions: Sequence[float], seed: int = 0,
                             backend: str = "auto", min_size: int = 2,
                             map_fn: Callable[[Callable, Iterable], Iterable] = map,
                             iterations: int = 2) -> np.ndarray:
    """Leiden communities computed per connected component, at one or more resolutions.

    Components are found first (modularity never joins nodes across components, so splitting
    there loses nothing and turns one big problem into many independent small ones). Each
    component with >= `min_size` nodes gets one Leiden run per resolution; smaller ones are a
    single community. `sim` is the edge weight (similarity > 0; None = unweighted).

    `map_fn(fn, iterable)` runs `_leiden_component` over the components; the default is the
    builtin `map`, a Ray layer can pass a map that fans components out to tasks (results may
    come back in any order). Several resolutions, e.g. [1.0, 0.5, 0.1], give a multi-level
    structure: lower resolution = coarser communities. The levels are independent runs, so
    they are usually but not strictly nested.

    Returns int64[n, len(resolutions)]: column j holds, per node, the smallest node index of
    its community at resolutions[j].
    """
    _check_backend(backend)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    resolutions = [float(r) for r in resolutions]
    for r in resolutions:
        _check_params(r, seed, iterations)
    out = np.empty((n, len(resolutions)), np.int64)
    if n == 0 or not resolutions:
        return out
    lo, hi, w = _clean_edges(n, src, dst, sim)
    comp = connected_components(n, lo, hi)
    # Every node starts as its component's community: final for components below min_size.
    out[:] = comp[:, None]
    if lo.size == 0:
        return out

    # Group nodes by component (stable: ascending row numbers inside a component) and give each
    # node its index within its component.
    node_order = np.argsort(comp, kind="stable")
    sorted_comp = comp[node_order]
    starts = np.flatnonzero(np.r_[True, sorted_comp[1:] != sorted_comp[:-1]])
    sizes = np.diff(np.r_[starts, n])
    local = np.empty(n, np.int64)
    local[node_order] = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)

    # Group edges by component the same way (stable: keeps the (lo, hi) order inside).
    ecomp = comp[lo]
    edge_order = np.argsort(ecomp, kind="stable")
    sorted_ecomp = ecomp[edge_order]
    big = np.flatnonzero(sizes >= max(int(min_size), 2))
    labels_big = sorted_comp[starts[big]]
    e_start = np.searchsorted(sorted_ecomp, labels_big, side="left")
    e_stop = np.searchsorted(sorted_ecomp, labels_big, side="right")

    def tasks() -> Iterable[tuple]:
        for c, a, b in zip(big.tolist(), e_start.tolist(), e_stop.tolist()):
            nodes = node_order[starts[c]:starts[c] + sizes[c]]
            sel = edge_order[a:b]
            yield (nodes, local[lo[sel]], local[hi[sel]], w[sel], resolutions, int(seed), backend, int(iterations))

    for nodes, labels in map_fn(_leiden_component, tasks()):
        out[nodes] = labels
    return out
