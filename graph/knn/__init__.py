"""k-nearest-neighbour search over unit vectors: one interface, CPU (faiss) and GPU (cuVS) backends.

Convention: vectors are L2-normalised float32 rows; similarity = inner product = cosine in
[-1, 1]; results list the most similar first, with id -1 / sim -inf for "no neighbour".

    from graph.knn import knn_graph, make_index
    graph = knn_graph(vectors, k=16)               # backend chosen by size and hardware
    index = make_index("faiss-hnsw", M=32); index.add(vectors); index.search(queries, 10)

Backends ("faiss-flat", "faiss-ivf", "faiss-hnsw" on CPU; "cuvs-brute", "cuvs-cagra" on GPU)
are chosen by `choose_backend`: exact up to 50k vectors on CPU / 1M on GPU, approximate beyond
(IVF on CPU, its large query batches searched list by list).
Measured on a 2-core machine, the dedup benchmark's embeddings (512-d, topic clusters with
planted near-duplicates), self-k-NN with k=16, recall@16 against exact on a 2k-row sample:
  faiss-flat  exact: 100k ~160 s
  faiss-ivf   defaults (lists of ~1000, nprobe 4, batches searched list by list):
              100k 4.6 s, recall 0.996; 1M 61 s, 0.994
  faiss-hnsw  defaults (M 32, efC 120, efS 96): 100k 28 s, recall 0.997; 1M ~500 s (the
              per-item cost grows with n: random access into a larger graph)

Sharding across Ray actors lives in `curation.steps.vectors` (this package never imports Ray).
"""

from graph.knn.base import (KnnIndex, KnnResult, check_k, check_positive_int, recall_at_k,
                            rerank_exact, validate_vectors)
from graph.knn.cuvs_backend import (CuvsBruteForceIndex, CuvsCagraIndex, cuvs_knn_graph,
                                    enable_rmm_pool)
from graph.knn.faiss_backend import (FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex,
                                     default_nlist, default_nprobe)
from graph.knn.registry import (BACKENDS, GPU_BACKENDS, available_backends, choose_backend,
                                gpu_available, gpu_knn_missing, knn_graph, knn_graph_and_index, load_index,
                                make_index)

__all__ = [
    "BACKENDS", "GPU_BACKENDS", "CuvsBruteForceIndex", "CuvsCagraIndex", "FaissFlatIndex",
    "FaissHNSWIndex", "FaissIVFIndex", "KnnIndex", "KnnResult", "available_backends",
    "check_k", "check_positive_int", "choose_backend", "cuvs_knn_graph", "default_nlist", "default_nprobe",
    "enable_rmm_pool", "gpu_available", "gpu_knn_missing", "knn_graph", "knn_graph_and_index", "load_index", "make_index",
    "recall_at_k", "rerank_exact", "validate_vectors",
]
