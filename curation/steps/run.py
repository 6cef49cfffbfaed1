"""Run a job spec's chain of steps against its lake, printing each step's summary."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from curation.steps.vectors.dedup import dedup
from curation.steps.export.export import export
from curation.steps.ingest.pool import ingest
from curation.steps.kg.steps import kg_augment, kg_build, kg_weights
from curation.storage.lake import Lake
from curation.steps.profiling.profile import profile
from curation.runtime import init_ray
from curation.steps.profiling.score import preflight, score
from curation.config.spec import JobSpec, StepSpec
from curation.steps.summary import StepSummary

log = logging.getLogger(__name__)


def run_step(lake: Lake, spec: JobSpec, step: StepSpec) -> StepSummary:
    if step.step == "ingest":
        cfg = dataclasses.replace(spec.ingest, source=step.source or spec.ingest.source,
                                  name=step.name or spec.ingest.name,
                                  uri_column=step.uri_column or spec.ingest.uri_column)
        return ingest(lake, cfg)
    if step.step == "profile":
        return profile(lake, spec.profile)
    if step.step == "score":
        return score(lake, spec.score)
    if step.step == "dedup":
        return dedup(lake, spec.dedup)
    if step.step == "export":
        return export(lake, step.stage, spec.stage(step.stage), out=step.out)
    if step.step == "kg-build":
        return kg_build(lake, spec.kg.build)
    if step.step == "kg-augment":
        return kg_augment(lake, spec.kg.augment)
    if step.step == "kg-weights":
        return kg_weights(lake, spec.kg.weights)
    raise ValueError(f"unknown step {step.step!r}")


def run_job(spec: JobSpec, printer: Callable[[str], None] = print) -> list[StepSummary]:
    """Start/connect Ray per `spec.runtime`, run every step in order, return the summaries."""
    spec.validate()
    if any(s.step == "score" for s in spec.steps):
        preflight(spec.score)  # a missing weight file fails here, before any step runs
    # the knowledge-graph steps run in this process: no Ray session needed for them alone
    if any(not s.step.startswith("kg-") for s in spec.steps):
        session = init_ray(spec.runtime)
        printer(f"ray: {session['nodes']} node(s), {session['cpus']} CPU(s), {session['gpus']} GPU(s); lake: {spec.lake}")
    else:
        printer(f"lake: {spec.lake}")
    lake = Lake(spec.lake)
    summaries = []
    for step in spec.steps:
        summary = run_step(lake, spec, step)
        printer(summary.render())
        summaries.append(summary)
    return summaries
