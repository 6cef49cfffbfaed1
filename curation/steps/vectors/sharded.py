"""k-NN over vector sets split across Ray actors: one index per shard, queries fanned out.

The vectors are cut into `shards` contiguous row ranges; each range is put into the object
store once and handed to its own `ShardIndex` actor, which builds a `graph.knn` index with
ids offset to global row numbers. Queries go out in batches: each batch is put into the
object store once, every shard searches it, and the driver merges the shards' top-k lists
(`KnnResult.merge`). Because each shard returns its own exact top-k, the merge of exact shards
is the exact global top-k: with backend "faiss-flat" the result equals a single-index search
(up to the order of exactly tied neighbours).

All shard actors must be alive at once (every batch visits every shard), so each asks for
cluster CPUs / shards CPUs (fractional when shards outnumber CPUs) and, for the cuVS
backends, one whole GPU; faiss inside an actor uses that many threads (Ray sets
OMP_NUM_THREADS=1 in workers, so it is set explicitly).
"""

from __future__ import annotations

import collections
import logging

import numpy as np

from graph.knn import (GPU_BACKENDS, KnnResult, check_k, check_positive_int, choose_backend,
                       make_index, validate_vectors)

log = logging.getLogger(__name__)


class ShardIndex:
    """One shard's index (run as a Ray actor by `ShardedIndex`; plain class for tests).

    vectors: the shard's rows (unit vectors); offset: global row number of its first row.
    backend / params: as for `graph.knn.make_index`; threads: faiss threads (faiss only).
    rmm_pool: for cuVS backends, give this process an RMM pool before building.
    """

    def __init__(self, vectors: np.ndarray, offset: int, backend: str, params: dict,
                 threads: int = 1, rmm_pool: bool = False) -> None:
        params = dict(params)
        if backend.startswith("faiss"):
            params.setdefault("threads", threads)
        if backend in GPU_BACKENDS and rmm_pool:
            from graph.knn import enable_rmm_pool

            enable_rmm_pool()
        self.backend = backend
        self.index = make_index(backend, **params)
        self.index.add(vectors, ids=np.arange(offset, offset + len(vectors), dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> KnnResult:
        """Top-k of this shard for each query (global row-number ids)."""
        return self.index.search(queries, k)

    def info(self) -> dict:
        """Rows held and the index's effective parameters (also: 'the build finished')."""
        return {"ntotal": self.index.ntotal, "params": self.index.params}


def _ray():
    import ray

    if not ray.is_initialized():
        raise RuntimeError("sharded k-NN needs a running Ray session (curation.runtime.init_ray)")
    return ray


def _probe_gpu_knn() -> bool:
    from graph.knn import gpu_knn_missing

    return gpu_knn_missing() is None


def _cluster_gpu_knn(ray) -> bool:
    """Whether the cluster can run cuVS: it has GPUs and a GPU worker can import cuVS.

    Asked of a GPU worker, not of this process: the driver often has no GPU of its own.
    """
    if ray.cluster_resources().get("GPU", 0) < 1:
        return False
    probe = ray.remote(num_cpus=0, num_gpus=1)(_probe_gpu_knn)
    return bool(ray.get(probe.remote()))


class ShardedIndex:
    """A vector set split over `shards` Ray actors, searchable with exact merging.

    vectors: (n, dim), validated and L2-normalised; row i gets id i.
    shards: number of actors (at most n). backend: a `graph.knn` backend name or "auto"
    (chosen for the total n, with the cluster's GPUs in mind); params: the backend's parameters.
    cpus_per_shard: Ray CPUs per actor; default cluster CPUs / shards (fractional when
    shards > CPUs, so all shards fit at once). rmm_pool: RMM pool inside cuVS actors.
    Use as a context manager (or call `close()`) to release the actors.
    """

    def __init__(self, vectors, shards: int, backend: str = "auto", *,
                 cpus_per_shard: float | None = None, rmm_pool: bool = True, **params) -> None:
        ray = _ray()
        x = validate_vectors(vectors)
        n = len(x)
        shards = check_positive_int(shards, "shards")
        if n == 0:
            raise ValueError("ShardedIndex: no vectors to index")
        shards = min(shards, n)
        gpu = _cluster_gpu_knn(ray) if backend in ("auto", *GPU_BACKENDS) else False
        if backend in GPU_BACKENDS and not gpu:
            raise RuntimeError(f"k-NN backend {backend!r} needs a GPU worker with cuVS installed; "
                               f"this Ray cluster has {int(ray.cluster_resources().get('GPU', 0))} "
                               f"GPUs and none of them can run cuVS")
        self.backend = choose_backend(n, gpu=gpu, override=backend)
        resources = ray.cluster_resources()
        num_gpus = 0
        if self.backend in GPU_BACKENDS:
            num_gpus = 1
            if resources.get("GPU", 0) < shards:
                raise ValueError(f"{self.backend} needs one GPU per shard: shards={shards} but "
                                 f"the cluster has {int(resources.get('GPU', 0))} GPUs")
        if cpus_per_shard is None:
            total = max(1.0, float(resources.get("CPU", 1)))
            cpus_per_shard = float(max(1, int(total // shards))) if total >= shards else total / shards
        threads = max(1, int(cpus_per_shard))
        self.dim = x.shape[1]
        self.bounds = np.linspace(0, n, shards + 1).astype(np.int64)
        remote = ray.remote(ShardIndex).options(num_cpus=cpus_per_shard, num_gpus=num_gpus)
        self._actors = []
        try:
            for s in range(shards):
                lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
                # One object-store copy per shard slice; the actor copies it into its index,
                # and the ref is dropped here so the object store can free it after the build.
                ref = ray.put(x[lo:hi])
                self._actors.append(remote.remote(ref, lo, self.backend, params, threads, rmm_pool))
                del ref
            self.shard_info = ray.get([a.info.remote() for a in self._actors])  # build errors surface here
        except BaseException:
            self.close()
            raise
        log.info("sharded k-NN: %d rows in %d shards, backend %s", n, shards, self.backend)

    @property
    def ntotal(self) -> int:
        return int(self.bounds[-1])

    def search(self, queries, k: int, query_batch: int = 65_536, exclude_self: bool = False) -> KnnResult:
        """Top-k over all shards for each query row; ids are global row numbers.

        query_batch: query rows per round trip (each batch is one object-store put and one
        call per shard; two batches are kept in flight so the shards do not wait on the driver).
        exclude_self: the queries are the indexed rows themselves (query i = row i): search
        k+1 and drop each row's own id (see `KnnResult.exclude_self`).
        """
        ray = _ray()
        k = check_k(k)
        query_batch = check_positive_int(query_batch, "query_batch")
        q = validate_vectors(queries, name="queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, index has {self.dim}")
        if exclude_self and len(q) != self.ntotal:
            raise ValueError("exclude_self needs the queries to be the indexed rows")
        kk = k + 1 if exclude_self else k
        out = KnnResult.empty(len(q), k)
        pending: collections.deque = collections.deque()

        def collect() -> None:
            lo, hi, futures = pending.popleft()
            parts = ray.get(futures)
            merged = parts[0]
            for part in parts[1:]:
                merged = merged.merge(part, kk)
            if exclude_self:
                merged = merged.exclude_self(np.arange(lo, hi))
            out.ids[lo:hi], out.sims[lo:hi] = merged.ids, merged.sims

        for lo in range(0, len(q), query_batch):
            hi = min(lo + query_batch, len(q))
            ref = ray.put(q[lo:hi])  # once per batch, read by every shard
            pending.append((lo, hi, [a.search.remote(ref, kk) for a in self._actors]))
            del ref
            if len(pending) >= 2:
                collect()
        while pending:
            collect()
        return out

    def close(self) -> None:
        """Kill the shard actors (their indexes go with them)."""
        if not self._actors:
            return
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sharded_knn_graph(vectors: np.ndarray, k: int, shards: int, backend: str = "auto",
                      query_batch: int = 65_536, *, cpus_per_shard: float | None = None,
                      **params) -> KnnResult:
    """Self-k-NN graph of `vectors` computed over `shards` Ray actors.

    Same contract as `graph.knn.knn_graph` (ids = row numbers, own row excluded, identical
    duplicates kept, -1 / -inf padding when n-1 < k); with backend "faiss-flat" the result
    equals `knn_graph(vectors, k, "faiss-flat")`. params go to the backend.
    """
    x = validate_vectors(vectors)
    k = check_k(k)
    if len(x) == 0:
        return KnnResult.empty(0, k)
    with ShardedIndex(x, shards, backend, cpus_per_shard=cpus_per_shard, **params) as index:
        return index.search(x, k, query_batch=query_batch, exclude_self=True)


def sharded_search(vectors: np.ndarray, queries: np.ndarray, k: int, shards: int,
                   backend: str = "auto", query_batch: int = 65_536, *,
                   cpus_per_shard: float | None = None, **params) -> KnnResult:
    """The k rows of `vectors` most similar to each row of `queries`, over `shards` actors.

    ids are row numbers into `vectors`; sims cosine; -1 / -inf padding when len(vectors) < k.
    """
    k = check_k(k)
    q = validate_vectors(queries, name="queries")
    x = validate_vectors(vectors)
    if len(x) == 0 or len(q) == 0:
        return KnnResult.empty(len(q), k)
    with ShardedIndex(x, shards, backend, cpus_per_shard=cpus_per_shard, **params) as index:
        return index.search(q, k, query_batch=query_batch)
