"""Reference dedup algorithms and agreement metrics (benchmarks only, not the product path).

- `exact_threshold_groups`: every pair with cosine >= tau (faiss range_search over an exact
  inner-product index), then connected components: the ground truth for "which items are
  within tau of each other, transitively".
- `sd3_dedup`: Stable Diffusion 3's Algorithm 1 (arXiv 2403.03206, App. E): k-means, then
  within each cluster walk items in order, range_search at tau, mark neighbours as duplicates,
  keep the first. Order-dependent; cross-cluster duplicates are never compared.
- metrics over two labelings of the same items: pairwise precision / recall / F1 of
  "same group" pairs, adjusted Rand index, Jaccard of removed sets, residual duplicate rate.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def exact_pairs(x: np.ndarray, tau: float, query_rows: np.ndarray | None = None, batch: int = 4096):
    """(src, dst) of all pairs with inner product >= tau, queries restricted to `query_rows`."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    rows = np.arange(len(x)) if query_rows is None else query_rows
    src, dst = [], []
    for start in range(0, len(rows), batch):
        q = rows[start:start + batch]
        lims, _, ids = index.range_search(x[q], tau)
        counts = np.diff(lims).astype(np.int64)
        s = np.repeat(q, counts)
        keep = s != ids
        src.append(s[keep])
        dst.append(ids[keep].astype(np.int64))
    return np.concatenate(src), np.concatenate(dst)


def components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    graph = sp.coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def exact_threshold_groups(x: np.ndarray, tau: float) -> np.ndarray:
    src, dst = exact_pairs(x, tau)
    return components(len(x), src, dst)


def sd3_dedup(x: np.ndarray, tau: float, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Group label per item as SD3's Algorithm 1 assigns it: each kept item labels itself and
    the not-yet-removed neighbours within tau in its k-means cluster."""
    import faiss

    km = faiss.Kmeans(x.shape[1], n_clusters, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(x[np.random.default_rng(seed).choice(len(x), min(len(x), 64 * n_clusters), replace=False)])
    assign = km.index.search(x, 1)[1][:, 0]
    labels = np.arange(len(x), dtype=np.int64)
    for c in np.unique(assign):
        members = np.flatnonzero(assign == c)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[members])
        removed = np.zeros(len(members), bool)
        for i in range(len(members)):  # in input order: the algorithm keeps the first
            if removed[i]:
                continue
            lims, _, ids = index.range_search(x[members[i]][None], tau)
            dup = ids[(ids != i) & ~removed[ids]]
            removed[dup] = True
            labels[members[dup]] = members[i]
    return labels


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """(pairs together in a, pairs together in b, pairs together in both), by contingency."""
    def together(labels):
        _, counts = np.unique(labels, return_counts=True)
        return int((counts * (counts - 1) // 2).sum())

    _, joint = np.unique(np.stack([a, b], 1), axis=0, return_counts=True)
    return together(a), together(b), int((joint * (joint - 1) // 2).sum())


def pairwise_f1(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    n_pred, n_true, both = _pair_counts(pred, truth)
    precision = both / n_pred if n_pred else 1.0
    recall = both / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def adjusted_rand(pred: np.ndarray, truth: np.ndarray) -> float:
    n = len(pred)
    total = n * (n - 1) / 2
    a, b, both = _pair_counts(pred, truth)
    expected = a * b / total if total else 0.0
    max_index = (a + b) / 2
    return 1.0 if max_index == expected else (both - expected) / (max_index - expected)


def removed_set(labels: np.ndarray) -> np.ndarray:
    """Items a one-keeper-per-group policy removes (all but the smallest index of each group)."""
    first = np.zeros(len(labels), bool)
    _, idx = np.unique(labels, return_index=True)
    first[idx] = True
    return np.flatnonzero(~first)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a, b = set(a.tolist()), set(b.tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


def residual_duplicate_rate(x: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Share of kept items that still have another kept item within tau."""
    kept = np.setdiff1d(np.arange(len(x)), removed_set(labels))
    src, dst = exact_pairs(x[kept], tau)
    return len(np.unique(src)) / len(kept) if len(kept) else 0.0
