"""Per-sample sampling weights from caption tags, the knowledge graph and BM25.

For sample d with tags t (BM25 over samples' tag lists, `graph.kg.bm25`), mapped node v(t):

    h(v)      = (1 + ln(1 + ancestors(v))) / (1 + ln(1 + descendants(v)))
                (specific concepts up, broad ones down; 1 for unmapped tags)
    boost(v)  = kg.attrs['boost'][v] (prompts, trending; 1 for unmapped tags)
    raw(d)    = Σ_t bm25(t, d) · h(v(t)) · boost(v(t))
    weight(d) = clip(raw(d) / mean(raw over samples with ≥ 1 tag), w_min = 0.05, w_max = 20)
                (samples with no tags: weight 1)

t runs over the sample's distinct folded tags (BM25 already counts repeats through tf);
ancestors / descendants are the distinct nodes reachable up / down the parent edges. The
clip makes the mean over tagged samples only approximately 1. Output columns
(graph.kg.tables.WEIGHTS_SCHEMA): bm25 = Σ_t bm25(t, d); hierarchy = Σ bm25·h / Σ bm25;
boost = Σ bm25·boost / Σ bm25 (both 1 when Σ bm25 = 0); tags_total (valid tags: non-null
strings that fold to something), tags_matched (of those, mapped to a kept node); nodes (the
matched node ids in tag order, each node once).

Tags map to kept nodes only: exact folded title, then folded alias (redirect) title, then,
optionally, the most similar kept title by text embedding (cosine ≥ min_similarity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from graph.kg.bm25 import TagOccurrences, bm25_pairs, tag_occurrences
from graph.kg.model import KnowledgeGraph
from graph.kg.tagstats import TagStats, doc_terms
from graph.kg.tables import WEIGHTS_SCHEMA, conform
from graph.kg.textnorm import fold, name_index

# embed(texts) -> float32 (len(texts), dim), rows L2-normalised.
Embedder = Callable[[list[str]], np.ndarray]

# Texts per embed() call and per similarity search: bounds memory (65,536 x 1024 float32 = 256 MiB).
_EMBED_BATCH = 65_536


@dataclass
class WeightConfig:
    """Sample weight parameters (YAML: curation.config.typed.from_dict).

    k1, b: BM25 term-frequency saturation and length normalisation; idf: 'lucene' (positive)
    or 'okapi' (rank_bm25, floored); w_min, w_max: clip of the normalised weight;
    use_embeddings: map tags that no title or alias matches to the nearest kept title by text
    embedding, if cosine ≥ embed_min_similarity.
    mode: 'full' recomputes every sample; 'incremental' (nightly) updates the stored tag
    statistics additively and recomputes only new and retagged samples, plus those holding a
    tag whose idf moved more than idf_tolerance (relative), as long as the mean idf shift and
    the avgdl shift stay within idf_tolerance; otherwise it recomputes fully
    (curation.steps.kg.incremental). The summary says which.
    """

    k1: float = 1.5
    b: float = 0.75
    idf: Literal["lucene", "okapi"] = "lucene"
    w_min: float = 0.05
    w_max: float = 20.0
    embed_min_similarity: float = 0.8
    use_embeddings: bool = False
    mode: Literal["full", "incremental"] = "full"
    idf_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.w_min <= self.w_max:
            raise ValueError(f"need 0 < w_min <= w_max, got {self.w_min}, {self.w_max}")
        if self.mode not in ("full", "incremental"):
            raise ValueError(f"mode must be 'full' or 'incremental', got {self.mode!r}")
        if not 0 <= self.idf_tolerance < 1:
            raise ValueError(f"need 0 <= idf_tolerance < 1, got {self.idf_tolerance}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")

    def producer(self) -> str:
        """Short provenance string of the parameters (the weight_producer column)."""
        emb = f"embed cos>={self.embed_min_similarity:g}" if self.use_embeddings else "embed off"
        return (f"graph.kg.weights bm25(k1={self.k1:g},b={self.b:g},idf={self.idf}) "
                f"clip[{self.w_min:g},{self.w_max:g}] {emb}")


@dataclass(frozen=True)
class TagMatch:
    """How each of k tags mapped: node int32 [k] position (-1: unmatched); how object [k]
    'title' | 'alias' | 'embedding' | None; similarity float32 [k] (1 for text matches,
    the cosine for embedding matches, NaN when unmatched)."""

    node: np.ndarray
    how: np.ndarray
    similarity: np.ndarray


class TagMapper:
    """Tag -> kept node: folded title, then folded alias, then (with `embed`) nearest title.

    embed: texts -> L2-normalised float32 vectors; the kept titles are embedded once, on the
    first tag that text does not match. min_similarity: cosine floor for embedding matches.
    """

    def __init__(self, kg: KnowledgeGraph, *, embed: Embedder | None = None,
                 min_similarity: float = 0.8) -> None:
        self.kg = kg
        self.embed = embed
        self.min_similarity = min_similarity
        self._names = name_index(kg, fold)
        self._title_index = None  # graph.knn FaissFlatIndex over kept titles, built on demand

    def map(self, tags: Sequence) -> TagMatch:
        """Map each tag (folded here; non-strings never match)."""
        k = len(tags)
        node = np.full(k, -1, np.int32)
        how = np.full(k, None, dtype=object)
        sim = np.full(k, np.nan, np.float32)
        keys = [fold(t) if isinstance(t, str) else "" for t in tags]
        for i, key in enumerate(keys):
            hit = self._names.get(key)
            if hit is not None:
                node[i], how[i], sim[i] = hit[0], hit[1], 1.0
        if self.embed is not None:
            rest = [i for i, key in enumerate(keys) if key and node[i] < 0]
            for start in range(0, len(rest), _EMBED_BATCH):
                rows = np.asarray(rest[start:start + _EMBED_BATCH], np.int64)
                best, cos = self._nearest([keys[i] for i in rows])
                ok = (best >= 0) & (cos >= self.min_similarity)
                node[rows[ok]], how[rows[ok]], sim[rows[ok]] = best[ok], "embedding", cos[ok]
        return TagMatch(node=node, how=how, similarity=sim)

    def _nearest(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Most similar kept title per text: (position int64, -1 if none; cosine float32)."""
        if self._title_index is None:
            self._title_index = self._build_title_index()
        vectors, usable = _unit_rows(self.embed(texts))
        best = np.full(len(texts), -1, np.int64)
        cos = np.full(len(texts), -np.inf, np.float32)
        if usable.any() and self._title_index.ntotal:
            found = self._title_index.search(vectors[usable], 1)
            best[usable], cos[usable] = found.ids[:, 0], found.sims[:, 0]
        return best, cos

    def _build_title_index(self):
        from graph.knn import FaissFlatIndex  # faiss loads only when embeddings are used

        index = FaissFlatIndex()
        kept = np.flatnonzero(self.kg.kept & np.array([isinstance(t, str) for t in self.kg.title], bool))
        for start in range(0, len(kept), _EMBED_BATCH):
            pos = kept[start:start + _EMBED_BATCH]
            vectors, usable = _unit_rows(self.embed([fold(self.kg.title[p]) for p in pos]))
            if usable.any():
                index.add(vectors[usable], ids=pos[usable].astype(np.int64))
        return index


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 rows scaled to unit norm, bool mask of rows that have a direction: finite and
    non-zero; an embedder may return zeros for text it cannot represent)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1) if len(x) else np.zeros(0, np.float32)
    usable = np.isfinite(norms) & (norms > 0)
    return x / np.where(usable, norms, 1)[:, None], usable


def hierarchy_counts(kg: KnowledgeGraph) -> tuple[np.ndarray, np.ndarray]:
    """(ancestors int32 [n], descendants int32 [n]): distinct nodes reachable upward / downward
    through parent edges (child -> parent), dropped nodes included (they still shape the tree).

    Transitive closure by repeated squaring of the sparse reachability matrix, R <- R + R·R,
    over the nodes that have parent edges: log2(depth) sparse products. A cycle (which a
    hierarchy should not have) cannot loop forever: the closure is finite and a node never
    counts itself.
    """
    n = kg.n
    ancestors, descendants = np.zeros(n, np.int32), np.zeros(n, np.int32)
    if not len(kg.parent_src):
        return ancestors, descendants
    nodes, local = np.unique(np.concatenate([kg.parent_src, kg.parent_dst]), return_inverse=True)
    k, e = len(nodes), len(kg.parent_src)
    reach = sp.csr_matrix((np.ones(e, np.float32), (local[:e], local[e:])), shape=(k, k))
    reach.data[:] = 1  # duplicate edges were summed
    while True:
        grown = reach + reach @ reach
        grown.data[:] = 1  # keep 0/1: path counts would grow without bound
        if grown.nnz == reach.nnz:
            break
        reach = grown
    on_cycle = reach.diagonal() > 0
    ancestors[nodes] = np.diff(reach.indptr) - on_cycle
    descendants[nodes] = np.bincount(reach.indices, minlength=k) - on_cycle
    return ancestors, descendants


def hierarchy_factor(ancestors: np.ndarray, descendants: np.ndarray) -> np.ndarray:
    """h = (1 + ln(1 + ancestors)) / (1 + ln(1 + descendants)), float64; 1 for isolated nodes."""
    return (1 + np.log1p(ancestors.astype(np.float64))) / (1 + np.log1p(descendants.astype(np.float64)))


def tag_counts(kg: KnowledgeGraph, tags: pa.Array | pa.ChunkedArray | Sequence,
               cfg: WeightConfig | None = None, *, embed: Embedder | None = None) -> np.ndarray:
    """Tag occurrences per node (int64 [n]) over all samples' tags, mapped as in
    `sample_weights`; sets kg.attrs 'tag_count' to it and 'ancestors' / 'descendants'."""
    cfg = cfg or WeightConfig()
    occ = tag_occurrences(tags)
    term_node = _map_terms(occ, kg, cfg, embed).node
    occ_node = term_node[occ.term]
    counts = np.bincount(occ_node[occ_node >= 0], minlength=kg.n).astype(np.int64)
    kg.attrs["tag_count"] = counts
    kg.attrs["ancestors"], kg.attrs["descendants"] = hierarchy_counts(kg)
    return counts


def sample_weights(ids: pa.Array | pa.ChunkedArray | Sequence[str],
                   tags: pa.Array | pa.ChunkedArray | Sequence, kg: KnowledgeGraph,
                   cfg: WeightConfig | None = None, *, embed: Embedder | None = None,
                   graph_version: str | None = None) -> pa.Table:
    """One WEIGHTS_SCHEMA row per id, in input order (see the module docstring).

    ids: sample ids [n]; tags: per-sample tag lists [n] (pyarrow list<string> or Python lists;
    null / empty / junk rows and tags are skipped). embed: needed when cfg.use_embeddings.
    graph_version: which graph `kg` is (e.g. 'kg_nodes v3'), put before the parameters in
    weight_producer.
    """
    return weigh(ids, tags, kg, cfg, embed=embed, graph_version=graph_version).table


@dataclass(frozen=True)
class Weighed:
    """What `weigh` computed: the WEIGHTS_SCHEMA table; mean_raw, the normaliser (mean raw
    score over tagged samples; 0 when none scored); stats, the corpus statistics the scores
    used (given, or those of these samples, with each tag's node)."""

    table: pa.Table
    mean_raw: float
    stats: TagStats


def weigh(ids: pa.Array | pa.ChunkedArray | Sequence[str], tags: pa.Array | pa.ChunkedArray | Sequence,
          kg: KnowledgeGraph, cfg: WeightConfig | None = None, *, embed: Embedder | None = None,
          graph_version: str | None = None, stats: TagStats | None = None,
          mean_raw: float | None = None) -> Weighed:
    """`sample_weights`, optionally for a subset of the pool scored against the whole pool:
    stats gives the idf and avgdl (every tag of `tags` must be in it), mean_raw the normaliser
    (so the rows share the scale of weights computed earlier). Without them both come from
    these samples, as in a full run."""
    cfg = cfg or WeightConfig()
    ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
    occ = tag_occurrences(tags)
    n = occ.n_docs
    if len(ids) != n:
        raise ValueError(f"sample_weights: {len(ids)} ids but {n} tag lists")
    idf_values = avgdl = None
    if stats is not None:
        pos = stats.lookup(occ.vocab)
        if (pos < 0).any():
            raise ValueError(f"weigh: {int((pos < 0).sum())} tags are not in the given statistics, "
                             f"e.g. {occ.vocab[pos < 0][0]!r}")
        idf_values, avgdl = stats.idf(cfg.idf)[pos], stats.avgdl
    pairs = bm25_pairs(occ.doc, occ.term, n, occ.n_terms, k1=cfg.k1, b=cfg.b, idf=cfg.idf,
                       idf_values=idf_values, avgdl=avgdl)
    term_node = _map_terms(occ, kg, cfg, embed).node

    matched = term_node >= 0
    h_node = hierarchy_factor(*hierarchy_counts(kg))
    boost_node = np.asarray(kg.attrs.get("boost", np.ones(kg.n)), np.float64)
    term_h = np.where(matched, h_node[np.maximum(term_node, 0)], 1.0)
    term_boost = np.where(matched, boost_node[np.maximum(term_node, 0)], 1.0)

    s = pairs.score
    h, bst = term_h[pairs.term], term_boost[pairs.term]
    bm25 = np.bincount(pairs.doc, s, minlength=n)
    raw = np.bincount(pairs.doc, s * h * bst, minlength=n)
    has_sum = bm25 > 0
    hierarchy = np.ones(n)
    boost = np.ones(n)
    hierarchy[has_sum] = np.bincount(pairs.doc, s * h, minlength=n)[has_sum] / bm25[has_sum]
    boost[has_sum] = np.bincount(pairs.doc, s * bst, minlength=n)[has_sum] / bm25[has_sum]

    tags_total = np.bincount(occ.doc, minlength=n)
    occ_node = term_node[occ.term]
    tags_matched = np.bincount(occ.doc[occ_node >= 0], minlength=n)
    tagged = tags_total > 0
    weight = np.ones(n)
    if mean_raw is None:
        mean_raw = float(raw[tagged].mean()) if tagged.any() else 0.0
    # mean 0 only when every tagged sample scored 0 (okapi idf exactly 0, or zero boosts):
    # no signal to weight by, so everything stays neutral.
    if mean_raw > 0:
        weight[tagged] = np.clip(raw[tagged] / mean_raw, cfg.w_min, cfg.w_max)

    table = pa.table({
        "id": ids, "weight": weight, "bm25": bm25, "hierarchy": hierarchy, "boost": boost,
        "tags_total": tags_total, "tags_matched": tags_matched,
        "nodes": _nodes_lists(occ, occ_node, kg, n),
        "weight_producer": pa.array([f"{graph_version}; {cfg.producer()}" if graph_version else cfg.producer()] * n,
                                    pa.string()),
        "terms": doc_terms(occ),
    })
    node_ids = np.where(matched, kg.node_id[np.maximum(term_node, 0)], -1) if kg.n else np.full(len(term_node), -1)
    return Weighed(table=conform(table, WEIGHTS_SCHEMA), mean_raw=mean_raw,
                   stats=stats if stats is not None else TagStats.of(occ, node_ids))


def map_tag_nodes(kg: KnowledgeGraph, cfg: WeightConfig, embed: Embedder | None, tags: Sequence[str]) -> np.ndarray:
    """Node id (int64; -1 when unmatched) of each folded tag, mapped as `weigh` maps them."""
    node = _mapper(kg, cfg, embed).map(list(tags)).node
    return np.where(node >= 0, kg.node_id[np.maximum(node, 0)], -1).astype(np.int64) if kg.n else \
        np.full(len(node), -1, np.int64)


def _map_terms(occ: TagOccurrences, kg: KnowledgeGraph, cfg: WeightConfig,
               embed: Embedder | None) -> TagMatch:
    """TagMatch for each distinct folded tag of `occ`."""
    return _mapper(kg, cfg, embed).map(list(occ.vocab))


def _mapper(kg: KnowledgeGraph, cfg: WeightConfig, embed: Embedder | None) -> TagMapper:
    if cfg.use_embeddings and embed is None:
        raise ValueError("WeightConfig.use_embeddings is set but no embed function was given")
    return TagMapper(kg, embed=embed if cfg.use_embeddings else None, min_similarity=cfg.embed_min_similarity)


def _nodes_lists(occ: TagOccurrences, occ_node: np.ndarray, kg: KnowledgeGraph, n: int) -> pa.ListArray:
    """Per sample, the matched node ids in tag order, each node once (first occurrence)."""
    hit = occ_node >= 0
    doc, node = occ.doc[hit], occ_node[hit].astype(np.int64)
    _, first = np.unique(doc * max(kg.n, 1) + node, return_index=True)
    first.sort()  # back to occurrence order: samples in order, tags in order within each
    doc, node = doc[first], node[first]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(doc, minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(kg.node_id[node], pa.int64()))
