from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from curation.config.typed import ConfigError, from_dict, to_dict


@dataclass
class Rules:
    min_side: int | None = None
    max_aspect: float = 4.0


@dataclass
class Stage:
    name: str
    rules: Rules = field(default_factory=Rules)
    mode: Literal["low_res", "sft"] = "low_res"
    weights: dict[str, float] = field(default_factory=dict)


class Backend(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"


@dataclass
class Step:
    name: str
    enabled: bool = True


@dataclass
class Job:
    stages: dict[str, Stage] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    seed: int = 0
    note: Optional[str] = None
    backend: Backend = Backend.CPU
    size: tuple[int, int] = (1, 2)


SPEC = """
seed: 7
note: nightly
backend: gpu
stages:
  sft:
    name: sft
    mode: sft
    rules: {min_side: 1024, max_aspect: 3}
    weights: {art: 2, photo: 0.5}
  low:
    name: low
    rules:
steps:
  - {name: profile}
  - {name: dedup, enabled: false}
"""


def test_nested_build_from_yaml():
    job = from_dict(Job, yaml.safe_load(SPEC))
    assert job.seed == 7 and job.note == "nightly" and job.backend is Backend.GPU
    sft = job.stages["sft"]
    assert sft == Stage(name="sft", rules=Rules(min_side=1024, max_aspect=3.0), mode="sft", weights={"art": 2.0, "photo": 0.5})
    # an int given for a float field becomes a float
    assert type(sft.rules.max_aspect) is float and type(sft.weights["art"]) is float
    # an empty section (null in YAML) gets the defaults
    assert job.stages["low"].rules == Rules()
    assert job.steps == [Step("profile"), Step("dedup", enabled=False)]


def test_type_error_names_full_path():
    data = {"stages": {"sft": {"name": "sft", "rules": {"min_side": "abc"}}}}
    with pytest.raises(ConfigError) as exc:
        from_dict(Job, data)
    assert str(exc.value) == "stages.sft.rules.min_side: expected int, got str 'abc'"
    assert isinstance(exc.value, ValueError)


def test_unknown_key_lists_known_keys_and_suggests():
    data = {"stages": {"sft": {"name": "sft", "rules": {"min_sid": 5}}}}
    with pytest.raises(ConfigError) as exc:
        from_dict(Job, data)
    msg = str(exc.value)
    assert msg.startswith("stages.sft.rules.min_sid: unknown key 'min_sid' for Rules")
    assert "did you mean 'min_side'?" in msg
    assert "known keys: max_aspect, min_side" in msg


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as exc:
        from_dict(Job, {"zzzz": 1})
    assert "did you mean" not in str(exc.value)
    assert "known keys: backend, note, seed, size, stages, steps" in str(exc.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"seed": True}, "seed: expected int, got bool True"),  # bool is not an int here
        ({"seed": 1.5}, "seed: expected int, got float 1.5"),
        ({"note": 3}, "note: expected str, got int 3"),  # Optional reports the inner type
        ({"steps": [{"name": "a"}, {"name": "b", "enabled": "yes"}]}, "steps[1].enabled: expected bool, got str 'yes'"),
        ({"steps": {"name": "a"}}, "steps: expected list[Step], got dict {'name': 'a'}"),
        ({"stages": {"x": {"name": "x", "mode": "omni"}}}, "stages.x.mode: expected one of 'low_res', 'sft', got str 'omni'"),
        ({"stages": {"x": {"name": "x", "weights": {"a": "1"}}}}, "stages.x.weights.a: expected float, got str '1'"),
        ({"stages": {"x": {}}}, "stages.x.name: missing required key for Stage"),
        ({"stages": {"x": 3}}, "stages.x: expected a mapping for Stage, got int 3"),
        ({"size": [1, 2, 3]}, "size: expected 2 items (tuple[int, int]), got 3"),
    ],
)
def test_type_errors(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(Job, data)
    assert str(exc.value) == message


def test_enum_error_lists_values():
    with pytest.raises(ConfigError, match=r"backend: expected one of \['cpu', 'gpu'\], got str 'tpu'"):
        from_dict(Job, {"backend": "tpu"})


def test_optional_accepts_none_and_value():
    assert from_dict(Job, {"note": None}).note is None
    assert from_dict(Rules, {"min_side": None}).min_side is None
    assert from_dict(Rules, {"min_side": 3}).min_side == 3


def test_float_exponent_text_gets_yaml_hint():
    # PyYAML reads 1e-3 (no dot) as a string.
    data = yaml.safe_load("max_aspect: 1e-3")
    with pytest.raises(ConfigError, match=r"write e\.g\. 1\.0e-3"):
        from_dict(Rules, data)


def test_literal_does_not_confuse_bool_and_int():
    @dataclass
    class L:
        x: Literal[1, "a"] = 1

    assert from_dict(L, {"x": 1}).x == 1
    with pytest.raises(ConfigError):
        from_dict(L, {"x": True})


@dataclass
class Checked:
    lo: int = 0
    hi: int = 1

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError("lo > hi")


@dataclass
class Outer:
    inner: Checked = field(default_factory=Checked)


def test_post_init_validation_gets_path():
    with pytest.raises(ConfigError, match=r"^inner: lo > hi$"):
        from_dict(Outer, {"inner": {"lo": 5}})


def test_path_prefix_and_root_name():
    with pytest.raises(ConfigError, match=r"^jobs\.a\.seed: expected int"):
        from_dict(Job, {"seed": "x"}, path="jobs.a")
    with pytest.raises(ConfigError, match=r"^<root>: expected a mapping for Job"):
        from_dict(Job, [1])
    with pytest.raises(TypeError):
        from_dict(dict, {})


def test_to_dict_round_trip_through_yaml():
    job = from_dict(Job, yaml.safe_load(SPEC))
    plain = to_dict(job)
    assert plain["backend"] == "gpu" and plain["size"] == [1, 2]
    assert plain["stages"]["sft"]["rules"] == {"min_side": 1024, "max_aspect": 3.0}
    again = from_dict(Job, yaml.safe_load(yaml.safe_dump(plain)))
    assert again == job


def test_local_dataclass_with_string_annotations_gets_clear_error():
    @dataclass
    class Inner:
        x: int = 0

    @dataclass
    class Local:
        inner: Inner = field(default_factory=Inner)

    with pytest.raises(TypeError, match="define config dataclasses at module level"):
        from_dict(Local, {})


@dataclass
class Ranged:
    batch_size: int = field(default=8, metadata={"min": 1})
    ratio: float | None = field(default=None, metadata={"gt": 0, "lt": 1})
    levels: list[float] = field(default_factory=list, metadata={"gt": 0})
    pct: dict[str, float] = field(default_factory=dict, metadata={"min": 0, "max": 100})


@dataclass
class RangedJob:
    step: Ranged = field(default_factory=Ranged)


@pytest.mark.parametrize("data, message", [
    ({"step": {"batch_size": 0}}, "step.batch_size: must be >= 1, got 0"),
    ({"step": {"ratio": 1.0}}, "step.ratio: must be < 1, got 1.0"),
    ({"step": {"ratio": 0}}, "step.ratio: must be > 0, got 0.0"),
    ({"step": {"levels": [0.5, 0.0]}}, "step.levels[1]: must be > 0, got 0.0"),
    ({"step": {"pct": {"aesthetic": 101}}}, "step.pct.aesthetic: must be <= 100, got 101.0"),
    ({"step": {"ratio": float("nan")}}, "step.ratio: must be > 0, got nan"),
])
def test_declared_ranges_name_the_key(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(RangedJob, data)
    assert str(exc.value) == message and exc.value.path == message.split(":")[0]


def test_ranges_pass_none_and_valid_values_and_apply_to_overrides():
    from curation.config.typed import override

    job = from_dict(RangedJob, {"step": {"batch_size": 1, "ratio": None, "levels": [0.1], "pct": {"a": 0}}})
    assert job.step.batch_size == 1 and job.step.ratio is None
    new = override(job, {"step.batch_size": 4, "step.pct.b": 50})
    assert new.step.batch_size == 4 and new.step.pct == {"a": 0.0, "b": 50.0} and job.step.pct == {"a": 0.0}
    with pytest.raises(ConfigError, match=r"^step.batch_size: must be >= 1, got 0$"):
        override(job, {"step.batch_size": 0})
    with pytest.raises(ConfigError, match=r"^step.pct.b: must be <= 100, got 500.0$"):
        override(job, {"step.pct.b": 500})
    with pytest.raises(ConfigError, match=r"^step.size: unknown key 'size' for Ranged"):
        override(job, {"step.size": 1})
