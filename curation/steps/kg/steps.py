"""Knowledge-graph steps over the lake: `kg build`, `kg augment`, `kg weights`.

- build: Wikipedia dumps (SQL `page` + `pagelinks` [+ `linktarget`, `redirect`], or the XML
  export) -> articles, links and aliases -> PageRank -> pruning -> `kg_nodes`, `kg_edges`.
- augment: the pool's tags (tags column, else tag-style captions) -> taxonomy of named
  parents attached to the graph; prompt-log boosts and trending concepts -> new versions of
  `kg_nodes` / `kg_edges`. Re-running replaces the previous taxonomy, boosts and trending nodes
  (they are derived), the Wikipedia part is kept as built; the boosts and fills that hard-case
  decisions recorded in `hardcases` are then applied again (`curate hardcases`).
- weights: every pool item -> one `weights` row (BM25 x hierarchy x boost; graph.kg.weights).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage.lake import Lake
from curation.storage.schemas import CAPTIONS, HARDCASES, KG_EDGES, KG_NODES, LABELS, WEIGHTS
from curation.steps.summary import StepSummary
from graph.kg.model import KnowledgeGraph
from graph.kg.prune import PruneConfig, prune
from graph.kg.taxonomy import TaxonomyConfig
from graph.kg.weights import WeightConfig
from operators.models.encoders import EncoderConfig


@dataclass
class KgBuildConfig:
    """Dump files (paths or URIs readable locally; .gz / .bz2 streamed): either `xml` (the
    pages-articles export) or `page` + `pagelinks` (+ `linktarget` for the current pagelinks
    schema, + `redirect` for aliases). damping / tol / pagerank_backend: PageRank (tol is the
    L1 change of the whole score vector). prune: PageRank and generatability pruning."""

    page: str | None = None
    pagelinks: str | None = None
    linktarget: str | None = None
    redirect: str | None = None
    xml: str | None = None
    damping: float = field(default=0.85, metadata={"gt": 0, "lt": 1})
    tol: float = field(default=1e-9, metadata={"gt": 0})
    pagerank_backend: str = "auto"
    prune: PruneConfig = field(default_factory=PruneConfig)

    def validate(self) -> None:
        if bool(self.xml) == bool(self.page or self.pagelinks):
            raise ValueError("kg.build: give either `xml` or `page` + `pagelinks` dump files")
        if not self.xml and not (self.page and self.pagelinks):
            raise ValueError("kg.build: the SQL build needs both `page` and `pagelinks`")


@dataclass
class KgAugmentConfig:
    """embedder: text embedder for tags and titles: 'hashing' (offline, surface forms) or
    'encoder' (the text tower of `encoder`). taxonomy: hierarchical k-means options.
    max_tag_words: longest phrase of a tag-style caption counted as a tag. prompts: a prompt
    log (text, one per line, or Parquet/CSV/JSONL with `prompt_column`); prompt_alpha: boost
    = 1 + alpha·ln(1 + prompts mentioning the node). trending: a list of concepts (one per
    line, optional tab + factor); trending_factor: their default boost."""

    embedder: str = "hashing"
    encoder: EncoderConfig | None = None
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    max_tag_words: int = field(default=4, metadata={"min": 1})
    prompts: str | None = None
    prompt_column: str = "prompt"
    prompt_alpha: float = field(default=1.0, metadata={"min": 0})
    trending: str | None = None
    trending_factor: float = field(default=2.0, metadata={"gt": 0})

    def embed(self):
        from graph.kg.textembed import EncoderEmbedder, HashingEmbedder

        if self.embedder == "hashing":
            return HashingEmbedder()
        if self.embedder == "encoder":
            if self.encoder is None:
                raise ValueError("kg.augment.embedder 'encoder' needs kg.augment.encoder (an encoder config)")
            return EncoderEmbedder(self.encoder)
        raise ValueError(f"kg.augment.embedder must be 'hashing' or 'encoder', got {self.embedder!r}")


@dataclass
class KgConfig:
    build: KgBuildConfig = field(default_factory=KgBuildConfig)
    augment: KgAugmentConfig = field(default_factory=KgAugmentConfig)
    weights: WeightConfig = field(default_factory=WeightConfig)


def load_graph(lake: Lake) -> tuple[KnowledgeGraph, int]:
    """The lake's knowledge graph and the `kg_nodes` version it came from."""
    if not lake.exists(KG_NODES):
        raise ValueError(f"lake {lake.uri} has no knowledge graph: run `curate kg build` first")
    version = lake.versions(KG_NODES)[-1]
    return KnowledgeGraph.from_tables(lake.read(KG_NODES), lake.read(KG_EDGES)), version


def _write_graph(lake: Lake, kg: KnowledgeGraph, producer: dict) -> None:
    lake.write(KG_EDGES, kg.edges_table(), mode="overwrite", producer=producer)  # both in their schemas
    lake.write(KG_NODES, kg.nodes_table(), mode="overwrite", producer=producer)


def kg_build(lake: Lake, cfg: KgBuildConfig) -> StepSummary:
    from graph.kg.pagerank import pagerank
    from graph.kg.wikipedia import build_from_sql, build_from_xml

    cfg.validate()
    t0 = time.perf_counter()
    if cfg.xml:
        kg = build_from_xml(cfg.xml)
        files = [cfg.xml]
    else:
        kg = build_from_sql(cfg.page, cfg.pagelinks, redirect=cfg.redirect, linktarget=cfg.linktarget)
        files = [f for f in (cfg.page, cfg.pagelinks, cfg.linktarget, cfg.redirect) if f]
    parsed = time.perf_counter() - t0
    pr = pagerank(kg.n, kg.link_src, kg.link_dst, damping=cfg.damping, tol=cfg.tol, backend=cfg.pagerank_backend)
    kg.attrs["pagerank"] = pr.scores
    pruned = prune(kg, cfg.prune, scores=pr.scores)
    producer = {"step": "kg build", "dumps": [Path(f).name for f in files], "damping": cfg.damping,
                "tol": cfg.tol, "pagerank_backend": pr.backend}
    _write_graph(lake, kg, producer)
    return StepSummary("kg build", kg.n, pruned["kept"], time.perf_counter() - t0, notes={
        "articles": kg.n, "links": len(kg.link_src), "aliases": len(kg.alias_node),
        "parse_seconds": round(parsed, 1),
        "pagerank": f"{pr.backend}, {pr.iterations if pr.iterations is not None else '?'} iterations, "
                    f"L1 change {pr.l1_change:.2e}"
                    + ("" if pr.converged else " (NOT converged: raise max_iter or tol)"),
        "dropped": pruned["dropped"],
    })


def pool_tags(lake: Lake, max_words: int = 4) -> tuple[pa.Array, list[list[str]], str]:
    """(pool ids, one tag list per item, where the tags came from): the source's tags column,
    else a tag-style caption's tags, plus the VLM's semantic tags when the lake has captions
    (`curate caption`; successful rows only), each tag once per item; an item a reviewer
    labelled (`labels`, `curate review apply`) has the reviewer's tags instead."""
    from graph.kg.tags import sample_tags

    if not lake.exists("pool"):
        raise ValueError(f"lake {lake.uri} has no pool: run `curate ingest` first")
    pool = lake.read("pool", columns=["id", "tags", "caption"])
    tags = sample_tags(pool["tags"], pool["caption"], max_words)
    source = "pool"
    if lake.exists(CAPTIONS):
        captions = lake.read(CAPTIONS, columns=["id", "tags", "error", "caption_producer"])
        ok = captions.filter(pc.is_null(captions["error"]))
        vlm = dict(zip(ok["id"].to_pylist(), ok["tags"].to_pylist()))
        producers = sorted(set(ok["caption_producer"].to_pylist()))
        tags = [list(dict.fromkeys(own + [t for t in (vlm.get(i) or []) if t]))
                for i, own in zip(pool["id"].to_pylist(), tags)]
        source = f"pool+captions({', '.join(producers)})" if producers else "pool"
    if lake.exists(LABELS):  # a reviewer's tags replace the item's source and VLM tags
        labels = lake.read(LABELS, columns=["id", "tags"])
        human = {i: t for i, t in zip(labels["id"].to_pylist(), labels["tags"].to_pylist()) if t is not None}
        tags = [list(dict.fromkeys(human[i])) if i in human else own for i, own in zip(pool["id"].to_pylist(), tags)]
        source += f"+labels({len(human)} reviewed)"
    return pool["id"], tags, source


def kg_augment(lake: Lake, cfg: KgAugmentConfig) -> StepSummary:
    from graph.kg.prompts import add_trending, apply_prompt_boost, count_prompts, read_prompt_log
    from graph.kg.taxonomy import augment_with_taxonomy
    from graph.kg.weights import TagMapper, tag_counts

    t0 = time.perf_counter()
    kg, version = load_graph(lake)
    kg = kg.without_derived()
    ids, tags, tag_source = pool_tags(lake, cfg.max_tag_words)
    counter = Counter(t for row in tags for t in row)
    embed = cfg.embed()
    mapper = TagMapper(kg)
    taxonomy = augment_with_taxonomy(kg, list(counter), np.fromiter(counter.values(), np.int64, len(counter)),
                                     cfg.taxonomy, embed, source=f"taxonomy:{tag_source}@kg_nodes v{version}",
                                     match=lambda ts: mapper.map(ts).node)
    notes: dict = {"tags_from": tag_source, "samples_with_tags": sum(1 for row in tags if row),
                   "distinct_tags": taxonomy["tags"],
                   "tags_matched_to_graph": taxonomy["matched_tags"], "new_tag_nodes": taxonomy["new_tag_nodes"],
                   "parents_per_level": taxonomy["parents"], "attached_to_articles": taxonomy["attached"]}
    if cfg.prompts:
        prompts, weights = read_prompt_log(cfg.prompts, column=cfg.prompt_column)
        counts = count_prompts(kg, prompts, weights)
        apply_prompt_boost(kg, counts, cfg.prompts, alpha=cfg.prompt_alpha)
        notes["prompts"] = f"{len(prompts)} prompts, {int((counts > 0).sum())} nodes boosted"
    if cfg.trending:
        notes["trending"] = add_trending(kg, cfg.trending, factor=cfg.trending_factor)
    if lake.exists(HARDCASES):  # recorded decisions, not derived: replayed so this rebuild keeps them
        from curation.steps.review.hardcases import replay_graph_decisions

        notes["hardcases"] = replay_graph_decisions(lake, kg)
    tag_counts(kg, pa.array(tags, pa.list_(pa.string())))
    producer = {"step": "kg augment", "from_kg_nodes_version": version, "embedder": getattr(embed, "name", cfg.embedder),
                "levels": cfg.taxonomy.levels, "prompts": cfg.prompts and Path(cfg.prompts).name,
                "trending": cfg.trending and Path(cfg.trending).name}
    _write_graph(lake, kg, producer)
    return StepSummary("kg augment", len(ids), kg.n, time.perf_counter() - t0, notes=notes)


def kg_weights(lake: Lake, cfg: WeightConfig, embed=None, *, augment: KgAugmentConfig | None = None) -> StepSummary:
    """One `weights` row per pool item (samples without tags: weight 1).

    embed: the text embedder that maps tags no title or alias matches (`cfg.use_embeddings`);
    default: the one `kg.augment` configures (`augment.embed()`: hashing unless `embedder:
    encoder`), so weights match tags the way the taxonomy grouped them."""
    from graph.kg.weights import sample_weights

    if cfg.use_embeddings and embed is None:
        embed = (augment or KgAugmentConfig()).embed()
    t0 = time.perf_counter()
    kg, version = load_graph(lake)
    ids, tags, tag_source = pool_tags(lake)
    table = sample_weights(ids, pa.array(tags, pa.list_(pa.string())), kg, cfg, embed=embed,
                           graph_version=f"kg_nodes v{version}")
    producer = {"step": "kg weights", "kg_nodes_version": version, "params": cfg.producer(), "tags_from": tag_source}
    if cfg.use_embeddings:
        producer["embedder"] = getattr(embed, "name", type(embed).__name__)
    lake.write(WEIGHTS, table, mode="overwrite", producer=producer)
    w = table["weight"].to_numpy()
    matched = table["tags_matched"].to_numpy()
    return StepSummary("kg weights", len(ids), table.num_rows, time.perf_counter() - t0, notes={
        "tags_from": tag_source, "samples_with_matched_tags": int((matched > 0).sum()),
        "weight": f"min {w.min():.3g}, median {np.median(w):.3g}, max {w.max():.3g}" if len(w) else "-",
    })
