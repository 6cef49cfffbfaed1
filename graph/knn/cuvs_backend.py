"""GPU k-NN backends on NVIDIA cuVS: exact brute force, CAGRA, and whole k-NN graphs.

Nothing here imports cuVS, cupy or rmm at import time: `import graph.knn` works on machines
without a GPU, and constructing a cuVS index there raises RuntimeError naming what is missing.
cuVS API used (25.10 – 26.x): `brute_force.build(dataset, metric, resources=)` /
`brute_force.search(index, queries, k, resources=) -> (distances, neighbors int64)`,
`cagra.build(IndexParams, dataset, resources=)` / `cagra.search(SearchParams, index, queries,
k, resources=) -> (distances, neighbors uint32)`, and
`all_neighbors.build(dataset, k, AllNeighborsParams, indices=, distances=, resources=)`.

Similarity convention. We build with metric "inner_product" on unit vectors, so the quantity
ranked is our similarity. What cuVS *returns* as the distance for that metric is not one
thing across algorithms and releases: brute force returns the inner product itself (largest
first); CAGRA's and NN-descent's kernels rank by the negated inner product, and NN-descent
returned that negated value unconverted until cuVS fixed it (rapidsai/cuvs#849). So we do not
convert cuVS distances at all: every result is re-scored exactly, sim = <query, vector> in
float32 on the GPU (cupy) or on the host, and re-sorted (`base.rerank_exact`). This costs
n·k·d multiply-adds, negligible next to the search, and makes the sims comparable across
backends (and correct for fp16 indexes too, up to the fp16 rounding of the stored vectors).

Memory. Vectors are held on the GPU as cupy arrays when cupy is installed, else as
`pylibraft.common.device_ndarray`. This module never creates an RMM pool on import;
`enable_rmm_pool()` is for the process that owns the GPU (a Ray actor), never a driver.
"""

from __future__ import annotations

import importlib

import numpy as np

from graph.knn.base import (KnnIndex, KnnResult, check_k, check_positive_int, rerank_exact,
                            validate_vectors)

_INSTALL_HINT = "the `gpu` extra: pip install 't2i-curation[gpu]' (cuvs-cu12)"
_DTYPES = ("float32", "float16")


def require_cuvs():
    """Import and return the `cuvs` package, or raise RuntimeError saying how to get it."""
    try:
        return importlib.import_module("cuvs")
    except ImportError as exc:
        raise RuntimeError(f"the cuVS k-NN backends need the cuVS Python package, which is not "
                           f"installed ({exc}); install {_INSTALL_HINT}") from exc


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def enable_rmm_pool(initial_pool_size: int | None = None) -> None:
    """Route this process's GPU allocations (cuVS and cupy) through an RMM pool.

    Call once inside the process that owns the GPU (e.g. a Ray actor's __init__), never in a
    driver: a pool reserves GPU memory for the life of the process. initial_pool_size: bytes,
    default RMM's (half the free GPU memory); the pool grows on demand.
    """
    import rmm

    pool = rmm.mr.PoolMemoryResource(rmm.mr.CudaMemoryResource(), initial_pool_size=initial_pool_size)
    rmm.mr.set_current_device_resource(pool)
    cp = _cupy()
    if cp is not None:
        from rmm.allocators.cupy import rmm_cupy_allocator

        cp.cuda.set_allocator(rmm_cupy_allocator)


def _to_device(host: np.ndarray):
    cp = _cupy()
    if cp is not None:
        return cp.asarray(host)
    from pylibraft.common import device_ndarray

    return device_ndarray(np.ascontiguousarray(host))


def _device_empty(shape, dtype):
    cp = _cupy()
    if cp is not None:
        return cp.empty(shape, dtype=dtype)
    from pylibraft.common import device_ndarray

    return device_ndarray.empty(shape, dtype=dtype)


def _to_host(arr) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        return arr
    cp = _cupy()
    if cp is not None:
        return cp.asnumpy(cp.asarray(arr))
    return np.asarray(arr.copy_to_host())


def _rescore(q_host: np.ndarray, q_dev, base_host: np.ndarray, base_dev, neighbors) -> tuple:
    """Exact re-scoring of cuVS candidates (positions into base); host (ids, sims) arrays."""
    cp = _cupy()
    if cp is not None:
        pos, sims = rerank_exact(q_dev, base_dev, cp.asarray(neighbors).astype(cp.int64), xp=cp)
        return cp.asnumpy(pos), cp.asnumpy(sims)
    pos = _to_host(neighbors).astype(np.int64)  # uint32 "none" (0xFFFFFFFF) is >= N: invalid
    return rerank_exact(q_host, base_host, pos)


class _CuvsIndex(KnnIndex):
    """Shared plumbing: host staging of added vectors, a lazy (re)build on the next search,
    query batches, exact re-scoring and the position -> id map."""

    def __init__(self, dtype: str = "float32", query_batch: int = 65_536) -> None:
        super().__init__()
        require_cuvs()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.dtype = dtype
        self.query_batch = check_positive_int(query_batch, "query_batch")
        self._chunks: list[np.ndarray] = []  # host vectors, in `dtype`, in insertion order
        self._id_chunks: list[np.ndarray] = []
        self._built = False

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._chunks.append(x.astype(self.dtype, copy=False))
        self._id_chunks.append(ids)
        self._built = False  # rebuilt on the next search (both algorithms build from scratch)

    def _ensure_built(self) -> None:
        if self._built:
            return
        from cuvs.common import Resources

        self._host = np.ascontiguousarray(np.concatenate(self._chunks))
        self._ids = np.concatenate(self._id_chunks)
        self._chunks, self._id_chunks = [self._host], [self._ids]
        self._dataset = _to_device(self._host)
        self._resources = Resources()
        self._build()
        self._resources.sync()
        self._built = True

    def _search(self, q: np.ndarray, k: int) -> KnnResult:
        self._ensure_built()
        ids = np.empty((len(q), k), dtype=np.int64)
        sims = np.empty((len(q), k), dtype=np.float32)
        for start in range(0, len(q), self.query_batch):
            q_host = np.ascontiguousarray(q[start:start + self.query_batch].astype(self.dtype))
            q_dev = _to_device(q_host)
            neighbors = self._search_device(q_host, q_dev, k)
            self._resources.sync()
            pos, s = _rescore(q_host, q_dev, self._host, self._dataset, neighbors)
            ids[start:start + len(q_host)] = np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)
            sims[start:start + len(q_host)] = s
        return KnnResult(ids, sims)

    def _build(self) -> None:
        raise NotImplementedError

    def _search_device(self, q_host, q_dev, k: int):
        """Candidate positions (device array, n x k) for one query batch."""
        raise NotImplementedError


class CuvsBruteForceIndex(_CuvsIndex):
    """Exact search on the GPU (cuvs.neighbors.brute_force, metric inner_product).

    dtype: "float32" or "float16" storage and compute (fp16 halves GPU memory; sims are then
        exact for the fp16-rounded vectors). query_batch: queries per GPU call.
    """

    name = "cuvs-brute"

    def _build(self) -> None:
        from cuvs.neighbors import brute_force

        self._index = brute_force.build(self._dataset, metric="inner_product", resources=self._resources)

    def _search_device(self, q_host, q_dev, k):
        from cuvs.neighbors import brute_force

        _, neighbors = brute_force.search(self._index, q_dev, k, resources=self._resources)
        return neighbors

    @property
    def params(self) -> dict:
        return {"backend": self.name, "dtype": self.dtype, "query_batch": self.query_batch}


class CuvsCagraIndex(_CuvsIndex):
    """Graph-based approximate search on the GPU (cuvs.neighbors.cagra, inner product).

    graph_degree / intermediate_graph_degree: CAGRA graph degrees (clamped below the number
        of vectors); build_algo: "nn_descent" (fast) | "ivf_pq" | "iterative_cagra_search".
    itopk_size: search-time candidate list, raised to k when smaller (the main recall knob);
        search_width: graph nodes expanded per iteration.
    Neighbour ids come back from cuVS as uint32 row positions and are mapped to our int64 ids.
    With at most 2·graph_degree vectors a graph is pointless; search is exact brute force then.
    """

    name = "cuvs-cagra"

    def __init__(self, graph_degree: int = 64, intermediate_graph_degree: int = 128,
                 build_algo: str = "nn_descent", itopk_size: int = 64, search_width: int = 1,
                 dtype: str = "float32", query_batch: int = 65_536) -> None:
        super().__init__(dtype=dtype, query_batch=query_batch)
        if build_algo not in ("nn_descent", "ivf_pq", "iterative_cagra_search"):
            raise ValueError(f"unknown CAGRA build_algo {build_algo!r}")
        self.graph_degree = check_positive_int(graph_degree, "graph_degree")
        self.intermediate_graph_degree = max(
            check_positive_int(intermediate_graph_degree, "intermediate_graph_degree"), self.graph_degree)
        self.build_algo = build_algo
        self.itopk_size = check_positive_int(itopk_size, "itopk_size")
        self.search_width = check_positive_int(search_width, "search_width")

    def _build(self) -> None:
        n = len(self._host)
        self._exact = n <= 2 * self.graph_degree
        if self._exact:
            from cuvs.neighbors import brute_force

            self._index = brute_force.build(self._dataset, metric="inner_product", resources=self._resources)
            return
        from cuvs.neighbors import cagra

        params = cagra.IndexParams(metric="inner_product",
                                   intermediate_graph_degree=min(self.intermediate_graph_degree, n - 1),
                                   graph_degree=min(self.graph_degree, n - 1),
                                   build_algo=self.build_algo)
        self._index = cagra.build(params, self._dataset, resources=self._resources)

    def _search_device(self, q_host, q_dev, k):
        if self._exact:
            from cuvs.neighbors import brute_force

            return brute_force.search(self._index, q_dev, k, resources=self._resources)[1]
        from cuvs.neighbors import cagra

        params = cagra.SearchParams(itopk_size=max(self.itopk_size, k), search_width=self.search_width)
        _, neighbors = cagra.search(params, self._index, q_dev, k, resources=self._resources)
        return neighbors  # uint32 positions; 0xFFFFFFFF = none (treated as invalid by _rescore)

    @property
    def params(self) -> dict:
        return {"backend": self.name, "graph_degree": self.graph_degree,
                "intermediate_graph_degree": self.intermediate_graph_degree,
                "build_algo": self.build_algo, "itopk_size": self.itopk_size,
                "search_width": self.search_width, "dtype": self.dtype,
                "query_batch": self.query_batch}


_GRAPH_METHODS = ("nn_descent", "brute_force", "ivf_pq")
# Below this many rows the exact method is cheap, and approximate methods' degree parameters
# would exceed the data.
_SMALL_GRAPH = 2048


def cuvs_knn_graph(vectors, k: int, method: str = "nn_descent", *, n_clusters: int = 1,
                   overlap_factor: int | None = None, multi_gpu: bool = False,
                   max_iterations: int = 20, query_batch: int = 65_536) -> KnnResult:
    """Self-k-NN graph of `vectors` on the GPU, each row's own id excluded.

    Uses `cuvs.neighbors.all_neighbors.build` (cuVS >= 25.10) with `method` as its local
    algorithm: "nn_descent" (approximate, default), "brute_force" (exact), "ivf_pq"
    (approximate); inputs of at most 2,048 rows always use "brute_force". Where the module
    is missing (older cuVS), falls back to exact brute-force search in `query_batch` batches.
    n_clusters > 1: batched build for graphs larger than GPU memory; the data is partitioned
    into n_clusters overlapping batches (each point in `overlap_factor` of them, default 2) and
    stays on the host, as cuVS requires; multi_gpu spreads those batches over all visible GPUs
    (cuvs.common.MultiGpuResources). max_iterations: NN-descent iterations.
    The graph is built with metric "sqeuclidean", which every all-neighbors algorithm supports
    and which on unit vectors ranks exactly like inner product (|a-b|^2 = 2 - 2<a,b>); sims
    are re-scored exactly as inner products (module docstring).
    Returns KnnResult (n, k): ids are row numbers, sims cosine, -1 / -inf padding when n-1 < k.
    """
    x = validate_vectors(vectors)
    k = check_k(k)
    if method not in _GRAPH_METHODS:
        raise ValueError(f"unknown all-neighbors method {method!r}; known: {', '.join(_GRAPH_METHODS)}")
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    n = len(x)
    if n <= 1:
        return KnnResult.empty(n, k)
    require_cuvs()
    try:
        from cuvs.neighbors import all_neighbors
    except ImportError:  # cuVS before 25.10: exact search of every row against the index
        index = CuvsBruteForceIndex(query_batch=query_batch)
        index.add(x)
        return index.search(x, k + 1).exclude_self(np.arange(n))
    from cuvs.common import MultiGpuResources, Resources
    from cuvs.neighbors import nn_descent

    if n <= _SMALL_GRAPH:
        method, n_clusters = "brute_force", 1
    batched = n_clusters > 1 or multi_gpu
    kk = min(k + 1, n)  # + 1: the graph includes each point itself
    nn_params = None
    if method == "nn_descent":
        nn_params = nn_descent.IndexParams(metric="sqeuclidean", graph_degree=kk,
                                           intermediate_graph_degree=max(2 * kk, 32),
                                           max_iterations=max_iterations)
    if overlap_factor is None:
        overlap_factor = min(2, n_clusters - 1)
    params = all_neighbors.AllNeighborsParams(algo=method, overlap_factor=overlap_factor,
                                              n_clusters=n_clusters, metric="sqeuclidean",
                                              nn_descent_params=nn_params)
    resources = MultiGpuResources() if multi_gpu else Resources()
    if batched:
        # Host data (cuVS's requirement for batched builds) and host outputs where the
        # release accepts them (newer ones); 25.10 insists on device output buffers.
        indices = np.empty((n, kk), dtype=np.int64)
        distances = np.empty((n, kk), dtype=np.float32)
        try:
            all_neighbors.build(x, kk, params, indices=indices, distances=distances, resources=resources)
        except ValueError:
            indices = _device_empty((n, kk), np.int64)
            distances = _device_empty((n, kk), np.float32)
            all_neighbors.build(x, kk, params, indices=indices, distances=distances, resources=resources)
        getattr(resources, "sync", lambda: None)()
        # Re-score on the host: the whole set need not fit on one GPU.
        pos, sims = rerank_exact(x, x, _to_host(indices).astype(np.int64))
    else:
        x_dev = _to_device(x)
        indices = _device_empty((n, kk), np.int64)
        distances = _device_empty((n, kk), np.float32)
        all_neighbors.build(x_dev, kk, params, indices=indices, distances=distances, resources=resources)
        resources.sync()
        pos, sims = _rescore(x, x_dev, x, x_dev, indices)
    return KnnResult(pos, sims).padded(k + 1).exclude_self(np.arange(n))
