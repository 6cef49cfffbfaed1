import math

import numpy as np
import pyarrow as pa
import pytest

from curation.config.typed import ConfigError, from_dict
from curation.steps.export.rules import RULE_ORDER, RulesConfig, apply_rules, describe_rules

N = None


def profile_table(**columns) -> pa.Table:
    types = {"width": pa.int32(), "height": pa.int32(), "error": pa.string(), "caption": pa.string()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.float32())) for k, v in columns.items()})


def reasons(result) -> list:
    return result.reason.to_pylist()


# Eight rows, one story each (expected first failing rule on the right).
MIXED = dict(
    error=[N, "decode: truncated", N, N, N, N, N, N],
    caption=["a cat", "x", "a dog", "a bird", "   ", "a pano", "a fox", "a cow"],
    width=[1024, N, 200, 800, 800, 4000, 800, 800],
    height=[768, N, 300, 800, 800, 500, 800, 800],
    laplacian_var=[300, N, 300, 10, 300, 300, N, 5],
    noise_sigma=[2, N, 2, 2, 2, 2, 2, 20],
)
MIXED_CFG = RulesConfig(min_side=256, max_aspect=4, min_laplacian_var=50, max_noise_sigma=8, require_caption=True)
MIXED_REASONS = [N, "error", "min_side", "min_laplacian_var", "require_caption", "max_aspect", "min_laplacian_var", "min_laplacian_var"]


def test_mixed_table_first_failing_rule():
    result = apply_rules(profile_table(**MIXED), MIXED_CFG)
    assert reasons(result) == MIXED_REASONS
    assert result.keep.tolist() == [True] + [False] * 7
    assert result.reason.type == pa.string()
    # first-failing counts, every active rule present, in RULE_ORDER
    assert result.removed_per_rule == {
        "error": 1, "require_caption": 1, "min_side": 1, "max_aspect": 1,
        "min_laplacian_var": 3, "max_noise_sigma": 0,
    }
    assert list(result.removed_per_rule) == [r for r in RULE_ORDER if r in result.removed_per_rule]
    assert sum(result.removed_per_rule.values()) == result.n_removed == 7
    # failures regardless of order: the error row has null measurements and fails those too
    assert result.failed_per_rule == {
        "error": 1, "require_caption": 1, "min_side": 2, "max_aspect": 2,
        "min_laplacian_var": 4, "max_noise_sigma": 2,
    }


def test_chunked_table_gives_same_answer():
    table = profile_table(**MIXED)
    chunked = pa.concat_tables([table.slice(0, 3), table.slice(3, 2), table.slice(5)])
    assert chunked.column("width").num_chunks == 3
    assert reasons(apply_rules(chunked, MIXED_CFG)) == MIXED_REASONS


# Single-column threshold rules: the value equal to the threshold passes, one step past it
# fails, null fails (a missing measurement is not proof of quality), NaN fails.
COLUMN_RULES = [
    ("min_compression_ratio", "compression_ratio", 2.0, 1.5),
    ("min_jpeg_bpp", "jpeg_bpp", 0.5, 0.25),
    ("min_border_std", "border_std", 4.0, 3.5),
    ("min_laplacian_var", "laplacian_var", 50.0, 49.5),
    ("max_noise_sigma", "noise_sigma", 8.0, 8.5),
    ("max_blockiness", "blockiness", 1.5, 2.0),
    ("max_color_cast", "color_cast", 0.25, 0.5),
    ("min_colorfulness", "colorfulness", 5.0, 4.5),
]


@pytest.mark.parametrize("rule, column, threshold, failing", COLUMN_RULES)
def test_each_column_rule(rule, column, threshold, failing):
    table = profile_table(error=[N] * 4, **{column: [threshold, failing, N, math.nan]})
    result = apply_rules(table, RulesConfig(**{rule: threshold}))
    assert result.keep.tolist() == [True, False, False, False]
    assert reasons(result) == [N, rule, rule, rule]
    assert result.removed_per_rule == {"error": 0, rule: 3}


@pytest.mark.parametrize(
    "rule, threshold, sizes, keep",
    [
        # sizes are (width, height)
        ("min_side", 256, [(256, 1000), (1000, 255), (N, 500), (300, 300)], [True, False, False, True]),
        ("max_side", 2048, [(2048, 10), (10, 2049), (500, N), (300, 300)], [True, False, False, True]),
        ("min_pixels", 10_000, [(100, 100), (99, 101), (N, N), (50_000, 50_000)], [True, False, False, True]),
        ("max_aspect", 2.0, [(200, 100), (100, 201), (0, 100), (100, 100)], [True, False, False, True]),
    ],
)
def test_geometry_rules(rule, threshold, sizes, keep):
    w, h = zip(*sizes)
    result = apply_rules(profile_table(width=w, height=h), RulesConfig(drop_errors=False, **{rule: threshold}))
    assert result.keep.tolist() == keep
    assert reasons(result) == [N if k else rule for k in keep]
    assert result.removed_per_rule == {rule: keep.count(False)}


def test_float32_value_equal_to_threshold_passes():
    # float32(0.1) is 0.10000000149 in float64; the comparison must happen in float32.
    table = profile_table(blockiness=[0.1, 0.1000001], colorfulness=[0.3, 0.3])
    result = apply_rules(table, RulesConfig(drop_errors=False, max_blockiness=0.1, min_colorfulness=0.3))
    assert result.keep.tolist() == [True, False]


def test_require_caption_null_and_blank():
    table = profile_table(caption=["ok", N, "", " \t\n", " x "])
    result = apply_rules(table, RulesConfig(require_caption=True, drop_errors=False))
    assert result.keep.tolist() == [True, False, False, False, True]


def test_drop_errors_switch():
    table = profile_table(error=["op: boom", N], width=[512, 512], height=[512, 512])
    assert apply_rules(table, RulesConfig()).keep.tolist() == [False, True]
    kept = apply_rules(table, RulesConfig(drop_errors=False, min_side=256))
    assert kept.keep.tolist() == [True, True] and kept.removed_per_rule == {"min_side": 0}


def test_no_active_rule_keeps_everything():
    table = profile_table(width=[1, 2, 3])
    result = apply_rules(table, RulesConfig(drop_errors=False))
    assert result.keep.tolist() == [True] * 3
    assert reasons(result) == [N] * 3
    assert result.removed_per_rule == {} and result.n_kept == 3


def test_empty_table():
    result = apply_rules(profile_table(error=[], width=[], height=[]), RulesConfig(min_side=1))
    assert result.keep.shape == (0,) and len(result.reason) == 0
    assert result.removed_per_rule == {"error": 0, "min_side": 0}


def test_missing_column_is_a_configuration_error():
    with pytest.raises(ValueError, match=r"need columns \['laplacian_var'\]"):
        apply_rules(profile_table(error=[N]), RulesConfig(min_laplacian_var=10))


def test_integer_columns_and_int64_file_sizes():
    # width/height may arrive as int64 or uint16; compares stay exact
    table = pa.table({"width": pa.array([300, 100], pa.uint16()), "height": pa.array([300, 300], pa.int64())})
    assert apply_rules(table, RulesConfig(drop_errors=False, min_side=256)).keep.tolist() == [True, False]


def test_config_validation_and_yaml_loading():
    with pytest.raises(ValueError, match="max_aspect"):
        RulesConfig(max_aspect=0.5)
    with pytest.raises(ValueError, match="min_jpeg_bpp must be >= 0"):
        RulesConfig(min_jpeg_bpp=-1)
    with pytest.raises(ValueError, match="would drop every row"):
        RulesConfig(min_side=512, max_side=256)
    cfg = from_dict(RulesConfig, {"min_side": 512, "max_aspect": 3})
    assert cfg.max_aspect == 3.0
    with pytest.raises(ConfigError, match=r"^stages\.sft\.rules\.min_side: expected int, got str 'abc'$"):
        from_dict(RulesConfig, {"min_side": "abc"}, path="stages.sft.rules")


def test_describe_rules():
    assert describe_rules(RulesConfig()) == ["drop rows with an operator error"]
    lines = describe_rules(RulesConfig(min_side=256, min_pixels=1_000_000, max_noise_sigma=8))
    assert lines == [
        "drop rows with an operator error",
        "min(width, height) >= 256 px",
        "width x height >= 1,000,000 px",
        "noise_sigma <= 8 (luma 0-255)",
        "a null or NaN measurement fails its rule",
    ]


def test_rule_order_covers_every_config_field():
    from dataclasses import fields

    score_rules = {"min_score", "max_score", "min_percentile"}  # keyed by column: named per column
    names = {f.name for f in fields(RulesConfig)} - {"drop_errors"} - score_rules
    assert set(RULE_ORDER) - {"error"} == names


def test_score_rules_by_value_and_percentile():
    t = pa.table({"error": pa.nulls(5, pa.string()),
                  "aesthetic": pa.array([4.0, 6.0, None, 7.0, 5.5], pa.float32()),
                  "nsfw": pa.array([0.1, 0.9, 0.2, 0.3, 0.4], pa.float32()),
                  "clip_alignment": pa.array([0.10, 0.20, 0.30, 0.40, 0.50], pa.float32())})
    r = apply_rules(t, RulesConfig(min_score={"aesthetic": 5.0}, max_score={"nsfw": 0.5}))
    assert r.keep.tolist() == [False, False, False, True, True]
    assert r.reason.to_pylist() == ["min_score:aesthetic", "max_score:nsfw", "min_score:aesthetic", None, None]
    assert r.removed_per_rule == {"error": 0, "min_score:aesthetic": 2, "max_score:nsfw": 1}
    # percentile of the evaluated rows' non-null values: the 60th of 0.1..0.5 is 0.34
    r = apply_rules(t, RulesConfig(min_percentile={"clip_alignment": 60}))
    assert r.keep.tolist() == [False, False, False, True, True]
    assert describe_rules(RulesConfig(min_score={"aesthetic": 5.0}, min_percentile={"clip_alignment": 60}))[1:3] == [
        "aesthetic >= 5", "clip_alignment >= its 60th percentile"]
    with pytest.raises(ValueError, match="min_percentile"):
        RulesConfig(min_percentile={"clip_alignment": 120})
    with pytest.raises(ValueError, match="aesthetic"):
        apply_rules(t.drop_columns(["aesthetic"]), RulesConfig(min_score={"aesthetic": 5.0}))


def test_large_random_table_counts_are_consistent():
    rng = np.random.default_rng(0)
    n = 10_000
    table = pa.table({
        "error": pa.array(np.where(rng.random(n) < 0.05, "e", None).tolist(), pa.string()),
        "width": pa.array(rng.integers(50, 3000, n), pa.int32()),
        "height": pa.array(rng.integers(50, 3000, n), pa.int32()),
        "jpeg_bpp": pa.array(rng.random(n).astype(np.float32), mask=rng.random(n) < 0.02),
    })
    cfg = RulesConfig(min_side=256, max_aspect=3, min_jpeg_bpp=0.2)
    result = apply_rules(table, cfg)
    assert sum(result.removed_per_rule.values()) == result.n_removed
    r = np.array(result.reason.to_pylist(), dtype=object)
    for rule, count in result.removed_per_rule.items():
        assert (r == rule).sum() == count
    assert ((r == None) == result.keep).all()  # noqa: E711
