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
from curation.storage.schemas import CAPTIONS, HARDCASES, KG_EDGES, KG_NODES, LABELS, TAG_STATS, WEIGHTS, conform
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


def pool_tags(lake: Lake, max_words: int = 4) -> tuple[pa.Array, pa.ListArray, str]:
    """(pool ids, one tag list per item as list<string>, where the tags came from): the
    source's tags column, else a tag-style caption's tags, plus the VLM's semantic tags when
    the lake has captions (`curate caption`; successful rows only), each tag once per item; an
    item a reviewer labelled (`labels`, `curate review apply`) has the reviewer's tags instead."""
    from graph.kg.tags import tag_lists

    if not lake.exists("pool"):
        raise ValueError(f"lake {lake.uri} has no pool: run `curate ingest` first")
    pool = lake.read("pool", columns=["id", "tags", "caption"])
    ids = pool["id"].combine_chunks()
    tags = tag_lists(pool["tags"], pool["caption"], max_words)
    source = "pool"
    if lake.exists(CAPTIONS):
        captions = lake.read(CAPTIONS, columns=["id", "tags", "error", "caption_producer"])
        ok = captions.filter(pc.is_null(captions["error"]))
        producers = sorted(set(ok["caption_producer"].to_pylist()))
        tags = _replace_rows(tags, ids, ok["id"], ok["tags"],
                             lambda own, vlm: list(dict.fromkeys(own + [t for t in (vlm or []) if t])))
        source = f"pool+captions({', '.join(producers)})" if producers else "pool"
    if lake.exists(LABELS):  # a reviewer's tags replace the item's source and VLM tags
        labels = lake.read(LABELS, columns=["id", "tags"])
        labels = labels.filter(pc.is_valid(labels["tags"]))
        tags = _replace_rows(tags, ids, labels["id"], labels["tags"], lambda own, human: list(dict.fromkeys(human)))
        source += f"+labels({labels.num_rows} reviewed)"
    return ids, tags, source


def _replace_rows(tags: pa.ListArray, ids: pa.Array, by_id, values, merge) -> pa.ListArray:
    """`tags` with the rows whose id is in `by_id` replaced by merge(own tags, value) (Python,
    for those rows only)."""
    from graph.kg.tags import replace_rows

    at = pc.index_in(ids, value_set=by_id.combine_chunks() if isinstance(by_id, pa.ChunkedArray) else by_id)
    rows = np.flatnonzero(pc.is_valid(at).to_numpy(zero_copy_only=False))
    if not len(rows):
        return tags
    take = pa.array(rows)
    merged = [merge(own, v) for own, v in zip(tags.take(take).to_pylist(), values.take(at.take(take)).to_pylist())]
    return replace_rows(tags, rows, merged)


def kg_augment(lake: Lake, cfg: KgAugmentConfig) -> StepSummary:
    from graph.kg.prompts import add_trending, apply_prompt_boost, count_prompts, read_prompt_log
    from graph.kg.taxonomy import augment_with_taxonomy
    from graph.kg.weights import TagMapper, tag_counts

    t0 = time.perf_counter()
    kg, version = load_graph(lake)
    kg = kg.without_derived()
    ids, tags, tag_source = pool_tags(lake, cfg.max_tag_words)
    counter = Counter(t for row in tags.to_pylist() for t in row)
    embed = cfg.embed()
    mapper = TagMapper(kg)
    taxonomy = augment_with_taxonomy(kg, list(counter), np.fromiter(counter.values(), np.int64, len(counter)),
                                     cfg.taxonomy, embed, source=f"taxonomy:{tag_source}@kg_nodes v{version}",
                                     match=lambda ts: mapper.map(ts).node)
    notes: dict = {"tags_from": tag_source,
                   "samples_with_tags": int(pc.sum(pc.greater(pc.list_value_length(tags), 0)).as_py() or 0),
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
    tag_counts(kg, tags)
    producer = {"step": "kg augment", "from_kg_nodes_version": version, "embedder": getattr(embed, "name", cfg.embedder),
                "levels": cfg.taxonomy.levels, "prompts": cfg.prompts and Path(cfg.prompts).name,
                "trending": cfg.trending and Path(cfg.trending).name}
    _write_graph(lake, kg, producer)
    return StepSummary("kg augment", len(ids), kg.n, time.perf_counter() - t0, notes=notes)


def kg_weights(lake: Lake, cfg: WeightConfig, embed=None, *, augment: KgAugmentConfig | None = None) -> StepSummary:
    """One `weights` row per pool item (samples without tags: weight 1), and the pool's tag
    statistics (`tag_stats`) they came from.

    embed: the text embedder that maps tags no title or alias matches (`cfg.use_embeddings`);
    default: the one `kg.augment` configures (`augment.embed()`: hashing unless `embedder:
    encoder`), so weights match tags the way the taxonomy grouped them.
    cfg.mode 'incremental': recompute only what changed (`curation.steps.kg.incremental`);
    the summary's `statistics` note says whether the run was incremental or full, and why."""
    from graph.kg.bm25 import tag_occurrences
    from graph.kg.tagstats import doc_terms
    from graph.kg.weights import map_tag_nodes, weigh

    if cfg.use_embeddings and embed is None:
        embed = (augment or KgAugmentConfig()).embed()
    t0 = time.perf_counter()
    kg, version = load_graph(lake)
    ids, tags, tag_source = pool_tags(lake)
    embedder = getattr(embed, "name", type(embed).__name__) if cfg.use_embeddings else None
    producer = {"step": "kg weights", "kg_nodes_version": version, "params": cfg.producer(), "tags_from": tag_source,
                "embedder": embedder}
    graph_version = f"kg_nodes v{version}"
    notes: dict = {"tags_from": tag_source}
    refresh = None
    if cfg.mode == "incremental":
        from curation.steps.kg.incremental import plan_refresh, stored_statistics

        stored = stored_statistics(lake, cfg, version, embedder)
        if isinstance(stored, str):
            reason = stored
        else:
            old, mean_raw, stored_rows = stored
            refresh = plan_refresh(old, ids, doc_terms(tag_occurrences(tags)), stored_rows, cfg,
                                   lambda terms: map_tag_nodes(kg, cfg, embed, terms))
            reason = refresh if isinstance(refresh, str) else None
            refresh = None if reason else refresh
        if refresh is None:
            notes["statistics"] = f"full: {reason}"
    if refresh is not None:
        rows = pa.array(refresh.rows)
        weighed = weigh(ids.take(rows), tags.take(rows), kg, cfg, embed=embed,
                        graph_version=graph_version, stats=refresh.stats, mean_raw=mean_raw)
        table = weighed.table
        schema = table.schema.append(pa.field("gone", pa.bool_()))
        upsert = pa.concat_tables([
            conform(table.append_column("gone", pa.array(np.zeros(table.num_rows, bool))), schema),
            conform(pa.table({"id": refresh.removed, "gone": pa.array(np.ones(len(refresh.removed), bool))}), schema)])
        if upsert.num_rows:  # else nothing changed: the stored weights and statistics stand
            # statistics first: the weights commit names their version, so a kill in between
            # leaves the stored weights consistent with the statistics they name
            _store_statistics(lake, refresh.stats, mean_raw, "incremental", producer)
            lake.transact(WEIGHTS, lambda snap: upsert, key="id", delete_column="gone",
                          update_columns=[c for c in table.column_names if c != "id"], producer=producer)
        c, sh = refresh.counts, refresh.shift
        notes["statistics"] = (f"incremental: idf shift {100 * sh.mean:.2f}% (max {100 * sh.max:.1f}%, avgdl "
                               f"{100 * sh.avgdl:.2f}%) within {100 * cfg.idf_tolerance:.2f}%; recomputed "
                               f"{len(refresh.rows)} of {len(ids)} samples ({c['new']} new, {c['retagged']} retagged, "
                               f"{c['shifted']} holding a tag whose idf moved more) and removed {c['removed']}")
        notes["concepts"] = f"{len(refresh.stats.concept_counts())} concepts with tagged samples"
    else:
        weighed = weigh(ids, tags, kg, cfg, embed=embed, graph_version=graph_version)
        table = weighed.table
        _store_statistics(lake, weighed.stats, weighed.mean_raw, "full", producer)
        lake.write(WEIGHTS, table, mode="overwrite", producer=producer)
        notes.setdefault("statistics", "full")
        notes["concepts"] = f"{len(weighed.stats.concept_counts())} concepts with tagged samples"
    w = table["weight"].to_numpy()
    matched = table["tags_matched"].to_numpy()
    notes.update({
        "samples_with_matched_tags": int((matched > 0).sum()),
        ("weight" if refresh is None else "weight (recomputed rows)"):
            f"min {w.min():.3g}, median {np.median(w):.3g}, max {w.max():.3g}" if len(w) else "-",
    })
    return StepSummary("kg weights", len(ids), table.num_rows, time.perf_counter() - t0, notes=notes)


def _store_statistics(lake: Lake, stats, mean_raw: float, mode: str, producer: dict) -> None:
    """Write `tag_stats` and name its version, totals and normaliser in the weights `producer`
    (written before the weights, so the weights never name statistics that are not there)."""
    version = lake.write(TAG_STATS, stats.to_table(), mode="overwrite",
                         producer={"step": "kg weights", "mode": mode}).version
    producer.update(mode=mode, tag_stats={**stats.totals(), "version": version, "mean_raw": mean_raw})
