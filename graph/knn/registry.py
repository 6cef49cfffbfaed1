"""k-NN backends by name, the automatic choice between them, and `knn_graph`.

Names: "faiss-flat" (exact, CPU), "faiss-ivf", "faiss-hnsw" (approximate, CPU),
"cuvs-brute" (exact, GPU), "cuvs-cagra" (approximate, GPU). GPU presence is probed only when
asked for and only after cuVS is known to be installed (no torch / CUDA import otherwise),
never at import.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import numpy as np

from graph.knn.base import KnnIndex, KnnResult, check_k, validate_vectors
from graph.knn.cuvs_backend import CuvsBruteForceIndex, CuvsCagraIndex
from graph.knn.faiss_backend import FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex, load_faiss_index

BACKENDS: dict[str, Callable[..., KnnIndex]] = {
    "faiss-flat": FaissFlatIndex,
    "faiss-ivf": FaissIVFIndex,
    "faiss-hnsw": FaissHNSWIndex,
    "cuvs-brute": CuvsBruteForceIndex,
    "cuvs-cagra": CuvsCagraIndex,
}
GPU_BACKENDS = frozenset({"cuvs-brute", "cuvs-cagra"})

# Automatic choice. CPU exact search costs n² · d: at 50k × 512 that is ~1.3 TFLOP, about a
# minute on 2 cores; beyond, IVF reaches recall ≥ 0.99 at a small fraction of the work.
CPU_EXACT_MAX = 50_000
# GPU brute force stays practical (minutes on one GPU) to about a million vectors; CAGRA beyond.
GPU_EXACT_MAX = 1_000_000


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """Whether this process sees a CUDA GPU (asks cupy, else torch, else cuda-python); cached."""
    if _installed("cupy"):
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # no driver / no device: cupy raises CUDARuntimeError
            return False
    if _installed("torch"):
        import torch

        return bool(torch.cuda.is_available())
    try:  # cuda-python, a cuVS dependency
        from cuda.bindings import runtime

        err, count = runtime.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:
        return False


def gpu_knn_missing() -> str | None:
    """What stops the cuVS backends from running in this process (None when nothing does)."""
    if not _installed("cuvs"):
        return "the cuVS Python package (not installed; install the `gpu` extra: cuvs-cu12)"
    if not gpu_available():
        return "a CUDA GPU (none is visible to this process)"
    return None


def available_backends() -> list[str]:
    """Backend names usable in this process now (the GPU ones only with cuVS and a GPU)."""
    names = [name for name in BACKENDS if name not in GPU_BACKENDS] if _installed("faiss") else []
    if gpu_knn_missing() is None:
        names += [name for name in BACKENDS if name in GPU_BACKENDS]
    return names


def choose_backend(n: int, gpu: bool | None = None, override: str | None = None) -> str:
    """The backend name for a k-NN over n vectors.

    override: a backend name, which wins ("auto" or None = choose). Unknown names raise
        ValueError listing the known ones; a cuVS backend raises RuntimeError naming what is
        missing (package or GPU) unless `gpu=True`.
    gpu: True = GPU k-NN is usable where the index will run (trusted, not probed: e.g. a
        driver planning for GPU workers); False = it is not; None = probe this process.
    Automatic: GPU -> "cuvs-brute" for n <= 1,000,000, else "cuvs-cagra";
    CPU -> "faiss-flat" for n <= 50,000, else "faiss-ivf" (lists of ~1000 searched list by
    list: about linear in n; on 1M x 512, 2 cores, ~61 s at recall@16 0.994 vs HNSW ~500 s
    at 0.99; see graph/knn/__init__.py).
    """
    if override is not None and override != "auto":
        if override not in BACKENDS:
            raise ValueError(f"unknown k-NN backend {override!r}; known: {', '.join(BACKENDS)}")
        if override in GPU_BACKENDS and gpu is not True:
            missing = "a GPU (gpu=False was given)" if gpu is False else gpu_knn_missing()
            if missing:
                raise RuntimeError(f"k-NN backend {override!r} needs {missing}; "
                                   f"CPU backends: faiss-flat, faiss-ivf, faiss-hnsw")
        if override not in GPU_BACKENDS and not _installed("faiss"):
            raise RuntimeError(f"k-NN backend {override!r} needs faiss (pip install faiss-cpu)")
        return override
    if gpu is None:
        gpu = gpu_knn_missing() is None
    if gpu:
        return "cuvs-brute" if n <= GPU_EXACT_MAX else "cuvs-cagra"
    return "faiss-flat" if n <= CPU_EXACT_MAX else "faiss-ivf"


def make_index(name: str, **params) -> KnnIndex:
    """A new, empty index of backend `name` with its parameters (unknown ones: TypeError)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown k-NN backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](**params)


def load_index(path: str, header: dict, threads: int | None = None) -> KnnIndex:
    """An index saved with `KnnIndex.save(path)` (faiss backends; header: what save returned),
    to add to and search again."""
    return load_faiss_index(path, header, BACKENDS, threads)


def knn_graph(vectors, k: int, backend: str = "auto", **params) -> KnnResult:
    """The k nearest other rows of every row of `vectors` (a self-k-NN graph).

    vectors: (n, dim) array, validated and L2-normalised (`validate_vectors`).
    backend: a name from BACKENDS or "auto" (`choose_backend(n)` in this process);
    params: that backend's parameters.
    Each row is searched with k+1 neighbours and its own row number removed (only that one
    entry: an identical duplicate row stays, with sim 1.0). ids are row numbers; rows have
    -1 / -inf padding when n-1 < k (one row alone has no neighbours).
    Returns KnnResult (n, k).
    """
    return knn_graph_and_index(vectors, k, backend, **params)[0]


def knn_graph_and_index(vectors, k: int, backend: str = "auto", **params) -> tuple[KnnResult, KnnIndex | None]:
    """`knn_graph` and the index it built over `vectors` (None for no vectors), for a caller
    that keeps it (the dedup step saves it for its incremental runs)."""
    x = validate_vectors(vectors)
    k = check_k(k)
    name = choose_backend(len(x), override=backend)
    if len(x) == 0:
        return KnnResult.empty(0, k), None
    index = make_index(name, **params)
    index.add(x)
    return index.search(x, k + 1).exclude_self(np.arange(len(x))), index
