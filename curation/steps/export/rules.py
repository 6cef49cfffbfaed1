"""Declarative filter rules over profile columns.

A rule is a threshold on one measured column; `None` turns it off. Rules are a predicate,
separate from the (expensive) measurements, so thresholds change without re-profiling, and
every rejected row keeps the name of the first rule it failed instead of vanishing silently.

Semantics
- ``min_*`` passes when value >= threshold; ``max_*`` passes when value <= threshold.
- A row whose column needed by an active rule is null (or NaN) FAILS that rule: a missing
  measurement is not proof of quality. Rows where an operator failed carry ``error`` and are
  removed first under the rule name ``"error"`` (when ``drop_errors``), so in practice the
  null-fails rule only bites when a column is missing for another reason.
- A column needed by an active rule but absent from the table is a configuration error and
  raises ValueError.
- Rules are checked in the fixed order of `RULE_ORDER`; `removed_per_rule` counts each
  removed row once, under the first rule it failed in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["RulesConfig", "RuleResult", "RULE_ORDER", "apply_rules", "describe_rules"]


@dataclass
class RulesConfig:
    """Filter thresholds; None = rule off. Typical values in brackets are suggestions only.

    min_side: minimum of min(width, height), px [256 for pre-training, 1024 for SFT].
    max_side: maximum of max(width, height), px.
    min_pixels: minimum width·height, px².
    max_aspect: maximum max(w, h) / min(w, h), ratio >= 1 [4.0].
    min_compression_ratio: minimum of the profile's ``compression_ratio`` column (defined
        and scaled by the operator that writes it; see its schema doc).
    min_jpeg_bpp: minimum JPEG re-encode bits per pixel (low = flat, low-information image) [0.3].
    min_border_std: minimum luma std of the image border, 0–255 (≈0 = solid padding/letterbox).
    min_laplacian_var: minimum variance of the Laplacian of luma (low = blurry) [~50 at 512 px].
    max_noise_sigma: maximum Immerkær noise sigma, luma 0–255 [~8].
    max_blockiness: maximum 8-px block-boundary gradient ratio (1 ≈ no JPEG blocking) [~1.5].
    max_color_cast: maximum Lab a/b colour-cast score (dimensionless, 0 = neutral).
    min_colorfulness: minimum Hasler–Süsstrunk colourfulness (0 = grey) [~5 to drop greyscale].
    require_caption: drop rows whose caption is null or blank (whitespace only).
    drop_errors: drop rows whose ``error`` is not null (rule name "error").
    min_score: model-score column -> minimum value, e.g. {aesthetic: 5.0, clip_alignment: 0.28}
        (rule name "min_score:<column>"); columns come from the `scores` table.
    max_score: model-score column -> maximum value, e.g. {nsfw: 0.5, aigc: 0.5}.
    min_percentile: score column -> percentile 0..100 of the column's non-null values over the
        rows being evaluated; rows below it fail ("min_percentile:<column>"). Use it where score
        scales differ between models (alignment under CN-CLIP vs OpenAI CLIP).
    """

    min_side: int | None = None
    max_side: int | None = None
    min_pixels: int | None = None
    max_aspect: float | None = field(default=None, metadata={"min": 1.0})
    min_compression_ratio: float | None = None
    min_jpeg_bpp: float | None = None
    min_border_std: float | None = None
    min_laplacian_var: float | None = None
    max_noise_sigma: float | None = None
    max_blockiness: float | None = None
    max_color_cast: float | None = None
    min_colorfulness: float | None = None
    require_caption: bool = False
    drop_errors: bool = True
    min_score: dict[str, float] = field(default_factory=dict)
    max_score: dict[str, float] = field(default_factory=dict)
    min_percentile: dict[str, float] = field(default_factory=dict, metadata={"min": 0, "max": 100})

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (v < 0 or v != v):
                raise ValueError(f"{f.name} must be >= 0, got {v!r}")
        for name, pct in self.min_percentile.items():
            if not 0 <= pct <= 100:
                raise ValueError(f"min_percentile[{name}] must be in 0..100, got {pct!r}")
        if self.max_aspect is not None and self.max_aspect < 1:
            raise ValueError(f"max_aspect is max(w,h)/min(w,h) and must be >= 1, got {self.max_aspect!r}")
        if self.min_side is not None and self.max_side is not None and self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) > max_side ({self.max_side}) would drop every row")


# Fixed evaluation order: cheapest and most fundamental first, so the per-rule counts read as
# "errors, then missing captions, then geometry, then information content, then degradations".
RULE_ORDER: tuple[str, ...] = (
    "error",
    "require_caption",
    "min_side",
    "max_side",
    "min_pixels",
    "max_aspect",
    "min_compression_ratio",
    "min_jpeg_bpp",
    "min_border_std",
    "min_laplacian_var",
    "max_noise_sigma",
    "max_blockiness",
    "max_color_cast",
    "min_colorfulness",
)

# Threshold rules on a single column: rule name -> column.
_COLUMN_RULES = {
    "min_compression_ratio": "compression_ratio",
    "min_jpeg_bpp": "jpeg_bpp",
    "min_border_std": "border_std",
    "min_laplacian_var": "laplacian_var",
    "max_noise_sigma": "noise_sigma",
    "max_blockiness": "blockiness",
    "max_color_cast": "color_cast",
    "min_colorfulness": "colorfulness",
}
_GEOMETRY_RULES = ("min_side", "max_side", "min_pixels", "max_aspect")


@dataclass
class RuleResult:
    """Outcome of `apply_rules` on a table of n rows.

    keep: bool[n], True where the row passed every active rule.
    reason: pyarrow string array[n], the first failing rule's name, null where kept.
    removed_per_rule: active rule -> rows for which it was the FIRST failing rule, in
        RULE_ORDER (zeros included); the values sum to the number of removed rows.
    failed_per_rule: active rule -> rows failing it regardless of other rules (for tuning a
        threshold; these overlap and do not sum to the removed count).
    """

    keep: np.ndarray
    reason: pa.Array
    removed_per_rule: dict[str, int]
    failed_per_rule: dict[str, int]

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def n_removed(self) -> int:
        return int(self.keep.size - self.keep.sum())


def active_rules(cfg: RulesConfig) -> list[str]:
    """Names of the rules `cfg` turns on, in RULE_ORDER."""
    on = []
    for name in RULE_ORDER:
        if name == "error":
            enabled = cfg.drop_errors
        elif name == "require_caption":
            enabled = cfg.require_caption
        else:
            enabled = getattr(cfg, name) is not None
        if enabled:
            on.append(name)
    # Model-score rules last: the cheap pixel measures explain most removals.
    on += [f"min_score:{c}" for c in cfg.min_score] + [f"max_score:{c}" for c in cfg.max_score]
    on += [f"min_percentile:{c}" for c in cfg.min_percentile]
    return on


def _required_columns(rule: str) -> tuple[str, ...]:
    if rule == "error":
        return ("error",)
    if rule == "require_caption":
        return ("caption",)
    if rule in _GEOMETRY_RULES:
        return ("width", "height")
    if ":" in rule:
        return (rule.split(":", 1)[1],)
    return (_COLUMN_RULES[rule],)


def _as_float(table: pa.Table, name: str) -> np.ndarray:
    """Column as float numpy with null -> NaN (so every comparison with it is False).

    float32 columns stay float32: numpy then compares in float32 against the (Python float)
    threshold, so a stored 0.1f equals a threshold of 0.1 instead of exceeding it by 1.5e-9.
    Integer columns become float64 (exact for any pixel count).
    """
    col = table.column(name)
    target = pa.float32() if col.type in (pa.float16(), pa.float32()) else pa.float64()
    col = pc.cast(col, target) if col.type != target else col
    return np.asarray(col.fill_null(float("nan")).to_numpy())


def _passes(rule: str, cfg: RulesConfig, table: pa.Table, cache: dict) -> np.ndarray:
    """bool[n]: True where the row passes `rule`. NaN/null compare False, so they fail."""
    if rule == "error":
        return np.asarray(pc.is_null(table.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
    if rule == "require_caption":
        trimmed = pc.utf8_trim_whitespace(table.column("caption"))
        ok = pc.fill_null(pc.greater(pc.utf8_length(trimmed), 0), False)
        return np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)

    if ":" in rule:
        kind, column = rule.split(":", 1)
        value = _as_float(table, column)
        if kind == "min_percentile":
            finite = value[np.isfinite(value)]
            threshold = np.percentile(finite, cfg.min_percentile[column]) if finite.size else np.inf
            return value >= threshold
        threshold = getattr(cfg, kind)[column]
        return value >= threshold if kind == "min_score" else value <= threshold

    threshold = getattr(cfg, rule)
    if rule in _GEOMETRY_RULES:
        if "wh" not in cache:
            cache["wh"] = (_as_float(table, "width"), _as_float(table, "height"))
        w, h = cache["wh"]
        with np.errstate(divide="ignore", invalid="ignore"):
            if rule == "min_side":
                value = np.minimum(w, h)
            elif rule == "max_side":
                value = np.maximum(w, h)
            elif rule == "min_pixels":
                value = w * h
            else:  # max_aspect; a zero side gives inf/NaN and fails
                value = np.maximum(w, h) / np.minimum(w, h)
    else:
        value = _as_float(table, _COLUMN_RULES[rule])
    return value >= threshold if rule.startswith("min_") else value <= threshold


def apply_rules(table: pa.Table, cfg: RulesConfig) -> RuleResult:
    """Evaluate every active rule of `cfg` on `table` (vectorised; no per-row Python).

    Raises ValueError if a column needed by an active rule is absent.
    """
    rules = active_rules(cfg)
    missing = sorted({c for r in rules for c in _required_columns(r) if c not in table.column_names})
    if missing:
        raise ValueError(
            f"rules {[r for r in rules if set(_required_columns(r)) & set(missing)]} need columns "
            f"{missing}, absent from the table (columns: {table.column_names})"
        )

    n = table.num_rows
    first = np.full(n, -1, dtype=np.int64)  # index into `rules` of the first failed rule
    removed: dict[str, int] = {}
    failed: dict[str, int] = {}
    cache: dict = {}
    for k, rule in enumerate(rules):
        fail = ~_passes(rule, cfg, table, cache)
        newly = fail & (first < 0)
        first[newly] = k
        removed[rule] = int(newly.sum())
        failed[rule] = int(fail.sum())

    keep = first < 0
    names = pa.array(rules, type=pa.string())
    # take() with null indices yields null reasons for kept rows.
    reason = names.take(pa.array(first, mask=keep)) if rules else pa.nulls(n, pa.string())
    return RuleResult(keep=keep, reason=reason, removed_per_rule=removed, failed_per_rule=failed)


def describe_rules(cfg: RulesConfig) -> list[str]:
    """One human-readable line per active rule, in evaluation order."""
    text = {
        "error": lambda v: "drop rows with an operator error",
        "require_caption": lambda v: "drop rows whose caption is null or blank",
        "min_side": lambda v: f"min(width, height) >= {v} px",
        "max_side": lambda v: f"max(width, height) <= {v} px",
        "min_pixels": lambda v: f"width x height >= {v:,} px",
        "max_aspect": lambda v: f"aspect max(w,h)/min(w,h) <= {v:g}",
        "min_compression_ratio": lambda v: f"compression_ratio >= {v:g}",
        "min_jpeg_bpp": lambda v: f"jpeg_bpp >= {v:g} bits/pixel",
        "min_border_std": lambda v: f"border_std >= {v:g} (luma 0-255)",
        "min_laplacian_var": lambda v: f"laplacian_var >= {v:g} (lower = blurrier)",
        "max_noise_sigma": lambda v: f"noise_sigma <= {v:g} (luma 0-255)",
        "max_blockiness": lambda v: f"blockiness <= {v:g}",
        "max_color_cast": lambda v: f"color_cast <= {v:g}",
        "min_colorfulness": lambda v: f"colorfulness >= {v:g}",
    }
    rules = active_rules(cfg)
    lines = []
    for r in rules:
        if ":" in r:
            kind, column = r.split(":", 1)
            value = getattr(cfg, kind)[column]
            op = {"min_score": ">=", "max_score": "<="}.get(kind)
            lines.append(f"{column} {op} {value:g}" if op else f"{column} >= its {value:g}th percentile")
        else:
            lines.append(text[r](getattr(cfg, r, None)))
    if set(rules) - {"error", "require_caption"}:
        lines.append("a null or NaN measurement fails its rule")
    return lines
