"""Run steps against a lake: a job spec's chain (`run_job`) or one step (`run_step`).

Both go through `curation.steps.registry` and check everything before work starts
(`check_job`): the document (`JobSpec.validate`), every step's `preflight` (inputs exist, model
weights are there) and the lake location (exists or creatable, writable, reachable). Only then
is Ray started (when a step needs it) and the lake opened, so a bad spec exits without a Ray
session and without creating anything on disk.

    from curation import run_step
    run_step("./lake", "ingest", source="./images")
    run_step("./lake", "profile", operators=["metadata", "phash"], max_pixels=50_000_000)
    run_step("./lake", "export", stage="lowres", out="./out/lowres", spec=load_spec("jobs/profile.yaml"))
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable

from curation.config.typed import ConfigError, override
from curation.steps import registry

if TYPE_CHECKING:
    from curation.config.spec import JobSpec
    from curation.steps.summary import StepSummary
    from curation.storage.lake import Lake

log = logging.getLogger(__name__)


def check_job(spec: "JobSpec", *, lake: "Lake | None" = None) -> list[registry.Step]:
    """Everything checked before work starts; returns the steps' registry entries in order.

    `lake`: an already opened Lake (its location is not checked again)."""
    from curation.storage.location import check_lake

    spec.validate()
    entries = [registry.get(s.step, f"steps[{i}].step") for i, s in enumerate(spec.steps)]
    for i, (entry, step) in enumerate(zip(entries, spec.steps)):
        if entry.preflight is not None:
            entry.preflight(spec, step, f"steps[{i}]")
    if lake is None:
        check_lake(spec.lake, create=True)
    return entries


def run_job(spec: "JobSpec", printer: Callable[[str], None] = print, *,
            lake: "Lake | None" = None) -> list["StepSummary"]:
    """Check the job (`check_job`), start/connect Ray per `spec.runtime` when a step needs it,
    run every step in order, return the summaries. `lake`: an already opened Lake to use
    instead of `Lake(spec.lake)` (e.g. one with a configured filesystem)."""
    from curation.runtime import init_ray
    from curation.storage.lake import Lake

    entries = check_job(spec, lake=lake)
    where = lake.uri if lake is not None else spec.lake
    if any(e.needs_ray for e in entries):
        session = init_ray(spec.runtime)
        printer(f"ray: {session['nodes']} node(s), {session['cpus']} CPU(s), {session['gpus']} GPU(s); lake: {where}")
    else:
        printer(f"lake: {where}")  # the knowledge-graph steps run in this process
    lake = lake if lake is not None else Lake(spec.lake)
    summaries = []
    for entry, step in zip(entries, spec.steps):
        summary = entry(lake, spec, step)
        printer(summary.render())
        summaries.append(summary)
    return summaries


def run_step(lake: "str | Lake", step: str, spec: "JobSpec | None" = None, *,
             overrides: dict[str, Any] | None = None, printer: Callable[[str], None] | None = None,
             **options: Any) -> "StepSummary":
    """Run the registered step `step` on `lake` (a path/URI or an opened Lake), with every
    check of a job. `spec`: stages and step options (default: the packaged `jobs/profile.yaml`).

    options: the step's own options (`source=`, `name=`, `uri_column=`, `image_column=` for ingest; `stage=`,
    `out=` for export) and, by field name, overrides of its config section
    (`run_step(lake, "profile", operators=["phash"])` sets `profile.operators`).
    overrides: dotted keys anywhere in the spec ({"runtime.num_cpus": 2}). Values are checked
    like YAML values (types, ranges); nothing in `spec` is modified."""
    from curation.config.spec import STEP_OPTIONS, StepSpec, load_spec
    from curation.storage.lake import Lake

    entry = registry.get(step)
    spec = spec if spec is not None else load_spec(None)
    step_options = {k: v for k, v in options.items() if k in STEP_OPTIONS}
    changes = dict(overrides or {})
    section_options = {k: v for k, v in options.items() if k not in STEP_OPTIONS}
    if section_options:
        if entry.section is None or not dataclasses.is_dataclass(entry.config(spec)):
            raise ConfigError(f"step {step!r} has no config section for {sorted(section_options)}")
        changes.update({f"{entry.section}.{k}": v for k, v in section_options.items()})
    opened = lake if isinstance(lake, Lake) else None
    changes["lake"] = opened.uri if opened is not None else lake
    changes["steps"] = [StepSpec(step, **step_options)]
    job = override(spec, changes)
    return run_job(job, printer=printer or (lambda s: None), lake=opened)[0]
