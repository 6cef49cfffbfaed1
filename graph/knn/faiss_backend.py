"""CPU k-NN backends on faiss: exact (IndexFlatIP), IVF (IndexIVFFlat) and HNSW (IndexHNSWFlat).

All use the inner-product metric on unit vectors, so faiss's "distance" already is our
similarity (cosine, larger = closer) and needs no conversion; faiss reports a missing
neighbour as label -1, which we map to sim -inf.

Threads: faiss uses OpenMP, and Ray sets OMP_NUM_THREADS=1 in its workers, so every index
calls `faiss.omp_set_num_threads(threads)` before it builds or searches (the setting is
process-wide; default: all of the machine's cores).
"""

from __future__ import annotations

import contextlib
import io
import os
import weakref

import numpy as np

from graph.knn.base import KnnIndex, KnnResult, check_positive_int

# Faiss warns (and k-means gets noisy) with fewer than 39 training points per centroid.
_MIN_POINTS_PER_LIST = 39
# Vectors per inverted list. Fixed, so a query's cost (nprobe lists) does not grow with n and
# a self-k-NN over n vectors is linear in n; capped so the coarse step (n x nlist) stays small.
LIST_SIZE = 1000
_MAX_NLIST = 4096
# Training sample per list: faiss's k-means caps at 256 per centroid; 40 (just above faiss's
# minimum) keeps the centroids good for routing while training, whose cost grows with nlist²,
# stays a small share of the build (1M x 512: 4 s at 40 points and 6 iterations, 11 s at 64 / 10).
_TRAIN_POINTS_PER_LIST = 40
# Query batches at least this many times nlist are searched list by list (see FaissIVFIndex).
_BATCH_QUERIES_PER_LIST = 4
# The header format `save` writes and `load_faiss_index` reads.
SAVE_FORMAT = 1


def _faiss():
    import faiss  # imported on use: keeps `import graph.knn` light

    return faiss


def default_nlist(n: int) -> int:
    """IVF lists for n vectors: n / LIST_SIZE (lists of ~1000 vectors), at most 4,096 and at
    most n/39 (enough points per centroid to train); at least 1."""
    return max(1, min(n // LIST_SIZE, n // _MIN_POINTS_PER_LIST, _MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: 4 (all of them when nlist <= 4).

    Measured on the dedup benchmark's embeddings (512-d, planted near-duplicates and chains,
    self-k-NN k=16, 2k sampled queries vs exact, lists of ~1000): 100k -> recall@16 0.996,
    pairs at cosine >= 0.9 found 0.996; 1M -> 0.994 / 0.989. A fixed nprobe over lists of
    fixed size keeps both the recall and the per-query cost flat as n grows.
    """
    return max(1, min(nlist, 4))


def _batch_search(index, q: np.ndarray, k: int, lists: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`faiss.contrib.big_batch_search` over an IVF index: every query that probes a list is
    scored against it with one matrix product (each list read once per batch). `lists`: the
    probed lists per query (None: routed by the index's quantizer)."""
    from faiss.contrib.big_batch_search import big_batch_search

    # faiss 1.15 prints a progress line per list even at verbose=0: keep stdout clean
    with contextlib.redirect_stdout(io.StringIO()):
        sims, labels = big_batch_search(index, q, k, method="pairwise_distances", q_assign=lists)
    return sims.astype(np.float32, copy=False), labels


class _FaissIndex(KnnIndex):
    """Shared faiss plumbing: thread setting, id mapping (faiss labels are insertion
    positions, mapped to our int64 ids), -1 / -inf for missing neighbours."""

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self.threads = (os.cpu_count() or 1) if threads is None else check_positive_int(threads, "threads")
        self._index = None
        self._id_chunks: list[np.ndarray] = []
        self._id_map: np.ndarray | None = None

    def _set_threads(self) -> None:
        _faiss().omp_set_num_threads(self.threads)

    def _create(self, x: np.ndarray):
        """A new, trained faiss index for dimension x.shape[1] (x: the first batch added)."""
        raise NotImplementedError

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._set_threads()
        if self._index is None:
            self._index = self._create(x)
        self._add_vectors(x)
        self._id_chunks.append(ids)
        self._id_map = None

    def _search(self, q: np.ndarray, k: int) -> KnnResult:
        self._set_threads()
        self._prepare_search(k)
        sims, labels = self._raw_search(q, k)
        if self._id_map is None:
            self._id_map = np.concatenate(self._id_chunks)
            self._id_chunks = [self._id_map]
        found = labels >= 0
        ids = np.where(found, self._id_map[np.where(found, labels, 0)], -1)
        return KnnResult(ids, np.where(found, sims, -np.inf))

    def _add_vectors(self, x: np.ndarray) -> None:
        self._index.add(x)

    def save(self, path: str) -> dict:
        """faiss's own file format (written by faiss, no Python copy of the vectors)."""
        ids = np.concatenate(self._id_chunks) if self._id_chunks else np.zeros(0, np.int64)
        if self._index is not None:
            _faiss().write_index(self._index, path)
        np.save(path + ".ids.npy", ids.astype(np.int64, copy=False))
        return {"format": SAVE_FORMAT, "params": self.params, "dim": self.dim, "ntotal": self._ntotal}

    def _restored(self, index) -> None:
        """Hook: attach what the subclass keeps beside the faiss index after a load."""

    def _prepare_search(self, k: int) -> None:
        """Set search-time parameters that depend on k (HNSW's efSearch)."""

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(q, k)


class FaissFlatIndex(_FaissIndex):
    """Exact search (IndexFlatIP): every query against every vector, O(n·N·d)."""

    name = "faiss-flat"

    def _create(self, x):
        return _faiss().IndexFlatIP(x.shape[1])

    @property
    def params(self) -> dict:
        return {"backend": self.name, "threads": self.threads}


class FaissIVFIndex(_FaissIndex):
    """Inverted lists (IndexIVFFlat, inner product): k-means partitions the vectors into
    `nlist` lists and a query scans the `nprobe` lists whose centroids are most similar.

    Large query batches (at least 4·nlist queries, e.g. the self-k-NN of a dedup) are searched
    list by list (`faiss.contrib.big_batch_search`): every query that probes a list is scored
    against that list with one matrix product, so each list is read once per batch instead of
    once per query. On 1M x 512 (2 cores) the self-k-NN takes ~61 s against ~500 s for HNSW at
    the same recall, and its time grows about linearly with n (lists of fixed size, fixed nprobe).

    nlist: default `default_nlist(n)` with n = rows in the first `add` (add everything at
        once for a good partition; later adds go into the trained lists).
    nprobe: default `default_nprobe(nlist)`, measured for recall ≥ 0.99 on clustered data.
    train_size: training sample rows, default min(n, 64·nlist), drawn with `seed`.
    niter: k-means iterations (faiss default 25 costs more than it gains here; 6).
    batch_search: search large batches list by list (False: always per query).

    Routing (which lists a vector goes to / a query probes) compares it with every centroid:
    n·nlist work, the one part that grows faster than n (1M x 512, 1000 lists: ~17 s of ~60).
    The routing of the vectors added last is kept, so a self-search of that same array (a
    dedup's k-NN graph) does not route them twice. (Routing through a second, small index over
    the centroids was tried: no faster through faiss's batch search, and recall@16 fell from
    0.994 to 0.93 at 1M.)
    """

    name = "faiss-ivf"

    def __init__(self, nlist: int | None = None, nprobe: int | None = None,
                 train_size: int | None = None, niter: int = 6, seed: int = 0,
                 batch_search: bool = True, threads: int | None = None) -> None:
        super().__init__(threads)
        for key, value in (("nlist", nlist), ("nprobe", nprobe), ("train_size", train_size)):
            if value is not None:
                check_positive_int(value, key)
        self.nlist, self.nprobe, self.train_size = nlist, nprobe, train_size
        self.niter, self.seed, self.batch_search = niter, seed, batch_search
        self._routed: tuple[weakref.ref, np.ndarray] | None = None  # (added array, its lists)

    def _create(self, x):
        faiss = _faiss()
        n, dim = x.shape
        self.nlist = min(self.nlist or default_nlist(n), n)  # k-means needs >= nlist points
        self.nprobe = min(self.nprobe or default_nprobe(self.nlist), self.nlist)
        size = min(n, self.train_size or _TRAIN_POINTS_PER_LIST * self.nlist)
        self.train_size = max(size, self.nlist)
        rng = np.random.default_rng(self.seed)
        sample = x if self.train_size >= n else x[np.sort(rng.choice(n, self.train_size, replace=False))]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        # IndexIVF trains its quantizer with spherical k-means for inner product.
        index.cp.niter = self.niter
        index.cp.seed = self.seed
        index.cp.max_points_per_centroid = max(_TRAIN_POINTS_PER_LIST, self.train_size // self.nlist + 1)
        index.train(sample)
        self._quantizer = quantizer  # the IVF index does not own it: keep it alive
        return index

    def _prepare_search(self, k: int) -> None:
        self._index.nprobe = self.nprobe

    def _restored(self, index) -> None:
        self._quantizer = _faiss().downcast_index(index.quantizer)

    def _add_vectors(self, x: np.ndarray) -> None:
        lists = self._quantizer.search(x, self.nprobe)[1]
        first = np.ascontiguousarray(lists[:, 0])
        faiss = _faiss()
        # swig_ptr does not keep its array alive: `x` and `first` are named for the call
        self._index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(first))
        self._routed = (weakref.ref(x), lists) if self.batch_search else None

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.batch_search or len(q) < _BATCH_QUERIES_PER_LIST * self.nlist or self.nlist == 1:
            return self._index.search(q, k)
        routed = self._routed
        if routed is not None and routed[0]() is q and routed[1].shape[1] == self.nprobe:
            lists = routed[1]  # a self-search: the rows were routed when they were added
        else:
            lists = None  # routed by the quantizer inside the batch search
        return _batch_search(self._index, q, k, lists)

    @property
    def params(self) -> dict:
        return {"backend": self.name, "nlist": self.nlist, "nprobe": self.nprobe,
                "train_size": self.train_size, "niter": self.niter, "seed": self.seed,
                "batch_search": self.batch_search, "threads": self.threads}


class FaissHNSWIndex(_FaissIndex):
    """Hierarchical navigable small-world graph (IndexHNSWFlat, inner product).

    M: graph degree (memory ~ 2·M·4 bytes per vector on top of the vectors).
    ef_construction: candidate list size while inserting (build time vs graph quality).
    ef_search: candidate list size per query; raised to k when k is larger.
    Defaults from clustered synthetic embeddings (100k x 512, self-k-NN k=16, 2 cores,
    recall@16 vs exact): M 32 / efC 120 / efS 96 -> 0.9989 in 11 s build + 9 s search;
    efC 200 / efS 128 -> 0.9998 in 30 s; efC 80 / efS 128 -> 0.997; M 16 -> 0.997.
    The build is multi-threaded and so not bit-for-bit deterministic across runs.
    """

    name = "faiss-hnsw"

    def __init__(self, M: int = 32, ef_construction: int = 120, ef_search: int = 96,
                 threads: int | None = None) -> None:
        super().__init__(threads)
        for key, value in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            check_positive_int(value, key)
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search

    def _create(self, x):
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(x.shape[1], self.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _prepare_search(self, k: int) -> None:
        self._index.hnsw.efSearch = max(self.ef_search, k)

    @property
    def params(self) -> dict:
        return {"backend": self.name, "M": self.M, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "threads": self.threads}


def load_faiss_index(path: str, header: dict, backends: dict, threads: int | None = None) -> _FaissIndex:
    """An index written by `_FaissIndex.save` to `path` (header: what save returned), ready to
    add to and search. backends: name -> class (the registry's); threads: this machine's
    setting (None: all cores), not the saved one. A mismatch raises ValueError."""
    if header.get("format") != SAVE_FORMAT:
        raise ValueError(f"saved k-NN index format {header.get('format')} (this code reads {SAVE_FORMAT})")
    params = dict(header["params"])
    name = params.pop("backend")
    params["threads"] = threads
    if name not in backends or not issubclass(backends[name], _FaissIndex):
        raise ValueError(f"saved k-NN index of backend {name!r}, which cannot be loaded here")
    ids = np.load(path + ".ids.npy")
    if len(ids) != header["ntotal"]:
        raise ValueError(f"saved k-NN index: {len(ids)} ids for {header['ntotal']} vectors")
    index = backends[name](**params)
    index.dim, index._ntotal = header["dim"], header["ntotal"]
    if header["ntotal"]:
        index._index = _faiss().read_index(path)
        if index._index.ntotal != header["ntotal"]:
            raise ValueError(f"saved k-NN index holds {index._index.ntotal} vectors, header says {header['ntotal']}")
        index._restored(index._index)
    index._id_chunks = [ids] if len(ids) else []
    return index
