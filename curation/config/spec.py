"""Job specs: typed configuration loaded from YAML, and the runner for a chain of steps.

A spec names a lake, the runtime, step options, the training stages, and the steps to run::

    lake: ${CURATE_LAKE:-./lake}
    runtime: {address: null, num_cpus: null}
    profile: {operators: [metadata, compression, phash, border_std, jpeg_bpp, degradation]}
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

`${VAR}` and `${VAR:-default}` are expanded from the environment before parsing. Unknown keys
and wrong types are errors naming the key path. The same spec runs on an embedded local Ray
or on a cluster (`runtime.address`, `--address`, or RAY_ADDRESS).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import yaml

from curation.config.typed import ConfigError, from_dict
from curation.steps.vectors.dedup import DedupConfig
from curation.steps.export.export import StageConfig
from curation.steps.ingest.pool import IngestConfig
from curation.steps.kg.steps import KgConfig
from curation.steps.profiling.profile import ProfileConfig
from curation.runtime import RuntimeConfig
from curation.steps.profiling.score import ScoreConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class StepSpec:
    """One step of a job. ingest uses source/name/uri_column; export uses stage/out."""

    step: Literal["ingest", "profile", "score", "dedup", "export", "kg-build", "kg-augment", "kg-weights"]
    source: str | None = None
    name: str | None = None
    uri_column: str | None = None
    stage: str | None = None
    out: str | None = None


@dataclass
class JobSpec:
    lake: str = "./lake"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    kg: KgConfig = field(default_factory=KgConfig)
    stages: dict[str, StageConfig] = field(default_factory=lambda: {"default": StageConfig()})
    steps: list[StepSpec] = field(default_factory=list)

    def stage(self, name: str) -> StageConfig:
        if name not in self.stages:
            raise ConfigError(f"unknown stage {name!r}; the spec defines {sorted(self.stages)}")
        return self.stages[name]

    def validate(self) -> None:
        try:
            self.score.validate()
        except ValueError as exc:
            raise ConfigError(f"score: {exc}") from None
        for i, s in enumerate(self.steps):
            if s.step == "ingest" and not (s.source or self.ingest.source):
                raise ConfigError(f"steps[{i}]: ingest needs a source")
            if s.step == "kg-build":
                try:
                    self.kg.build.validate()
                except ValueError as exc:
                    raise ConfigError(f"steps[{i}]: {exc}") from None
            if s.step == "export":
                if not s.stage:
                    raise ConfigError(f"steps[{i}]: export needs a stage")
                self.stage(s.stage)


def expand_env(text: str) -> str:
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else ""), text)


def load_spec(path: str | None = None) -> JobSpec:
    """Load a spec file; None loads the packaged default (`jobs/profile.yaml`)."""
    if path is None:
        text = resources.files("jobs").joinpath("profile.yaml").read_text()
        origin = "jobs/profile.yaml (packaged)"
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        origin = path
    data = yaml.safe_load(expand_env(text)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a job spec must be a mapping, got {type(data).__name__}")
    spec = from_dict(JobSpec, data)
    spec.validate()
    return spec


def packaged_spec_path(name: str) -> str:
    return str(resources.files("jobs").joinpath(name))
