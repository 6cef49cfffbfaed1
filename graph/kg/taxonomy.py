"""Taxonomy from caption tags: hierarchical k-means with resampling, named parents attached
to the knowledge graph.

Re-implemented in the spirit of Vo et al. 2024 (hierarchical k-means for data curation), not
copied. Level 0 is the set of distinct (folded) tags, each embedded by a text embedder. Level
l ≥ 1 clusters the points of level l−1 (tags, then the previous level's centroids) with
spherical k-means weighted by tag frequency, then `resample_rounds` times moves each centroid
to the mean of the `resample_size` members nearest to it and re-assigns every point: the
centroids move toward the dense centres of their clusters instead of being pulled by
outliers, which is what makes the levels useful for balancing.

Each parent is named by a namer: 'central' (the child nearest the centroid, default) or
'frequent' (the child with the most tag occurrences under it); a names file (JSON or YAML
mapping a default name or a key 'L<level>/<cluster>' to a name) may override any of them.

Attachment to the graph: a tag that matches a kept node (title or alias) is that node;
other tags become new level-0 'taxonomy' nodes. Parents are new 'taxonomy' nodes (attr
`level`), linked child -> parent. Each top-level parent is attached (parent edge) to the
nearest kept article by title embedding, if the cosine similarity is at least
`attach_min_similarity` and the article is not already below it. New nodes carry their source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graph.kg.model import KnowledgeGraph
from graph.kg.textembed import Embed, normalize_rows
from graph.kg.textnorm import fold


@dataclass
class TaxonomyConfig:
    """levels: clusters per level, bottom-up (each level is clipped to the points below it);
    resample_rounds / resample_size: centroid resampling (0 rounds = plain k-means);
    niter: k-means iterations per level; namer: 'central' or 'frequent'; names_file: name
    overrides; min_tag_count: tags seen fewer times are ignored; attach_min_similarity:
    cosine in [-1, 1] for attaching top-level parents to articles; attach_candidates: the
    articles considered for attachment (highest PageRank first; all when PageRank is absent)."""

    levels: list[int] = field(default_factory=lambda: [64, 8])
    resample_rounds: int = 3
    resample_size: int = 16
    niter: int = 20
    seed: int = 0
    namer: str = "central"
    names_file: str | None = None
    min_tag_count: int = 1
    attach_min_similarity: float = 0.5
    attach_candidates: int = 100_000

    def __post_init__(self) -> None:
        if not self.levels or any(k < 1 for k in self.levels):
            raise ValueError(f"taxonomy.levels must be positive cluster counts, got {self.levels}")
        if self.namer not in ("central", "frequent"):
            raise ValueError(f"taxonomy.namer must be 'central' or 'frequent', got {self.namer!r}")
        if self.resample_rounds < 0 or self.resample_size < 1 or self.niter < 1:
            raise ValueError("taxonomy: resample_rounds >= 0, resample_size >= 1, niter >= 1")


@dataclass
class Level:
    """One level: `assign[i]` is the cluster of point i of the level below; centroids unit-norm;
    `names[c]`, `counts[c]` (tag occurrences under cluster c)."""

    assign: np.ndarray
    centroids: np.ndarray
    names: list[str]
    counts: np.ndarray


def spherical_kmeans(x: np.ndarray, k: int, weights: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k, d] unit-norm, assign [n]) for unit rows x; greedy k-means++ seeding
    (weighted; 1 − cosine is half the squared distance of unit vectors), cosine similarity,
    `weights` scale each point's pull. Empty clusters are re-seeded at the point worst served."""
    n = len(x)
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, np.float64)
    chosen = [int(rng.choice(n, p=w / w.sum()))]
    dist = np.maximum(1.0 - x @ x[chosen[0]], 0.0).astype(np.float64)
    trials = 2 + int(np.log(k))  # greedy: the best of a few D² draws, as in scikit-learn
    for _ in range(1, k):
        p = dist * w
        cand = rng.choice(n, trials, p=p / p.sum()) if p.sum() > 0 else rng.integers(n, size=trials)
        cand_dist = np.minimum(dist[None, :], np.maximum(1.0 - x[cand] @ x.T, 0.0))
        best = int(np.argmin(cand_dist @ w))
        chosen.append(int(cand[best]))
        dist = cand_dist[best]
    c = x[chosen].copy()
    assign = np.zeros(n, np.int64)
    for _ in range(niter):
        sims = x @ c.T
        new = sims.argmax(1)
        if np.array_equal(new, assign) and _ > 0:
            break
        assign = new
        c = _centroids(x, assign, w, k)
        empty = np.flatnonzero(np.linalg.norm(c, axis=1) == 0)
        if len(empty):
            worst = np.argsort(sims[np.arange(n), assign])[:len(empty)]
            c[empty] = x[worst]
    return c, (x @ c.T).argmax(1)


def _centroids(x: np.ndarray, assign: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    c = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(c, assign, x * w[:, None])
    return normalize_rows(c)


def resample(x: np.ndarray, c: np.ndarray, rounds: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Move each centroid to the mean of its `size` nearest members, `rounds` times,
    re-assigning all points each round. Returns (centroids, assign)."""
    assign = (x @ c.T).argmax(1)
    for _ in range(rounds):
        sim = np.einsum("ij,ij->i", x, c[assign])
        order = np.lexsort((-sim, assign))  # by cluster, nearest first
        starts = np.searchsorted(assign[order], np.arange(len(c)))
        rank = np.arange(len(x)) - starts[assign[order]]
        core = order[rank < size]
        moved = _centroids(x[core], assign[core], np.ones(len(core)), len(c))
        c = np.where(np.linalg.norm(moved, axis=1, keepdims=True) > 0, moved, c).astype(np.float32)
        assign = (x @ c.T).argmax(1)
    return c, assign


def hierarchical_kmeans(x: np.ndarray, names: list[str], counts: np.ndarray, cfg: TaxonomyConfig) -> list[Level]:
    """Levels bottom-up over unit vectors x (one per tag) with names and occurrence counts."""
    levels: list[Level] = []
    points, point_names, point_counts = np.asarray(x, np.float32), list(names), np.asarray(counts, np.int64)
    for depth, k in enumerate(cfg.levels, start=1):
        k = min(k, len(points) - 1)
        if k < 1:
            break  # nothing left to group
        c, _ = spherical_kmeans(points, k, np.maximum(point_counts, 1), cfg.niter, cfg.seed + depth)
        c, assign = resample(points, c, cfg.resample_rounds, cfg.resample_size)
        used = np.unique(assign)  # drop clusters that ended empty; renumber densely
        remap = np.full(k, -1, np.int64)
        remap[used] = np.arange(len(used))
        assign, c = remap[assign], c[used]
        level_counts = np.bincount(assign, weights=point_counts, minlength=len(used)).astype(np.int64)
        level_names = _name_clusters(points, point_names, point_counts, assign, c, cfg.namer)
        levels.append(Level(assign, c, level_names, level_counts))
        points, point_names, point_counts = c, level_names, level_counts
    return levels


def _name_clusters(x, names, counts, assign, c, namer: str) -> list[str]:
    key = np.einsum("ij,ij->i", x, c[assign]) if namer == "central" else counts.astype(np.float64)
    order = np.lexsort((-key, assign))
    first = order[np.searchsorted(assign[order], np.arange(len(c)))]
    return [names[i] for i in first]


def load_names(path: str | None) -> dict[str, str]:
    """Name overrides from a JSON or YAML mapping (default name or 'L<level>/<cluster>' -> name)."""
    if not path:
        return {}
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: a names file maps strings to strings")
    return data


def augment_with_taxonomy(kg: KnowledgeGraph, tags: list[str], counts: np.ndarray, cfg: TaxonomyConfig,
                          embed: Embed, *, source: str = "taxonomy", match=None) -> dict:
    """Add a taxonomy learned from distinct `tags` (with occurrence `counts`) to `kg` in place.

    match: callable list[str] -> int array of node positions (-1 unmatched) that maps tags to
    existing kept nodes (title or alias); new nodes get `source`. Returns a summary."""
    tags, counts = _distinct(tags, counts, cfg.min_tag_count)
    summary = {"tags": len(tags), "matched_tags": 0, "new_tag_nodes": 0, "parents": [], "attached": 0}
    if len(tags) < 2:
        return summary
    kg.attrs.setdefault("level", np.zeros(kg.n, np.int32))
    pos = np.asarray(match(tags), np.int64) if match is not None else np.full(len(tags), -1, np.int64)
    summary["matched_tags"] = int((pos >= 0).sum())
    new = np.flatnonzero(pos < 0)
    if len(new):
        pos[new] = kg.add_nodes([tags[i] for i in new], "taxonomy", source,
                                attrs={"level": np.zeros(len(new), np.int32)})
    summary["new_tag_nodes"] = len(new)
    # tags naming one node ('dog', 'puppy' -> Dog) are one point: a node gets one parent
    pos, first, inverse = np.unique(pos, return_index=True, return_inverse=True)
    counts = np.bincount(inverse, weights=counts).astype(np.int64)
    names = [str(kg.title[p]) if kg.kind[p] == "article" else tags[i] for p, i in zip(pos, first)]
    if len(pos) < 2:
        return summary

    x = embed(names)
    levels = hierarchical_kmeans(x, names, counts, cfg)
    overrides = load_names(cfg.names_file)
    below = pos  # node position of each point of the level below
    for depth, level in enumerate(levels, start=1):
        titles = [overrides.get(f"L{depth}/{c}", overrides.get(name, name)) for c, name in enumerate(level.names)]
        parents = kg.add_nodes(titles, "taxonomy", source, attrs={"level": np.full(len(titles), depth, np.int32)})
        child = below
        kg.add_parent_edges(child, parents[level.assign])
        summary["parents"].append(len(titles))
        below = parents
    if levels:
        summary["attached"] = _attach(kg, below, levels[-1].names, embed, cfg)
    return summary


def _distinct(tags: list[str], counts: np.ndarray, min_count: int) -> tuple[list[str], np.ndarray]:
    """Merge tags that fold to the same text (keep the most frequent spelling); drop rare ones."""
    total: dict[str, int] = {}
    spelling: dict[str, tuple[int, str]] = {}
    for tag, n in zip(tags, np.asarray(counts, np.int64)):
        if not isinstance(tag, str) or not fold(tag):
            continue
        key = fold(tag)
        total[key] = total.get(key, 0) + int(n)
        if n > spelling.get(key, (-1, ""))[0]:
            spelling[key] = (int(n), tag)
    keys = sorted(k for k, n in total.items() if n >= min_count)
    return [spelling[k][1] for k in keys], np.array([total[k] for k in keys], np.int64)


def _attach(kg: KnowledgeGraph, top: np.ndarray, names: list[str], embed: Embed, cfg: TaxonomyConfig) -> int:
    """Parent edges top-level parent -> nearest kept article (cosine >= threshold), skipping
    an article already below the parent (that edge would close a cycle)."""
    articles = np.flatnonzero((kg.kind == "article") & kg.kept)
    if not len(articles):
        return 0
    pr = kg.attrs.get("pagerank")
    if pr is not None and len(articles) > cfg.attach_candidates:
        articles = articles[np.argsort(-pr[articles], kind="stable")[:cfg.attach_candidates]]
    a = embed([str(t) for t in kg.title[articles]])
    q = embed(list(names))
    sims = q @ a.T
    below = [set(kg.below(root)) for root in top.tolist()]
    added = 0
    for i, parent in enumerate(top):
        for j in np.argsort(-sims[i], kind="stable")[:8]:
            if sims[i, j] < cfg.attach_min_similarity:
                break
            if articles[j] not in below[i]:
                kg.add_parent_edges([parent], [articles[j]])
                added += 1
                break
    return added
