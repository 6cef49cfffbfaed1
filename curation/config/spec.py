"""Job specs: typed configuration loaded from YAML, and the runner for a chain of steps.

A spec names a lake, the runtime, step options, the training stages, and the steps to run::

    lake: ${CURATE_LAKE:-./lake}
    runtime: {address: null, num_cpus: null}
    profile: {operators: [metadata, compression, phash, nearhash, border_std, jpeg_bpp, degradation]}
    stages:
      lowres: {rules: {min_side: 256}, buckets: {resolution: 256}}
    steps:
      - {step: ingest, source: ./images, name: web}
      - {step: profile}
      - {step: score}            # encoders and heads from the `score:` section
      - {step: export, stage: lowres, out: ./out/lowres}
      - {step: kg-build}         # dumps and pruning from the `kg.build` section
      - {step: kg-augment}       # taxonomy from the pool's tags, prompt log, trending list
      - {step: kg-weights}       # one sampling weight per pool item -> `weights`

`${VAR}` and `${VAR:-default}` are expanded from the environment before parsing. The YAML is
read strictly (`curation.config.yamlfile`: safe loader, duplicate keys refused, syntax errors as
file:line:column). Unknown keys, wrong types, values out of their declared range, unknown steps,
operators and stages are `ConfigError`s naming the file, line and key path; `load_spec` checks
the document, `curation.steps.run.check_job` checks the world (files, models, the lake) before
any work. The steps are those of `curation.steps.registry`. The same spec runs on an embedded
local Ray or on a cluster (`runtime.address`, `--address`, or RAY_ADDRESS).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from importlib import resources

from curation.config.typed import ConfigError, from_dict
from curation.config.yamlfile import load_yaml
from curation.steps import registry
from curation.steps.captions.config import CaptionConfig
from curation.steps.vectors.dedup import DedupConfig
from curation.steps.export.export import StageConfig
from curation.steps.ingest.pool import IngestConfig
from curation.steps.kg.steps import KgConfig
from curation.steps.pairs.config import PairsConfig
from curation.steps.nightly.night import NightlyConfig
from curation.steps.review.config import HardcasesConfig, ReviewConfig
from curation.steps.profiling.ocr import OcrConfig
from curation.steps.profiling.profile import ProfileConfig
from curation.runtime import RuntimeConfig
from curation.steps.profiling.score import ScoreConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# Names that become part of a table path (`manifests/<stage>`, `embeddings/<encoder>`).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: str, where: str, kind: str = "name") -> None:
    """A stage or encoder name: letters, digits, `_`, `.`, `-` (no `/`, no `..`); it becomes
    part of a table path, so nothing may escape the lake."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: invalid {kind} name {name!r} (use letters, digits, '_', '.', '-'; "
                          "no '/' or '..')", where)


@dataclass
class StepSpec:
    """One step of a job: `step` is a registered step name (`curation.steps.registry`); the
    other fields are per-step options, each accepted by the steps that declare it: ingest
    takes source/name/uri_column/image_column (overriding the `ingest:` section), export and
    sample take stage/out/epoch/size/seed (size and seed override the stage's `sample:`);
    export also takes skip_unchanged (write nothing when its last export is still current:
    the same spec and every table it reads at the version it read; the nightly job's choice)."""

    step: str
    source: str | list[str] | None = None
    name: str | None = None
    uri_column: str | None = None
    image_column: str | None = None
    stage: str | None = None
    out: str | None = None
    epoch: int | None = field(default=None, metadata={"min": 0})
    size: int | None = field(default=None, metadata={"min": 1})
    seed: int | None = field(default=None, metadata={"min": 0})
    skip_unchanged: bool | None = None

    def __post_init__(self) -> None:
        registry.get(self.step)  # ConfigError listing the known steps


STEP_OPTIONS = tuple(f.name for f in fields(StepSpec) if f.name != "step")


@dataclass
class JobSpec:
    lake: str = "./lake"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    kg: KgConfig = field(default_factory=KgConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    hardcases: HardcasesConfig = field(default_factory=HardcasesConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    stages: dict[str, StageConfig] = field(default_factory=lambda: {"default": StageConfig()})
    steps: list[StepSpec] = field(default_factory=list)

    def stage(self, name: str) -> StageConfig:
        if name not in self.stages:
            raise ConfigError(f"unknown stage {name!r}; the spec defines {sorted(self.stages)}")
        return self.stages[name]

    def validate(self) -> None:
        """Document checks (no I/O): names that become table paths, the score section, every
        step's name, options and `validate` hook. Raises ConfigError naming the key path."""
        if not self.lake:
            raise ConfigError("lake: no lake path given", "lake")
        for name in self.stages:
            check_name(name, f"stages.{name}", "stage")
        for i, enc in enumerate(self.score.encoders):
            check_name(enc.name, f"score.encoders[{i}].name", "encoder")
        if self.dedup.encoder is not None:
            check_name(self.dedup.encoder, "dedup.encoder", "encoder")
        try:
            self.score.validate()
        except ValueError as exc:
            raise ConfigError(f"score: {exc}", "score") from None
        try:
            self.review.validate()
        except ValueError as exc:  # the message starts with the key it names
            raise ConfigError(str(exc), str(exc).split(":", 1)[0]) from None
        try:
            self.pairs.validate()
        except ValueError as exc:  # the message starts with the key it names
            key = str(exc).split(":", 1)[0]
            raise ConfigError(str(exc), key) from None
        for i, s in enumerate(self.steps):
            where = f"steps[{i}]"
            registry.get(s.step, f"{where}.step").check(self, s, where)


def expand_env(text: str) -> str:
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else ""), text)


def load_spec(path: str | None = None) -> JobSpec:
    """Load and check a spec file; None loads the packaged default (`jobs/profile.yaml`).

    Every problem is a ConfigError of one line naming the file and, where it can, the line and
    key: YAML syntax, duplicate keys, `!!python` tags, unknown keys, types, ranges, steps,
    operators, stage names."""
    if path is None:
        text = resources.files("jobs").joinpath("profile.yaml").read_text()
        origin = "jobs/profile.yaml (packaged)"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(f"job spec not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read job spec {path}: {getattr(exc, 'strerror', None) or exc}") from None
        origin = path
    data, locate = load_yaml(expand_env(text), origin)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a job spec must be a mapping, got {type(data).__name__}")
    try:
        spec = from_dict(JobSpec, data)
        spec.validate()
    except ConfigError as exc:
        raise ConfigError(f"{locate(exc.path)}: {exc}", exc.path) from None
    return spec


def packaged_spec_path(name: str) -> str:
    return str(resources.files("jobs").joinpath(name))
