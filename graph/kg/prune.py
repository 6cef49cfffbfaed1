"""Pruning of the knowledge graph: nodes are never deleted, only marked with a reason.

Two kinds of pruning:
- PageRank (`prune_pagerank`): articles below an absolute score or a percentile of the article
  scores are marked "low pagerank (...)".
- Generatability (`prune_generatability`): judges decide, title by title, whether a concept can
  be drawn. A judge is anything with a `name` and `judge(titles) -> list[str | None]` (None =
  generatable, else the reason). Provided: `RuleJudge` (title patterns: disambiguation, list,
  index, outline, timeline, year / date / decade / century / season pages, plus named extra
  regexes), `FileJudge` (judgments imported from CSV / JSONL / Parquet, e.g. by a VLM run
  elsewhere) and `EncoderJudge` (text-encoder similarity to concrete vs abstract anchor prompts).

A drop sets `kg.drop_reason[i]` to "<judge name>: <reason>" (PageRank: "low pagerank (...)").
Reasons are "<category>" or "<category> (<details>)"; summaries count drops per category
(e.g. {"rules: year": 12, "encoder: abstract": 3, "low pagerank": 40}). Nodes that already
have a reason are never judged again, so the first step that drops a node names it.

`prune(kg, cfg)` runs everything a `PruneConfig` asks for: PageRank first, then the judges in
the order rules -> judgments file -> encoder (cheapest first; each sees only nodes still kept).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import pyarrow as pa

from graph.kg.model import NODE_KINDS, KnowledgeGraph
from graph.kg.pagerank import pagerank
from graph.kg.tablefile import read_table_file
from graph.kg.textembed import EncoderEmbedder
from graph.kg.textnorm import fold
from operators.models.encoders import EncoderConfig

__all__ = [
    "BUILTIN_RULES", "DEFAULT_ABSTRACT_ANCHORS", "DEFAULT_CONCRETE_ANCHORS", "DEFAULT_TEMPLATES",
    "EncoderJudge", "EncoderJudgeConfig", "FileJudge", "Judge", "PruneConfig", "RuleJudge",
    "build_judges", "category", "prune", "prune_generatability", "prune_pagerank",
]


class Judge(Protocol):
    """Decides generatability per title: None = generatable (keep), else the reason to drop,
    written "<category>" or "<category> (<details>)". One answer per title, in order."""

    name: str

    def judge(self, titles: list[str]) -> list[str | None]: ...


def category(reason: str) -> str:
    """The category of a reason: the text before " (" (details are per node)."""
    return reason.split(" (", 1)[0]


# ----------------------------------------------------------------------------- PageRank


def prune_pagerank(kg: KnowledgeGraph, scores, *, min_score: float | None = None,
                   percentile: float | None = None) -> dict[str, int]:
    """Drop kept 'article' nodes whose score is below `min_score` or below the `percentile`-th
    percentile (0 < percentile < 100; 10 -> bottom 10%) of all article scores.

    scores: float [kg.n], e.g. PageRank (sums to 1 over the graph, so typical values ~1/n).
    The percentile is taken over every article, kept or not, so the threshold does not depend
    on what earlier steps dropped. The comparison is strict: nodes tied at the threshold stay
    (orphan articles share one identical minimal PageRank; when they exceed the percentile
    none of them is dropped, rather than an arbitrary subset). Returns {"low pagerank": count}.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (kg.n,):
        raise ValueError(f"scores must have shape ({kg.n},), got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if min_score is None and percentile is None:
        raise ValueError("prune_pagerank needs min_score or percentile")
    if percentile is not None and not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    articles = kg.kind == "article"
    candidates = np.flatnonzero(articles & kg.kept)
    s = scores[candidates]
    low = np.zeros(candidates.size, bool)
    reasons = np.empty(candidates.size, dtype=object)
    if percentile is not None and candidates.size:
        threshold = float(np.percentile(scores[articles], percentile))
        below = s < threshold
        reasons[below] = [f"low pagerank ({v:.3g} < p{percentile:g} {threshold:.3g})" for v in s[below]]
        low |= below
    if min_score is not None:
        # An absolute floor names itself, also where the percentile would have dropped the node.
        below = s < min_score
        reasons[below] = [f"low pagerank ({v:.3g} < min {min_score:.3g})" for v in s[below]]
        low |= below
    kg.drop_reason[candidates[low]] = reasons[low]
    return {"low pagerank": int(low.sum())} if low.any() else {}


# ----------------------------------------------------------------------------- rules

_ERA = r"(?: (?:BC|BCE|AD|CE))?"
_IN_TOPIC = r"(?: in .+)?"  # "1987 in film", "1990s in music", "21st century in literature"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"

# Rule name -> regex, matched case-insensitively from the start of the title (all anchored, so
# the first rule that matches names the drop). Groups inside must be non-capturing.
BUILTIN_RULES: dict[str, str] = {
    "disambiguation": r".*\(disambiguation\)$",
    "list": r"lists? of ",
    "index": r"index of ",
    "outline": r"outline of ",
    "timeline": r"timeline of ",
    "year": rf"(?:AD )?\d{{1,4}}{_ERA}{_IN_TOPIC}$",  # "1987", "AD 79", "79 BC", "1987 in film"
    "decade": rf"\d{{0,3}}0s{_ERA}{_IN_TOPIC}$",  # "1990s", "1990s BC", "1990s in music"
    "century": rf"\d{{1,2}}(?:st|nd|rd|th) (?:century|millennium){_ERA}{_IN_TOPIC}$",
    # "March 3", "3 March", "March 3, 1987", "March 1987"
    "date": rf"(?:{_MONTH} \d{{1,2}}(?:, \d{{1,4}})?|\d{{1,2}} {_MONTH}(?: \d{{1,4}})?|{_MONTH} \d{{3,4}})$",
    "season": r"\d{4}[–—-]\d{2}(?:\d{2})?(?: .+)?$",  # "2019–20 Premier League", "1999–2000"
}


class RuleJudge:
    """Title patterns that mark pages with nothing to draw. The reason is the rule's name.

    extra_patterns: name -> regex, applied with `re.search` after the built-in rules (anchor
        with ^ / $ and add flags such as (?i) yourself). A name may not repeat a built-in one.
    builtin: include BUILTIN_RULES (case-insensitive, checked first).
    """

    name = "rules"

    def __init__(self, extra_patterns: Mapping[str, str] | None = None, *, builtin: bool = True):
        extra = dict(extra_patterns or {})
        clash = sorted(set(extra) & set(BUILTIN_RULES)) if builtin else []
        if clash:
            raise ValueError(f"extra pattern names {clash} repeat built-in rule names; rename them")
        # The built-in rules run as one alternation: one regex call per title, ~2.5x faster
        # than one call per rule (a few µs per title matter at 7M titles).
        self._builtin = re.compile("|".join(f"(?P<r{i}>{rx})" for i, rx in enumerate(BUILTIN_RULES.values())),
                                   re.IGNORECASE) if builtin else None
        self._builtin_names = list(BUILTIN_RULES)
        self._extra: list[tuple[str, re.Pattern]] = []
        for name, rx in extra.items():
            try:
                self._extra.append((name, re.compile(rx)))
            except re.error as exc:
                raise ValueError(f"extra pattern {name!r} is not a valid regex: {exc}") from exc

    def judge(self, titles: list[str]) -> list[str | None]:
        return [self._match(unicodedata.normalize("NFKC", t).replace("_", " ").strip()) for t in titles]

    def _match(self, title: str) -> str | None:
        if self._builtin is not None:
            m = self._builtin.match(title)
            if m is not None:
                return self._builtin_names[int(m.lastgroup[1:])]
        for name, rx in self._extra:
            if rx.search(title):
                return name
        return None


# ----------------------------------------------------------------------------- judgments file

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _as_bool(values: list, path: Path) -> list[bool]:
    out = []
    for row, v in enumerate(values):
        if isinstance(v, bool):
            out.append(v)
        elif isinstance(v, int) and v in (0, 1):
            out.append(bool(v))
        elif isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            out.append(v.strip().lower() in _TRUE)
        else:
            raise ValueError(f"judgments file {path}: row {row}: generatable must be a boolean, got {v!r}")
    return out


class FileJudge:
    """Judgments made elsewhere (e.g. a VLM asked "can this be drawn?"), read from a CSV,
    JSONL or Parquet file with columns `title` (or `node`: int64 node ids, resolved through
    `kg`), `generatable` (bool; also 0/1, true/false, yes/no) and optionally `reason`.

    Titles are matched folded (`graph.kg.textnorm.fold`: NFKC, casefold, '_' -> ' '; so
    Wikipedia's distinct "Red dwarf" and "Red Dwarf" share one judgment). Several rows for
    one folded title: a drop wins (the first non-generatable row's reason). Titles the file
    does not cover are kept (None) and counted in `unknown`; `node` ids absent from `kg` are
    counted in `unmatched_rows`.
    A drop without a reason reads "not generatable".
    """

    def __init__(self, path: str | Path, *, kg: KnowledgeGraph | None = None, name: str = "file"):
        self.name, self.path = name, Path(path)
        table = read_table_file(self.path, ("title", "reason"), what="judgments file")
        cols = set(table.column_names)
        if "generatable" not in cols or not cols & {"title", "node"}:
            raise ValueError(f"judgments file {self.path}: needs columns title (or node) and generatable; "
                             f"has {sorted(cols)}")
        generatable = _as_bool(table.column("generatable").to_pylist(), self.path)
        n_rows = table.num_rows
        reasons = table.column("reason").to_pylist() if "reason" in cols else [None] * n_rows
        self.unmatched_rows = 0
        if "title" in cols:
            titles = table.column("title").to_pylist()
        elif pa.types.is_integer(table.column("node").type):
            if kg is None:
                raise ValueError(f"judgments file {self.path}: a node-id column needs the knowledge graph (kg=)")
            by_id = dict(zip(kg.node_id.tolist(), kg.title.tolist()))
            titles = [by_id.get(v) for v in table.column("node").to_pylist()]
            self.unmatched_rows = sum(t is None for t in titles)
        else:  # a `node` column of text holds titles
            titles = table.column("node").to_pylist()
        self.judgments: dict[str, str | None] = {}
        for title, ok, reason in zip(titles, generatable, reasons):
            if title is None:
                continue
            key = fold(str(title))
            if ok:
                self.judgments.setdefault(key, None)
            elif self.judgments.get(key) is None:
                self.judgments[key] = str(reason).strip() if reason and str(reason).strip() else "not generatable"
        self.unknown = 0

    def judge(self, titles: list[str]) -> list[str | None]:
        out: list[str | None] = []
        for title in titles:
            key = fold(title)
            if key not in self.judgments:
                self.unknown += 1
            out.append(self.judgments.get(key))
        return out


# ----------------------------------------------------------------------------- encoder

DEFAULT_TEMPLATES = ("a photo of {}.", "a picture of {}.", "an image of {}.")
DEFAULT_CONCRETE_ANCHORS = (
    "a photo of an animal.", "a photo of a plant.", "a photo of a person.", "a photo of a building.",
    "a photo of a landscape.", "a photo of a vehicle.", "a photo of food.", "a photo of a tool.",
    "a photo of clothing.", "a painting of a scene.",
)
DEFAULT_ABSTRACT_ANCHORS = (
    "a page of text.", "a list of names.", "a table of numbers.", "a calendar date.", "a year.",
    "an abstract idea.", "a legal term.", "a mathematical formula.", "a statistic.", "a grammar rule.",
)


class EncoderJudge:
    """Drops titles that a text encoder places nearer abstract than concrete anchor prompts.

    Each title is put into every template ("a photo of {}.") and the L2-normalised embeddings
    are averaged and renormalised (prompt ensembling, as in CLIP zero-shot). Its score is
    mean cosine similarity to the abstract anchors − mean similarity to the concrete anchors
    (cosine units, in [-2, 2]; a few hundredths separate prompts for a CLIP-like model). A
    title is dropped when score > margin; calibrate the margin on labelled titles (`scores`).

    embed: texts -> float array (len(texts), D); rows are L2-normalised here.
    batch_size: texts (prompts) per embed call; titles are scored batch_size // len(templates)
        at a time.
    """

    name = "encoder"

    def __init__(self, embed: Callable[[list[str]], np.ndarray], *, templates: Sequence[str] = DEFAULT_TEMPLATES,
                 concrete: Sequence[str] = DEFAULT_CONCRETE_ANCHORS, abstract: Sequence[str] = DEFAULT_ABSTRACT_ANCHORS,
                 margin: float = 0.0, batch_size: int = 1024):
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {list(templates)}")
        if not concrete or not abstract:
            raise ValueError("EncoderJudge needs at least one concrete and one abstract anchor prompt")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.embed, self.templates, self.margin = embed, list(templates), float(margin)
        self.batch_size = batch_size
        anchors = self._embed(list(concrete) + list(abstract))
        # Mean similarity to a set = similarity to the set's mean vector: one direction to test.
        self._direction = anchors[len(concrete):].mean(axis=0) - anchors[: len(concrete)].mean(axis=0)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            e = np.asarray(self.embed(batch), dtype=np.float64)
            if e.ndim != 2 or e.shape[0] != len(batch):
                raise ValueError(f"embed returned shape {e.shape} for {len(batch)} texts")
            out.append(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)

    def scores(self, titles: list[str]) -> np.ndarray:
        """float64 [len(titles)]: abstract − concrete mean similarity (drop when > margin)."""
        k = len(self.templates)
        per_call = max(1, self.batch_size // k)
        out = np.empty(len(titles))
        # Title chunks keep memory bounded (7M titles × 3 prompts × 768 floats would be ~130 GB).
        for start in range(0, len(titles), per_call):
            chunk = titles[start : start + per_call]
            prompts = [tpl.replace("{}", t) for t in chunk for tpl in self.templates]
            emb = self._embed(prompts).reshape(len(chunk), k, -1).mean(axis=1)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            out[start : start + len(chunk)] = emb @ self._direction
        return out

    def judge(self, titles: list[str]) -> list[str | None]:
        return [f"abstract ({s:.3f} > margin {self.margin:g})" if s > self.margin else None
                for s in self.scores(titles)]

    @classmethod
    def from_encoder(cls, cfg: EncoderConfig, *, device: str = "auto", **kwargs) -> "EncoderJudge":
        """Use a model operator's text tower (`graph.kg.textembed.EncoderEmbedder`).
        device: "auto" (CUDA when visible, else CPU), "cpu", "cuda", ... Other keyword
        arguments as for the constructor."""
        return cls(EncoderEmbedder(cfg, device=device), **kwargs)


# ----------------------------------------------------------------------------- applying judges


def prune_generatability(kg: KnowledgeGraph, judges: Iterable[Judge], *,
                         kinds: Sequence[str] = ("article",)) -> dict[str, int]:
    """Apply `judges` in order to the still-kept nodes of `kinds`; the first judge that drops a
    node sets its reason "<judge name>: <reason>". Returns drops per "<judge name>: <category>"."""
    bad = sorted(set(kinds) - set(NODE_KINDS))
    if bad:
        raise ValueError(f"unknown node kinds {bad}; expected some of {NODE_KINDS}")
    of_kind = np.isin(kg.kind.astype(str), list(kinds)) if kg.n else np.zeros(0, bool)
    counts: Counter[str] = Counter()
    for judge in judges:
        idx = np.flatnonzero(of_kind & kg.kept)
        verdicts = judge.judge([str(t) for t in kg.title[idx]])
        if len(verdicts) != idx.size:
            raise ValueError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for {idx.size} titles")
        for i, reason in zip(idx.tolist(), verdicts):
            if reason is not None:
                kg.drop_reason[i] = f"{judge.name}: {reason}"
                counts[f"{judge.name}: {category(reason)}"] += 1
    return dict(counts)


# ----------------------------------------------------------------------------- config


@dataclass
class EncoderJudgeConfig:
    """encoder: the text encoder (a model-operator EncoderConfig); None = `prune` must be given
    an `embed` function. templates: prompts with "{}" for the title. concrete / abstract:
    anchor prompts. margin: drop when abstract − concrete mean cosine similarity > margin.
    batch_size: prompts per encoder call. device: "auto", "cpu", "cuda", ..."""

    encoder: EncoderConfig | None = None
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    concrete: list[str] = field(default_factory=lambda: list(DEFAULT_CONCRETE_ANCHORS))
    abstract: list[str] = field(default_factory=lambda: list(DEFAULT_ABSTRACT_ANCHORS))
    margin: float = 0.0
    batch_size: int = 1024
    device: str = "auto"


@dataclass
class PruneConfig:
    """What `prune` does (build from YAML with `curation.config.typed.from_dict`).

    min_pagerank: drop articles with PageRank below this (scores sum to 1: ~1/n is average).
    pagerank_percentile: drop articles below this percentile of article PageRank (10 = bottom 10%).
    rules: apply the built-in title rules (`BUILTIN_RULES`).
    extra_patterns: name -> regex, extra title rules (applied even when `rules` is false).
    judgments_file: CSV / JSONL / Parquet judgments (see `FileJudge`).
    encoder_judge: options of the text-encoder judge; None = not used.
    judge_kinds: node kinds the generatability judges look at.
    """

    min_pagerank: float | None = None
    pagerank_percentile: float | None = None
    rules: bool = True
    extra_patterns: dict[str, str] = field(default_factory=dict)
    judgments_file: str | None = None
    encoder_judge: EncoderJudgeConfig | None = None
    judge_kinds: list[str] = field(default_factory=lambda: ["article"])

    def __post_init__(self) -> None:
        if self.min_pagerank is not None and self.min_pagerank < 0:
            raise ValueError(f"min_pagerank must be >= 0, got {self.min_pagerank}")
        if self.pagerank_percentile is not None and not 0 < self.pagerank_percentile < 100:
            raise ValueError(f"pagerank_percentile must be in (0, 100), got {self.pagerank_percentile}")
        bad = sorted(set(self.judge_kinds) - set(NODE_KINDS))
        if bad:
            raise ValueError(f"judge_kinds: unknown node kinds {bad}; expected some of {NODE_KINDS}")


def build_judges(kg: KnowledgeGraph, cfg: PruneConfig, *,
                 embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Judge]:
    """The judges `cfg` asks for, cheapest first: rules, judgments file, encoder. `embed`
    replaces the configured encoder (and is required when encoder_judge.encoder is None)."""
    judges: list[Judge] = []
    if cfg.rules or cfg.extra_patterns:
        judges.append(RuleJudge(cfg.extra_patterns, builtin=cfg.rules))
    if cfg.judgments_file:
        judges.append(FileJudge(cfg.judgments_file, kg=kg))
    ej = cfg.encoder_judge
    if ej is not None:
        options = dict(templates=ej.templates, concrete=ej.concrete, abstract=ej.abstract, margin=ej.margin,
                       batch_size=ej.batch_size)
        if embed is not None:
            judges.append(EncoderJudge(embed, **options))
        elif ej.encoder is not None:
            judges.append(EncoderJudge.from_encoder(ej.encoder, device=ej.device, **options))
        else:
            raise ValueError("encoder_judge needs an encoder config or an embed function")
    return judges


def prune(kg: KnowledgeGraph, cfg: PruneConfig, *, scores=None,
          embed: Callable[[list[str]], np.ndarray] | None = None) -> dict:
    """Run the PageRank and generatability pruning `cfg` asks for on `kg` (in place).

    scores: PageRank per node; default kg.attrs["pagerank"], else computed here on the link
        graph (`graph.kg.pagerank.pagerank`, default settings) and stored in kg.attrs["pagerank"].
    embed: text embedder for the encoder judge (instead of loading encoder_judge.encoder).
    Returns {"dropped": {category: count} (this call's drops), "kept": nodes kept afterwards,
    "nodes": kg.n, and with a judgments file "file_unknown": titles it did not cover (kept)}.
    """
    dropped: dict[str, int] = {}
    if cfg.min_pagerank is not None or cfg.pagerank_percentile is not None:
        if scores is None:
            scores = kg.attrs.get("pagerank")
        if scores is None:
            scores = pagerank(kg.n, kg.link_src, kg.link_dst).scores
            kg.attrs["pagerank"] = scores
        dropped.update(prune_pagerank(kg, scores, min_score=cfg.min_pagerank, percentile=cfg.pagerank_percentile))
    judges = build_judges(kg, cfg, embed=embed)
    dropped.update(prune_generatability(kg, judges, kinds=cfg.judge_kinds))
    summary = {"dropped": dropped, "kept": int(kg.kept.sum()), "nodes": kg.n}
    summary.update({"file_unknown": j.unknown for j in judges if isinstance(j, FileJudge)})
    return summary
