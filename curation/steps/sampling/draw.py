"""Weighted sampling without replacement on Ray Data, deterministic per item.

Method: Efraimidis–Spirakis exponential keys (A-ES). Item i with weight w_i > 0 gets the key
k_i = ln(u_i) / w_i, u_i uniform in (0, 1); the k items with the largest keys are a weighted
sample without replacement of size k. Why this and not Poisson thinning (keep i with
p_i = min(1, k·w_i / W)): the size is exact (a trainer's step count follows from it), and the
top-k of each block merged is the global top-k, so Ray Data reduces every block to at most k
rows per source in parallel (`map_batches`) and the driver merges only those.

u_i is a hash of (item id, salt) (`item_uniforms`), not a stream of a seeded generator, so a
draw does not depend on how Ray splits the rows into blocks, on their order, or on the number
of workers: the same (stage, epoch, seed) always draws the same items.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashes import hex_words, splitmix64

__all__ = ["draw", "item_uniforms", "salt_seed", "top_k_per_source"]

def salt_seed(salt: str) -> int:
    """A 64-bit integer from a text salt (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little")


def item_uniforms(ids: pa.Array | pa.ChunkedArray, salt: str) -> np.ndarray:
    """float64 in the open interval (0, 1), one per id, a hash of (id, salt).

    Ids that are hex strings of ≥ 16 characters (the lake's sha256 ids) use their first 64 bits
    mixed with the salt (vectorised over the Arrow buffers); other ids are hashed with blake2b
    one by one.
    """
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(arr)
    if n == 0:
        return np.zeros(0)
    words, ok = hex_words(arr, 1)
    raw = words[:, 0]
    if not ok.all():
        key = salt.encode()[:64]
        raw = np.fromiter((int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(),
                                          "little") for i in arr.to_pylist()), dtype=np.uint64, count=n)
    x = splitmix64(raw ^ np.uint64(salt_seed(salt)))
    # 53 random bits -> (0, 1): never 0 (log) and never 1
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _keys(ids: pa.Array, weights: np.ndarray, salt: str) -> np.ndarray:
    u = item_uniforms(ids, salt)
    with np.errstate(divide="ignore"):
        return np.where(weights > 0, np.log(u) / np.where(weights > 0, weights, 1.0), -np.inf)


def top_k_per_source(batch: pa.Table, quotas: dict[int, int], salt: str) -> pa.Table:
    """The rows of `batch` (columns id, source int32, weight float64) with the largest keys, at
    most quotas[source] per source; adds `key` float64. Rows of weight 0 are never drawn."""
    keys = _keys(batch["id"], batch["weight"].to_numpy(zero_copy_only=False).astype(np.float64), salt)
    source = batch["source"].to_numpy(zero_copy_only=False)
    keep = []
    for s, k in quotas.items():
        rows = np.flatnonzero((source == s) & np.isfinite(keys))
        if k <= 0 or not len(rows):
            continue
        if len(rows) > k:
            rows = rows[np.argpartition(-keys[rows], k - 1)[:k]]
        keep.append(rows)
    rows = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return batch.take(pa.array(rows, pa.int64())).append_column("key", pa.array(keys[rows], pa.float64()))


def draw(table: pa.Table, quotas: dict[int, int], salt: str, *, use_ray: bool = True,
         rows_per_block: int = 131_072) -> pa.Table:
    """A-ES draw: for each source s, the quotas[s] rows of `table` (id, source, weight, ...)
    with the largest keys (ties broken by id). On Ray Data when `use_ray` (blocks of
    `rows_per_block` rows reduced in parallel) and the draw keeps under half the rows (a block's
    top-k shrinks it; a draw of nearly everything only moves rows), else in this process; both
    give the same rows. Returns the drawn rows with `key`, sorted by (source, key descending, id)."""
    base = table.select(["id", "source", "weight"])
    if use_ray and table.num_rows > rows_per_block and 2 * sum(quotas.values()) < table.num_rows:
        import ray

        blocks = [base.slice(i, rows_per_block) for i in range(0, base.num_rows, rows_per_block)]
        ds = ray.data.from_arrow(blocks).map_batches(
            top_k_per_source, fn_kwargs={"quotas": quotas, "salt": salt},
            batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
        parts = [ray.get(ref) for ref in ds.to_arrow_refs()]
        merged = pa.concat_tables(parts) if parts else top_k_per_source(base.slice(0, 0), quotas, salt)
        # the keys are recomputed from (id, salt), so the merge needs only ids: the same rows
        candidates = merged.drop_columns(["key"])
    else:
        candidates = base
    picked = top_k_per_source(candidates, quotas, salt)
    picked = picked.sort_by([("source", "ascending"), ("key", "descending"), ("id", "ascending")])
    extra = [c for c in table.column_names if c not in ("id", "source", "weight")]
    if extra:
        idx = pc.index_in(picked["id"], value_set=table["id"])
        picked = pa.Table.from_arrays(
            [picked[c] for c in picked.column_names] + [table[c].take(idx) for c in extra],
            names=picked.column_names + extra)
    return picked
