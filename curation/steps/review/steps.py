"""The active-curation steps, each separate and idempotent (a job never waits on a human):

    hardcases       failure prompts / images -> hit communities, concept coverage, decisions
    review-propose  a run's proposals (balanced draw + hard cases), checked by the AI verifier
    review-export   Label Studio tasks and labelling config for the pending proposals
    review-import   Label Studio's export -> accepted / corrected / rejected
    review-apply    verdicts -> `labels` (read by export, sampler, kg augment) and `removals`
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from curation.steps.review.config import HardcasesConfig, ReviewConfig
from curation.steps.summary import StepSummary
from curation.storage.lake import Lake

if TYPE_CHECKING:
    from curation.steps.captions.config import CaptionConfig
    from curation.steps.profiling.score import ScoreConfig

__all__ = ["hardcases", "review_apply", "review_export", "review_import", "review_propose"]


def _summary(name: str, t0: float, notes: dict, rows_in: int = 0, rows_out: int = 0) -> StepSummary:
    return StepSummary(name, rows_in=rows_in, rows_out=rows_out, seconds=time.perf_counter() - t0, notes=notes)


def hardcases(lake: Lake, cfg: HardcasesConfig, score: "ScoreConfig") -> StepSummary:
    """Mine the failure queries of `cfg.prompts` / `cfg.images` and record their decisions."""
    from curation.steps.review.hardcases import decide, mine, read_queries
    from curation.steps.review.queue import run_id_default
    from curation.steps.vectors.search import VectorSearch

    t0 = time.perf_counter()
    run_id = cfg.run_id or run_id_default()
    queries, problems = read_queries(cfg.prompts, cfg.images)
    if not queries:
        raise ValueError(f"hardcases: no queries in {cfg.prompts or ''} {cfg.images or ''}".strip())
    search = VectorSearch.open(lake, score.encoders, cfg.encoder or score.alignment_encoder)
    cases = mine(lake, search, queries, cfg, run_id)
    notes = decide(lake, cases, cfg, run_id)
    notes.update(run_id=run_id, query_problems=problems)
    return _summary("hardcases", t0, notes, rows_in=len(queries), rows_out=cases.num_rows)


def review_propose(lake: Lake, cfg: ReviewConfig, caption: "CaptionConfig | None" = None) -> StepSummary:
    from curation.steps.review.queue import propose, run_id_default

    t0 = time.perf_counter()
    notes = propose(lake, cfg, cfg.run_id or run_id_default(), caption)
    return _summary("review-propose", t0, notes, rows_out=notes.get("proposed", 0))


def review_export(lake: Lake, cfg: ReviewConfig, out: str) -> StepSummary:
    from curation.steps.review.annotate import export_reviews

    t0 = time.perf_counter()
    notes = export_reviews(lake, out, cfg, cfg.run_id)
    return _summary("review-export", t0, notes, rows_out=notes["tasks"])


def review_import(lake: Lake, source: str) -> StepSummary:
    from curation.steps.review.annotate import import_reviews

    t0 = time.perf_counter()
    notes = import_reviews(lake, source)
    return _summary("review-import", t0, notes, rows_in=notes["tasks"], rows_out=notes["applied"])


def review_apply(lake: Lake) -> StepSummary:
    from curation.steps.review.apply import apply

    t0 = time.perf_counter()
    notes = apply(lake)
    return _summary("review-apply", t0, notes, rows_out=notes["labels_written"] + notes["removals_written"])
