"""Token-budget batch plans: which items go together, in which order, for one epoch of a stage.

1. The sample is shuffled (seeded) and cut into chunks of `chunk_size` items.
2. Inside a chunk, items are sorted by group and seq_len and packed greedily: an item joins
   the open batch while n · (longest seq_len) ≤ token_budget and the batch-size caps hold;
   otherwise the batch closes and a new one opens. With `same_shape` a group is one bucket and
   one seq_len (the trainer pads captions to a multiple of 32, so few lengths occur), so
   batches stack as tensors and waste nothing; otherwise the whole chunk is one group sorted
   by seq_len. A group's unfinished batch at the end of a chunk goes back into the next chunk
   (sorted again with it); what is left at the end of the epoch is packed once more by bucket
   alone (lengths may mix there), so few batches are short.
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
    if cfg.same_shape:  # a group: one bucket and one padded length, so a batch wastes nothing
        bh = np.asarray(bucket_height, np.int64)
        bw = np.asarray(bucket_width, np.int64)
        shape_key = (bh << 21) | bw  # sides < 2^21 px
        keys, group = np.unique((shape_key << 21) | seq, return_inverse=True)  # seq_len < 2^21 tokens
        # the epoch's leftovers: one group per bucket (lengths may mix, shapes may not)
        buckets, tail_of = np.unique(keys >> 21, return_inverse=True)
        tail_group = tail_of[group]
        caps = [_cap(cfg, f"{k >> 42}x{(k >> 21) & 0x1FFFFF}") for k in keys.tolist()]
        tail_caps = [_cap(cfg, f"{k >> 21}x{k & 0x1FFFFF}") for k in buckets.tolist()]
    else:
        group = tail_group = np.zeros(n, dtype=np.int64)
        caps = tail_caps = [_cap(cfg, None)]
    order = rng.permutation(n)
    batches: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.int64)
    for start in range(0, n, cfg.chunk_size):
        chunk = np.concatenate([carry, order[start:start + cfg.chunk_size]])
        carry = _pack(chunk, group, seq, caps, cfg.token_budget, batches)
    _pack(carry, tail_group, seq, tail_caps, cfg.token_budget, batches, flush=True)
    consume = rng.permutation(len(batches))
    batch = np.empty(n, dtype=np.int64)
    position = np.empty(n, dtype=np.int32)
    if not n:
        return BatchPlan(batch, position, np.zeros(0, np.int64), np.zeros(0, np.int64))
    ordered = [batches[k] for k in consume.tolist()]
    sizes = np.array([len(b) for b in ordered], dtype=np.int64)
    items = np.concatenate(ordered)
    starts = np.cumsum(sizes) - sizes
    batch[items] = np.repeat(np.arange(len(sizes)), sizes)
    position[items] = (np.arange(n) - np.repeat(starts, sizes)).astype(np.int32)
    padded = sizes * np.maximum.reduceat(seq[items], starts)
    return BatchPlan(batch, position, sizes, padded)


def _pack(items: np.ndarray, group: np.ndarray, seq: np.ndarray, caps: list[int], budget: int,
          out: list[np.ndarray], flush: bool = False) -> np.ndarray:
    """Greedy packing of `items` sorted by (group, seq_len): full batches go to `out`; each
    group's unfinished batch is returned (to be packed again with the next chunk), or with
    `flush` goes to `out` too. Ascending lengths make a batch's cost k · seq[i + k - 1]
    non-decreasing in k, so each batch is the longest prefix within budget (one vector test
    per batch, not one Python step per item)."""
    items = items[np.lexsort((seq[items], group[items]))]
    g, s = group[items], seq[items]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True]) if len(items) else np.zeros(1, np.int64)
    left = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        cap = caps[g[a]]
        i = a
        while i < b:
            hi = min(b, i + cap, i + budget // max(int(s[i]), 1) + 1)
            fits = np.arange(1, hi - i + 1) * s[i:hi] <= budget
            k = max(1, int(fits.sum()))  # an item longer than the budget is a batch of one
            if i + k == b and not flush:
                left.append(items[i:b])  # the group's open batch
                break
            out.append(items[i:i + k])
            i += k
    return np.concatenate(left) if left else np.zeros(0, dtype=np.int64)


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
