"""What a training stage draws and how it batches: sources, balancing, captions, sample, batches.

These sections hang off a stage (`curation.steps.export.export.StageConfig`), next to its rules,
near-dup policy and bucket / resolution policy::

    stages:
      sft:
        rules: {...}
        buckets: {resolution: 1024, step: 64}
        sources:
          - {name: photos, table: pool, weight: 1.0}
        balance: {mode: uniform, prior: ./prior.csv}
        captions: {levels: {long: 0.4, medium: 0.3, short: 0.15, tags: 0.05, prompt: 0.05}, raw: 0.05}
        sample: {size: 100000, seed: 0}
        batches: {token_budget: 65536, text_tokens: {mode: estimate}}

Every field is checked when the spec loads (`ConfigError` naming the key, exit 2); what needs
the lake (a table the lake lacks, a prior naming a concept the graph does not have) is checked
when the step starts, before anything is drawn or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BalanceConfig", "BatchConfig", "CAPTION_LEVELS", "CaptionPolicy", "ResolutionConfig",
    "SampleConfig", "SOURCE_TABLES", "SourceSpec", "TextTokens",
]

# Tables a stage can draw from: images of the pool (text-to-image) or edit pairs (image-to-image).
SOURCE_TABLES = {"pool": "t2i", "edit_pairs": "i2i"}

# Caption levels a policy may name. long / medium / short / tags / prompt (the simulated user
# prompt) come from the `captions` table (the VLM captioner); raw is the source's own text
# (alt text, sidecar caption); field:<name> is one of the source's caption fields (caption_zh).
CAPTION_LEVELS = ("long", "medium", "short", "tags", "prompt", "raw")


@dataclass
class SourceSpec:
    """One source of a stage's mixture.

    name: the source's name in the sample (`samples/<stage>.source`) and reports.
    table: 'pool' (images, text-to-image) or 'edit_pairs' (image-to-image pairs; both images
        must pass the stage's rules).
    where: column filters on the stage's eligible rows, all must hold: {column: value} (equal),
        {column: [v1, v2]} (one of; for a list column such as `sources` or `tags`: holds one of),
        {column: {min: a, max: b}} (inclusive range). Columns are the manifest's (pool, profile,
        score and weight features, `sources`, and for pairs `pair_kind`).
    weight: mixture weight: the source's share of the sample is weight / Σ weights (after
        `synthetic_factor`). T2I:I2I = 4:1 is weight 4 on the images and 1 on the pairs.
    synthetic: the source holds synthetic data (rendered text edits): its weight is multiplied
        by the stage's `synthetic_factor`.
    optional: when the lake lacks the table (edit pairs not built yet), the stage goes on
        without this source and says so; when false that is an error naming the table.
    """

    name: str
    table: str = "pool"
    where: dict[str, Any] = field(default_factory=dict)
    weight: float = field(default=1.0, metadata={"gt": 0})
    synthetic: bool = False
    optional: bool = False

    def __post_init__(self) -> None:
        if self.table not in SOURCE_TABLES:
            raise ValueError(f"unknown source table {self.table!r}; a stage draws from: {', '.join(SOURCE_TABLES)}")
        for column, cond in self.where.items():
            if isinstance(cond, dict):
                unknown = set(cond) - {"min", "max"}
                if unknown or not cond:
                    raise ValueError(f"where.{column}: a range takes `min` and/or `max`, got {sorted(cond)}")

    @property
    def kind(self) -> str:
        """'t2i' or 'i2i'."""
        return SOURCE_TABLES[self.table]


@dataclass
class BalanceConfig:
    """Concept balancing from the knowledge graph (`weights.nodes`: the concepts each item holds).

    mode:
      none     every eligible item equally likely;
      weight   sample ∝ the knowledge-graph weight (`weights.weight`: BM25 × hierarchy × boost);
      cap      MetaCLIP-style: a concept c with n_c items is kept with p_c = min(1, cap / n_c);
               an item holding several concepts with 1 − Π(1 − p_c); items are drawn ∝ that
               probability, and without `sample.size` the sample size is Σ of it (the expected
               size of MetaCLIP's Bernoulli curation);
      uniform  the concept marginal follows the target prior π (uniform by default): a concept
               is drawn from π, then an item holding it ∝ rarity × quality; as an item weight
               w(d) = Σ_{c ∈ d} π(c) · r(d) / Σ_{d' ∋ c} r(d'), r = BM25 rarity × quality.
    cap: the MetaCLIP threshold t (items per concept kept with certainty).
    quality: a manifest column (e.g. an aesthetic score) multiplying the uniform mode's rarity;
        null: rarity only. Items with a null or non-positive value get the column's minimum
        positive value.
    prior: a table file (.csv, .parquet, .jsonl) with `concept` (title or node id) and `prior`
        (relative weight, > 0) overriding the uniform target per concept; concepts it does not
        name keep prior 1. A concept the graph does not have is an error.
    prior_from_boosts: multiply the prior by the graph's node boost (prompt-frequency and
        trending boosts of `curate kg augment`).
    untagged_share: uniform mode: the share of the sample given to items holding no concept
        (0: they are not drawn). Other modes draw them like any item (weight 1, p_keep 1).
    top_k: the report's top-k share is the mass of the k most frequent concepts.
    """

    mode: Literal["none", "weight", "cap", "uniform"] = "none"
    cap: float = field(default=20_000, metadata={"gt": 0})
    quality: str | None = None
    prior: str | None = None
    prior_from_boosts: bool = False
    untagged_share: float = field(default=0.0, metadata={"min": 0, "lt": 1})
    top_k: int = field(default=10, metadata={"min": 1})


@dataclass
class CaptionPolicy:
    """Which text each sampled item trains with, drawn per item and epoch.

    levels: caption level -> probability (long, medium, short, tags, prompt from the `captions`
        table; `field:<name>` for a source caption field such as `field:caption_zh`).
    raw: probability of the source's raw text (alt text / sidecar caption).
    instruction: image-to-image items: probability of the edit instruction (else the target
        image's caption, drawn from the levels as for text-to-image).
    The probabilities of levels + raw are normalised to sum 1. An item lacking the drawn level
    (no captioner run yet, a null level) falls back to raw, then to its tags joined by ', ';
    the level actually used is recorded and the fallbacks are counted in the report.
    """

    levels: dict[str, float] = field(default_factory=dict, metadata={"min": 0})
    raw: float = field(default=1.0, metadata={"min": 0})
    instruction: float = field(default=1.0, metadata={"min": 0, "max": 1})

    def __post_init__(self) -> None:
        for name in self.levels:
            if name not in CAPTION_LEVELS and not (name.startswith("field:") and len(name) > 6):
                raise ValueError(f"levels: unknown caption level {name!r}; known: "
                                 f"{', '.join(CAPTION_LEVELS)}, field:<caption field>")
        if sum(self.levels.values()) + self.raw <= 0:
            raise ValueError("levels and raw have zero total probability: no caption could be drawn")

    def choices(self) -> tuple[list[str], list[float]]:
        """(level names, probabilities summing to 1), raw included."""
        names = list(self.levels) + (["raw"] if self.raw > 0 and "raw" not in self.levels else [])
        probs = [self.levels.get(n, 0.0) + (self.raw if n == "raw" else 0.0) for n in names]
        total = sum(probs)
        return names, [p / total for p in probs]


@dataclass
class ResolutionConfig:
    """The resolution-mapping function (omni stages: arbitrary resolution, no fixed bucket set).

    A native size (H, W) px maps to a training size: the long side L = max(H, W) is clamped to
    [min_long, max_long], both sides are scaled by L_clamped / L (aspect kept) and rounded to
    the nearest multiple of `multiple` px (the patch grid: vae_factor · patch_size of the
    stage's `buckets`, 16 px by default), never below one multiple. Aspect is first clipped to
    max_aspect (the trainer crops the excess). Small images are upsampled to min_long.
    """

    min_long: int = field(default=512, metadata={"min": 1})
    max_long: int = field(default=1536, metadata={"min": 1})
    multiple: int | None = field(default=None, metadata={"min": 1})
    max_aspect: float = field(default=3.0, metadata={"min": 1.0})

    def __post_init__(self) -> None:
        if self.min_long > self.max_long:
            raise ValueError(f"min_long ({self.min_long}) must be <= max_long ({self.max_long})")


@dataclass
class TextTokens:
    """Caption tokens in a sequence (the single-stream transformer sees image and text tokens).

    mode: none (image tokens only); estimate (one token per CJK character, plus the other
        characters / `chars_per_token`, rounded up); tokenizer (a
        Hugging Face `tokenizer.json` at `tokenizer`, read with the `tokenizers` package).
    max_tokens: the trainer's caption truncation length.
    """

    mode: Literal["none", "estimate", "tokenizer"] = "none"
    chars_per_token: float = field(default=4.0, metadata={"gt": 0})
    tokenizer: str | None = None
    max_tokens: int = field(default=512, metadata={"min": 1})

    def __post_init__(self) -> None:
        if self.mode == "tokenizer" and not self.tokenizer:
            raise ValueError("mode 'tokenizer' needs `tokenizer` (a local tokenizer.json)")


@dataclass
class BatchConfig:
    """Token-budget batch plans.

    token_budget: padded tokens per batch (n · longest seq_len in the batch ≤ budget), so the
        batch size falls as sequences grow. An item longer than the budget is a batch of one.
    max_batch_size: a cap on items per batch (null: none); max_per_bucket: caps for given
        buckets, keys "HxW" (e.g. {"1024x1024": 12}).
    chunk_size: items are shuffled, then sorted by length inside chunks of this many items,
        so batches stay random across the epoch while lengths inside a batch match.
    same_shape: every batch holds one bucket (tensors stack); false for resolution-mapped
        stages, whose trainer packs variable-length sequences (a batch's items then have
        similar seq_len but different shapes).
    pad_multiple: image and text token counts are each padded up to a multiple of this, as the
        trainer pads them (32 in public single-stream DiT ports).
    text_tokens: caption tokens counted into seq_len.
    """

    token_budget: int = field(default=65_536, metadata={"min": 1})
    max_batch_size: int | None = field(default=None, metadata={"min": 1})
    max_per_bucket: dict[str, int] = field(default_factory=dict, metadata={"min": 1})
    chunk_size: int = field(default=8192, metadata={"min": 1})
    same_shape: bool = True
    pad_multiple: int = field(default=32, metadata={"min": 1})
    text_tokens: TextTokens = field(default_factory=TextTokens)

    def __post_init__(self) -> None:
        for key in self.max_per_bucket:
            h, _, w = key.partition("x")
            if not (h.isdigit() and w.isdigit()):
                raise ValueError(f"max_per_bucket: bucket keys are 'HxW' in px (e.g. '1024x1024'), got {key!r}")


@dataclass
class SampleConfig:
    """size: items per epoch (null: as many as the mixture allows without repeating an item;
    for `cap` balancing the expected size of MetaCLIP's curation). seed: with the stage name
    and the epoch, fixes every random choice (the draw, captions, batch order)."""

    size: int | None = field(default=None, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
