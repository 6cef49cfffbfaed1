"""The pool's tag statistics (what BM25 and the concept counts need), kept between runs so a
night can update them additively instead of re-reading every sample.

    vocab        sorted distinct folded tags
    df[t]        samples whose tags contain t          (BM25's document frequency)
    occurrences  tag occurrences of t over all samples  (Σ tf; per node: the concept count)
    node[t]      the knowledge-graph node t maps to, -1 when none (concept counts per node)
    n_docs       samples, tagless ones included; n_occurrences = Σ dl, so avgdl = n_occurrences / n_docs

`update` adds the term lists of samples that entered (new or retagged: their current tags)
and subtracts those that left (retagged: their previous tags; removed samples). Because df,
occurrences, n_docs and n_occurrences are sums over samples, the result equals the statistics
of the whole new pool exactly (integers; tested against a recount). `idf_shift` measures how
far the idf (and avgdl) moved, which decides whether stored weights of untouched samples stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph.kg.bm25 import IdfKind, TagOccurrences, idf_of
from graph.kg.tables import TAG_STATS_SCHEMA, conform

__all__ = ["TagStats", "IdfShift", "doc_terms", "idf_shift"]


@dataclass(frozen=True)
class TagStats:
    """See the module docstring. vocab: object [T]; df, occurrences, node: int64 [T]."""

    vocab: np.ndarray
    df: np.ndarray
    occurrences: np.ndarray
    node: np.ndarray
    n_docs: int
    n_occurrences: int

    @property
    def avgdl(self) -> float:
        """Mean tag occurrences per sample (1.0 for an empty pool, as bm25_pairs uses)."""
        return self.n_occurrences / self.n_docs if self.n_docs else 1.0

    def idf(self, kind: IdfKind = "lucene", epsilon: float = 0.25) -> np.ndarray:
        return idf_of(self.df, self.n_docs, kind, epsilon)

    def lookup(self, terms: np.ndarray) -> np.ndarray:
        """Position of each folded tag in `vocab` (int64; -1 when absent)."""
        terms = np.asarray(terms, dtype=object)
        if not len(self.vocab) or not len(terms):
            return np.full(len(terms), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.vocab, terms), len(self.vocab) - 1)
        return np.where(self.vocab[pos] == terms, pos, -1).astype(np.int64)

    def concept_counts(self) -> dict[int, int]:
        """Tag occurrences per knowledge-graph node id (nodes with a count only)."""
        hit = (self.node >= 0) & (self.occurrences > 0)
        nodes, inverse = np.unique(self.node[hit], return_inverse=True)
        counts = np.bincount(inverse, weights=self.occurrences[hit], minlength=len(nodes))
        return {int(n): int(c) for n, c in zip(nodes, counts)}

    @classmethod
    def of(cls, occ: TagOccurrences, node: np.ndarray | None = None) -> "TagStats":
        """The statistics of a whole pool's occurrences; node: kg node id per occ.vocab term."""
        t = occ.n_terms
        pair = occ.doc * max(t, 1) + occ.term
        df = np.bincount(np.unique(pair) % max(t, 1), minlength=t).astype(np.int64) if len(pair) else np.zeros(t, np.int64)
        node = np.full(t, -1, np.int64) if node is None else np.asarray(node, np.int64)
        return cls(vocab=np.asarray(occ.vocab, dtype=object), df=df,
                   occurrences=np.bincount(occ.term, minlength=t).astype(np.int64), node=node,
                   n_docs=int(occ.n_docs), n_occurrences=int(len(occ.doc)))

    def update(self, entered: pa.Array, left: pa.Array,
               map_nodes: Callable[[np.ndarray], np.ndarray] | None = None) -> "TagStats":
        """The statistics after samples with term lists `entered` joined and `left` went
        (`doc_terms` lists: one per sample, folded tags with repeats). A retagged sample is in
        both (its new and its old tags). map_nodes(new folded tags) -> node ids for tags the
        statistics did not hold (default: -1). Tags whose count falls to zero are dropped."""
        in_doc, in_term = _flat(entered)
        out_doc, out_term = _flat(left)
        vocab = np.unique(np.concatenate([self.vocab, in_term, out_term]).astype(object)) \
            if len(in_term) + len(out_term) else self.vocab
        t = len(vocab)
        old = np.searchsorted(vocab, self.vocab) if len(self.vocab) else np.zeros(0, np.int64)
        df = np.zeros(t, np.int64)
        occurrences = np.zeros(t, np.int64)
        node = np.full(t, -1, np.int64)
        df[old], occurrences[old], node[old] = self.df, self.occurrences, self.node
        for doc, term, sign in ((in_doc, in_term, 1), (out_doc, out_term, -1)):
            pos = np.searchsorted(vocab, term) if len(term) else np.zeros(0, np.int64)
            occurrences += sign * np.bincount(pos, minlength=t)
            distinct = np.unique(doc * t + pos) % t if len(pos) else pos
            df += sign * np.bincount(distinct, minlength=t)
        if (df < 0).any() or (occurrences < 0).any():
            raise ValueError("TagStats.update: more tags left than the statistics held "
                             "(the stored statistics do not describe this pool)")
        fresh = np.ones(t, bool)
        fresh[old] = False
        fresh &= df > 0
        if fresh.any() and map_nodes is not None:
            node[fresh] = np.asarray(map_nodes(vocab[fresh]), np.int64)
        keep = df > 0
        return TagStats(vocab=vocab[keep], df=df[keep], occurrences=occurrences[keep], node=node[keep],
                        n_docs=self.n_docs + len(entered) - len(left),
                        n_occurrences=self.n_occurrences + len(in_term) - len(out_term))

    # ---- stored form ---------------------------------------------------------------
    def to_table(self) -> pa.Table:
        """TAG_STATS_SCHEMA rows (one per tag); the totals go with `totals()`."""
        return conform(pa.table({
            "tag": pa.array(self.vocab.tolist(), pa.string()), "df": self.df, "occurrences": self.occurrences,
            "node": pa.array(np.where(self.node >= 0, self.node, 0), pa.int64(), mask=self.node < 0),
        }), TAG_STATS_SCHEMA)

    def totals(self) -> dict[str, int]:
        return {"n_docs": self.n_docs, "n_occurrences": self.n_occurrences}

    @classmethod
    def from_table(cls, table: pa.Table, totals: dict) -> "TagStats":
        table = table.sort_by("tag")
        return cls(vocab=np.asarray(table["tag"].to_pylist(), dtype=object),
                   df=table["df"].to_numpy().astype(np.int64),
                   occurrences=table["occurrences"].to_numpy().astype(np.int64),
                   node=pc.fill_null(table["node"], -1).to_numpy().astype(np.int64),
                   n_docs=int(totals["n_docs"]), n_occurrences=int(totals["n_occurrences"]))


@dataclass(frozen=True)
class IdfShift:
    """How far the statistics moved from `old` to `new`.

    mean: relative idf change |idf_new/idf_old - 1| averaged over the old (sample, tag)
        pairs (df-weighted over the old tags): the typical relative change of a stored score;
    max: the largest relative change of any old tag; avgdl: |avgdl_new/avgdl_old - 1|;
    rel: float64 [len(new.vocab)] relative change per new tag (0 for tags the old statistics
        lacked: only new samples hold them).
    """

    mean: float
    max: float
    avgdl: float
    rel: np.ndarray

    @property
    def overall(self) -> float:
        """The number a tolerance is compared with: max(mean idf shift, avgdl shift)."""
        return max(self.mean, self.avgdl)


def idf_shift(old: TagStats, new: TagStats, kind: IdfKind = "lucene", epsilon: float = 0.25) -> IdfShift:
    idf_old, idf_new = old.idf(kind, epsilon), new.idf(kind, epsilon)
    pos = new.lookup(old.vocab)  # -1: tag gone from the pool (its idf there is that of df 0)
    gone_idf = idf_of(np.zeros(1), new.n_docs, kind, epsilon)[0] if kind == "lucene" else 0.0
    moved = np.where(pos >= 0, idf_new[np.maximum(pos, 0)], gone_idf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_old = np.where(idf_old != 0, np.abs(moved / idf_old - 1), np.where(moved != 0, np.inf, 0.0))
    mass = old.df.sum()
    rel_new = np.zeros(len(new.vocab))
    rel_new[pos[pos >= 0]] = rel_old[pos >= 0]
    avgdl = abs(new.avgdl / old.avgdl - 1) if old.avgdl else 0.0
    return IdfShift(mean=float((old.df * rel_old).sum() / mass) if mass else 0.0,
                    max=float(rel_old.max()) if len(rel_old) else 0.0, avgdl=float(avgdl), rel=rel_new)


def doc_terms(occ: TagOccurrences) -> pa.ListArray:
    """Per sample, its folded tags sorted (repeats kept): list<string> [n_docs]; the stored form
    (`weights.terms`) that tells a later run whether a sample's tags changed."""
    order = np.lexsort((occ.term, occ.doc))
    offsets = np.zeros(occ.n_docs + 1, np.int32)
    np.cumsum(np.bincount(occ.doc, minlength=occ.n_docs), out=offsets[1:])
    values = pa.array(occ.vocab.tolist(), pa.string()).take(pa.array(occ.term[order]))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _flat(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(sample row int64, folded tag object) per occurrence of a list<string> array."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks else pa.array([], pa.list_(pa.string()))
    if not len(lists):
        return np.zeros(0, np.int64), np.zeros(0, object)
    flat = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    valid = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    return parent[valid], np.asarray(flat.filter(pc.is_valid(flat)).to_pylist(), dtype=object)
