"""Concept balancing: per-item sampling weights from the concepts each item holds, and the report.

Concepts are knowledge-graph node ids (`weights.nodes`, carried into a manifest as `concepts`).
For n items, `Concepts` keeps them flat (CSR): `offsets` int64 [n+1], `values` int64 (node ids),
`index` int32 (the same as positions into `ids`, the sorted distinct concepts).

The modes (formulas in `BalanceConfig`'s docstring) give one weight ≥ 0 per item; the draw is
∝ weight without replacement (`curation.steps.sampling.draw`). Each drawn item also names the
one concept it represents (`assign_concepts`): in `uniform` mode the concept it was drawn for
(picked ∝ π(c) / R_c among its concepts, the terms of its weight), otherwise one of its
concepts uniformly. The sample's concept marginal is the histogram of that choice; the pool's
("before") marginal is its expectation under a uniform draw: each item's unit mass split evenly
over its concepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.sampling.config import BalanceConfig

__all__ = ["BalanceResult", "Concepts", "assign_concepts", "balance_weights", "marginal_report"]


@dataclass(frozen=True)
class Concepts:
    offsets: np.ndarray   # int64 [n + 1]
    values: np.ndarray    # int64 [m]: node ids, item by item
    ids: np.ndarray       # int64 [k]: distinct node ids, sorted
    index: np.ndarray     # int32 [m]: position of each value in `ids`

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> "Concepts":
        """From a list<int64> column (null = no concept). Repeats inside one list are kept once."""
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        col = pc.fill_null(col, pa.scalar([], col.type))
        n = len(col)
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
        item = np.repeat(np.arange(n, dtype=np.int64), lengths)
        if len(values):  # drop repeats of a concept within one item (a tag named twice)
            order = np.lexsort((values, item))
            item, values = item[order], values[order]
            first = np.ones(len(values), dtype=bool)
            first[1:] = (item[1:] != item[:-1]) | (values[1:] != values[:-1])
            item, values = item[first], values[first]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.add.at(offsets, item + 1, 1)
        offsets = np.cumsum(offsets)
        ids, index = np.unique(values, return_inverse=True)
        return cls(offsets, values, ids, index.astype(np.int32))

    @property
    def n_items(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item_of_value(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_items, dtype=np.int64), self.lengths())

    def fractional_counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """float64 [k]: Σ over (masked) items of 1/|C(d)| per concept (the pool's marginal)."""
        lengths = self.lengths()
        share = np.repeat(1.0 / np.maximum(lengths, 1), lengths)
        if mask is not None:
            share = share * np.repeat(mask.astype(np.float64), lengths)
        return np.bincount(self.index, weights=share, minlength=len(self.ids))


@dataclass
class BalanceResult:
    """weight float64 [n] ≥ 0 (relative; the draw normalises); expected_size: for `cap`, Σ of
    the keep probabilities (MetaCLIP's expected curated size), else None; term float64 [m]:
    the per-(item, concept) terms used to pick the concept an item represents."""

    weight: np.ndarray
    term: np.ndarray
    expected_size: float | None
    prior: np.ndarray | None  # float64 [k]: the normalised target prior (uniform mode)


def balance_weights(concepts: Concepts, cfg: BalanceConfig, *, kg_weight: np.ndarray | None = None,
                    rarity: np.ndarray | None = None, quality: np.ndarray | None = None,
                    prior: np.ndarray | None = None) -> BalanceResult:
    """Per-item weights for `cfg.mode`.

    kg_weight: the knowledge graph's weight per item (null -> 1), mode `weight`.
    rarity: Σ BM25 of the item's tags per item (`weights.bm25`), mode `uniform`; non-positive
        or missing values get the smallest positive one (a tagged item is never unreachable).
    quality: per-item quality (mode `uniform`), same floor rule.
    prior: float64 [k] relative target per concept in `concepts.ids` (None: uniform).
    """
    n = concepts.n_items
    lengths = concepts.lengths()
    tagged = lengths > 0
    ones = np.ones(len(concepts.values))
    if cfg.mode == "none":
        return BalanceResult(np.ones(n), ones, None, None)
    if cfg.mode == "weight":
        w = np.ones(n) if kg_weight is None else np.nan_to_num(np.asarray(kg_weight, np.float64), nan=1.0)
        return BalanceResult(np.clip(w, 0, None), ones, None, None)
    n_c = np.bincount(concepts.index, minlength=len(concepts.ids)).astype(np.float64)
    if cfg.mode == "cap":
        p_c = np.minimum(1.0, cfg.cap / np.maximum(n_c, 1))
        log_miss = np.log1p(-np.minimum(p_c[concepts.index], 1 - 1e-15))
        miss = np.exp(np.add.reduceat(log_miss, concepts.offsets[:-1][tagged])) if tagged.any() else np.zeros(0)
        keep = np.ones(n)
        keep[tagged] = 1.0 - miss
        keep[np.isclose(keep, 1.0)] = 1.0
        return BalanceResult(keep, p_c[concepts.index], float(keep.sum()), None)
    # uniform: w(d) = (1 - u) Σ_{c∈d} π(c) r(d) / R_c over tagged items, u / n_untagged otherwise
    r = _floored(rarity, n) * _floored(quality, n)
    r_item = np.repeat(r, lengths)
    big_r = np.bincount(concepts.index, weights=r_item, minlength=len(concepts.ids))
    pi = np.ones(len(concepts.ids)) if prior is None else np.asarray(prior, np.float64).copy()
    pi[n_c == 0] = 0.0
    if pi.sum() <= 0:
        return BalanceResult(np.where(tagged, 0.0, 1.0), np.zeros(len(concepts.values)), None, pi)
    pi /= pi.sum()
    term = pi[concepts.index] * r_item / np.maximum(big_r[concepts.index], 1e-300)
    w = np.zeros(n)
    if tagged.any():
        w[tagged] = np.add.reduceat(term, concepts.offsets[:-1][tagged])
    untagged = ~tagged
    share = cfg.untagged_share if untagged.any() else 0.0
    w *= 1.0 - share
    if untagged.any():
        w[untagged] = share / untagged.sum()
    return BalanceResult(w, term, None, pi)


def _floored(values: np.ndarray | None, n: int) -> np.ndarray:
    if values is None:
        return np.ones(n)
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v) & (v > 0)
    floor = v[ok].min() if ok.any() else 1.0
    return np.where(ok, v, floor)


def assign_concepts(concepts: Concepts, term: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The concept (node id, -1 for none) each of `rows` represents: one of its concepts picked
    ∝ `term` with the uniform draw `u` [len(rows)] (uniformly when its terms are all zero)."""
    out = np.full(len(rows), -1, dtype=np.int64)
    start, end = concepts.offsets[rows], concepts.offsets[rows + 1]
    has = end > start
    if not has.any():
        return out
    t = np.where(np.isfinite(term) & (term > 0), term, 0.0)
    cum = np.concatenate([[0.0], np.cumsum(t)])
    total = cum[end] - cum[start]
    flat = total <= 0
    pick = np.empty(len(rows), dtype=np.int64)
    # by term: the first position whose running sum passes u of the item's total
    target = cum[start] + u * total
    pick[:] = np.searchsorted(cum, target, side="right") - 1
    # no positive term: uniform among the item's concepts
    pick[flat] = start[flat] + np.minimum((u[flat] * (end - start)[flat]).astype(np.int64), (end - start)[flat] - 1)
    pick = np.clip(pick, start, np.maximum(end - 1, start))
    out[has] = concepts.values[pick[has]]
    return out


def marginal_report(counts: np.ndarray, universe: int, top_k: int) -> dict:
    """Summary of a concept marginal.

    counts: float64 per concept (mass, any scale; concepts with 0 included or not);
    universe: the number of concepts the marginal should cover (those with items plus the
        wanted ones without: prior, trending, boosted), the denominator of the entropy.
    Returns {concepts_covered, zero_item_concepts, normalised_entropy (H / ln universe, 1 =
    uniform over the universe), top_k_share (mass of the k largest), top_k, gini}.
    """
    c = np.asarray(counts, np.float64)
    c = c[c > 0]
    total = c.sum()
    covered = int(len(c))
    universe = max(int(universe), covered)
    if total <= 0:
        return {"concepts_covered": 0, "zero_item_concepts": universe, "normalised_entropy": 0.0,
                "top_k_share": 0.0, "top_k": top_k, "gini": 0.0}
    p = c / total
    h = float(-(p * np.log(p)).sum())
    s = np.sort(p)
    gini = float(1 - 2 * np.sum(np.cumsum(s)) / len(s) + 1 / len(s)) if len(s) > 1 else 0.0
    return {
        "concepts_covered": covered,
        "zero_item_concepts": universe - covered,
        "normalised_entropy": round(h / np.log(universe), 4) if universe > 1 else 1.0,
        "top_k_share": round(float(s[::-1][:top_k].sum()), 4),
        "top_k": top_k,
        "gini": round(gini, 4),
    }
