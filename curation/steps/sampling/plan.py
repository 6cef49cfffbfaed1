"""Token-budget batch plans: which items go together, in which order, for one epoch of a stage.

1. The sample is shuffled (seeded) and cut into chunks of `chunk_size` items.
2. Inside a chunk, items are sorted by (bucket when `same_shape`, seq_len) and packed greedily:
   an item joins its group's open batch while n · (longest seq_len) ≤ token_budget and the
   batch-size caps hold; otherwise the batch closes and a new one opens. Open batches carry
   over to the next chunk, so only the last batch of each group in the epoch can be short.
   This is the dynamic batch sizing of the target recipe: 256² items (256 tokens) go 256 to a
   64k-token batch, 1024² items (4096 tokens) 16.
3. Batches are shuffled as units (seeded): the trainer sees a random bucket / length order.

Padding waste of a batch is (n · max − Σ seq_len) / (n · max): the tokens a trainer that pads to
the batch's longest sequence computes for nothing. Sorting inside 8k-item chunks keeps it near
zero while the chunking keeps batches random across the epoch (notes/sampling.md measures
0.16% against 42.9% for random fixed-size batches).

Sharding across data-parallel ranks happens in the loader (`curation.feed`): rank r of W
takes global batches r, r + W, ... with the last round wrapped, so every rank has the same
number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.steps.sampling.config import BatchConfig

__all__ = ["BatchPlan", "padding_stats", "plan_batches"]


@dataclass
class BatchPlan:
    """batch int64 [n]: each item's batch in consumption order; position int32 [n]: its place
    in the batch; sizes int64 [B]: items per batch in consumption order; padded int64 [B]:
    n · longest seq_len per batch (tokens a padding trainer computes)."""

    batch: np.ndarray
    position: np.ndarray
    sizes: np.ndarray
    padded: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.sizes)


def plan_batches(seq_len, bucket_height, bucket_width, cfg: BatchConfig, seed: int) -> BatchPlan:
    """Plan the batches of one epoch. seq_len: tokens per item; bucket_*: training size, px
    (grouping key when cfg.same_shape); seed: fixes the item shuffle and the batch order."""
    seq = np.asarray(seq_len, dtype=np.int64)
    n = len(seq)
    rng = np.random.default_rng(seed)
    if cfg.same_shape:
        shapes = np.stack([np.asarray(bucket_height, np.int64), np.asarray(bucket_width, np.int64)], axis=1)
        keys, group = np.unique(shapes, axis=0, return_inverse=True) if n else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        group = group.reshape(-1)
        caps = [_cap(cfg, f"{h}x{w}") for h, w in keys]
    else:
        group = np.zeros(n, dtype=np.int64)
        caps = [_cap(cfg, None)]
    order = rng.permutation(n)
    batches: list[list[int]] = []
    open_items: dict[int, list[int]] = {}
    open_max: dict[int, int] = {}
    budget = cfg.token_budget
    for start in range(0, n, cfg.chunk_size):
        chunk = order[start:start + cfg.chunk_size]
        chunk = chunk[np.lexsort((seq[chunk], group[chunk]))]
        for i, g, s in zip(chunk.tolist(), group[chunk].tolist(), seq[chunk].tolist()):
            items = open_items.get(g)
            if items:
                longest = max(open_max[g], s)
                if (len(items) + 1) * longest > budget or len(items) >= caps[g]:
                    batches.append(items)
                    items = None
            if not items:
                open_items[g] = [i]
                open_max[g] = s
            else:
                items.append(i)
                open_max[g] = max(open_max[g], s)
    batches.extend(items for _, items in sorted(open_items.items()) if items)
    consume = rng.permutation(len(batches))
    batch = np.empty(n, dtype=np.int64)
    position = np.empty(n, dtype=np.int32)
    sizes = np.empty(len(batches), dtype=np.int64)
    padded = np.empty(len(batches), dtype=np.int64)
    for b, k in enumerate(consume.tolist()):
        items = np.asarray(batches[k], dtype=np.int64)
        batch[items] = b
        position[items] = np.arange(len(items), dtype=np.int32)
        sizes[b] = len(items)
        padded[b] = len(items) * int(seq[items].max())
    return BatchPlan(batch, position, sizes, padded)


def _cap(cfg: BatchConfig, bucket: str | None) -> int:
    caps = [c for c in (cfg.max_batch_size, cfg.max_per_bucket.get(bucket) if bucket else None) if c]
    return min(caps) if caps else 1 << 62


def padding_stats(seq_len, batch, budget: int | None = None) -> dict:
    """Padding waste (share of padded tokens that are padding), mean batch size, and, with a
    budget, the mean share of the token budget each batch uses. batch: batch index per item."""
    seq = np.asarray(seq_len, np.int64)
    b = np.asarray(batch, np.int64)
    if not len(seq):
        return {"batches": 0, "padding_waste": 0.0, "mean_batch_size": 0.0}
    nb = int(b.max()) + 1
    size = np.bincount(b, minlength=nb)
    longest = np.zeros(nb, np.int64)
    np.maximum.at(longest, b, seq)
    padded = size * longest
    out = {
        "batches": nb,
        "padding_waste": round(float(1 - seq.sum() / padded.sum()), 6),
        "mean_batch_size": round(float(size.mean()), 2),
        "min_batch_size": int(size.min()),
        "max_batch_size": int(size.max()),
    }
    if budget:
        out["budget_used"] = round(float(np.mean(np.minimum(padded / budget, 1.0))), 4)
    return out
