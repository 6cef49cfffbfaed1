"""Proximity graph: the k-NN lists cut at a similarity threshold, as an undirected edge list.

Input convention (what every k-NN backend in `graph.knn` returns, passed here as plain arrays):

    ids:  int64[n, k]   row numbers of each row's neighbours, -1 where a row has fewer than k
    sims: float32[n, k] cosine similarity of the L2-normalised vectors, descending per row

Output convention: one row per undirected edge, `src < dst` (row numbers, not item ids: the
caller maps them with its own id column), `sim` = the similarity, sorted by (src, dst). The
similarity is also the edge weight the community algorithms use.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["EDGE_SCHEMA", "edges_table", "proximity_edges", "saturation_rate"]

# Rows per chunk when scanning the k-NN lists: bounds the temporaries (bool mask, row numbers)
# to ~chunk*k elements, so a 1M x 100 input never materialises 100M-element index arrays
# unless that many edges really pass the threshold.
_CHUNK_ELEMENTS = 1 << 22

EDGE_SCHEMA = pa.schema(
    [
        pa.field("src", pa.int64(), nullable=False,
                 metadata={"description": "row number of the smaller endpoint (src < dst)"}),
        pa.field("dst", pa.int64(), nullable=False,
                 metadata={"description": "row number of the larger endpoint"}),
        pa.field("sim", pa.float32(), nullable=False,
                 metadata={"description": "cosine similarity of the endpoints' L2-normalised "
                                          "embeddings, in [-1, 1]; also the edge weight"}),
    ],
    metadata={"graph": "undirected proximity graph: k-NN edges with sim >= tau, one row per "
                       "edge, sorted by (src, dst)"},
)


def _check_knn(ids: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    sims = np.asarray(sims)
    if ids.ndim != 2 or sims.shape != ids.shape:
        raise ValueError(f"ids and sims must be 2-D arrays of the same shape, got {ids.shape} and {sims.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be integers (row numbers, -1 = none), got {ids.dtype}")
    return ids, sims


def _threshold(tau: float, sims: np.ndarray):
    """tau in the similarities' own dtype. Without this, a float64 tau (np.float64(0.9)) compares
    in float64 and drops a float32 similarity of exactly 0.9 (stored as 0.89999998), while a
    Python float compares in float32 and keeps it: the same threshold must mean the same cut."""
    if not np.isfinite(tau):
        raise ValueError(f"tau must be a finite similarity, got {tau}")
    return sims.dtype.type(tau) if np.issubdtype(sims.dtype, np.floating) else tau


def proximity_edges(ids: np.ndarray, sims: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (i, j) with similarity >= `tau` found in the k-NN lists.

    Returns `(src int64[m], dst int64[m], sim float32[m])` with `src < dst`, sorted by
    (src, dst), each pair once. An edge found from either side counts: j in i's list or i in
    j's list (k-NN is not symmetric, and a pair seen from one side only is still a pair).
    When both sides list the pair, the larger similarity is kept (the two values agree up to
    rounding of approximate indexes / fp16 vectors; max makes the result order-independent).
    -1 padding, self-matches and non-finite similarities are dropped.
    """
    ids, sims = _check_knn(ids, sims)
    n, k = ids.shape
    if n and ids.size and int(ids.max()) >= n:
        raise ValueError(f"ids hold row numbers < n={n}; got {int(ids.max())}")
    keys_parts: list[np.ndarray] = []
    sim_parts: list[np.ndarray] = []
    tau = _threshold(tau, sims)
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        nb = ids[start:stop]
        sm = sims[start:stop]
        rows = np.arange(start, stop, dtype=np.int64)[:, None]
        # NaN compares False, so a NaN similarity never passes the threshold.
        mask = (sm >= tau) & (nb >= 0) & (nb != rows)
        if not mask.any():
            continue
        r, c = np.nonzero(mask)
        a = r.astype(np.int64) + start
        b = nb[r, c].astype(np.int64)
        # Canonical orientation: both directions of a pair map to the same key lo * n + hi
        # (fits int64 for n < 3e9), so one sort both deduplicates and orders by (src, dst).
        keys_parts.append(np.minimum(a, b) * n + np.maximum(a, b))
        sim_parts.append(sm[r, c].astype(np.float32, copy=False))
    if not keys_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    keys = np.concatenate(keys_parts)
    del keys_parts
    esim = np.concatenate(sim_parts)
    del sim_parts
    # Unstable sort is fine (and ~2x faster than stable on 1e8 keys): keys tie only for the two
    # sides of one pair, and their max does not depend on order.
    order = np.argsort(keys)
    keys = keys[order]
    esim = esim[order]
    del order
    first = np.ones(keys.size, bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    sim = np.maximum.reduceat(esim, starts) if starts.size != keys.size else esim
    keys = keys[starts]
    return keys // n, keys % n, sim.astype(np.float32, copy=False)


def saturation_rate(sims: np.ndarray, tau: float, ids: np.ndarray | None = None) -> float:
    """Share of rows whose k-th (last) neighbour is still at similarity >= `tau`.

    Such a row may have more neighbours above the threshold than the k-NN search returned, so
    its duplicate edges (and its component) can be incomplete: k was too small for it. A rate
    near 0 means the proximity graph at `tau` is what an unbounded range search would give; a
    high rate means raise k (or tau). Rows whose last slot is padding (id -1 when `ids` is
    given, or a non-finite similarity) had fewer than k candidates and are not saturated.
    Returns 0.0 for an empty input.
    """
    sims = np.asarray(sims)
    if sims.ndim != 2:
        raise ValueError(f"sims must be 2-D [n, k], got shape {sims.shape}")
    n, k = sims.shape
    if n == 0:
        return 0.0
    if k == 0:
        raise ValueError("saturation is undefined for k = 0 neighbours")
    last = sims[:, -1]
    saturated = np.isfinite(last) & (last >= _threshold(tau, sims))
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != sims.shape:
            raise ValueError(f"ids and sims must have the same shape, got {ids.shape} and {sims.shape}")
        saturated &= ids[:, -1] >= 0
    return float(np.count_nonzero(saturated)) / n


def edges_table(src: np.ndarray, dst: np.ndarray, sim: np.ndarray) -> pa.Table:
    """The edge list as an Arrow table with `EDGE_SCHEMA` (src, dst: int64 row numbers; sim:
    float32). Row numbers index the vectors the k-NN graph was built from; the caller maps them
    to item ids (e.g. by appending `src_id` / `dst_id` columns)."""
    src = np.ascontiguousarray(src, dtype=np.int64)
    dst = np.ascontiguousarray(dst, dtype=np.int64)
    sim = np.ascontiguousarray(sim, dtype=np.float32)
    if not (src.ndim == dst.ndim == sim.ndim == 1) or not (src.size == dst.size == sim.size):
        raise ValueError(f"src, dst, sim must be 1-D of equal length, got {src.shape}, {dst.shape}, {sim.shape}")
    return pa.Table.from_arrays([pa.array(src), pa.array(dst), pa.array(sim)], schema=EDGE_SCHEMA)
