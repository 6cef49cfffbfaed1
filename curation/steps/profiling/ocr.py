"""The OCR step: text read in every pool image -> the `ocr` table (`curate ocr LAKE`).

OCR costs about a second per image on a CPU core (`operators.ocr`), a hundred times the whole
`profile` operator set, so it is a profiling operator set of its own rather than a member of
`profile.operators`:

- its own step (`- {step: ocr}` in a job, `curate ocr LAKE`) and config section (`ocr:`);
- its own table, `ocr` (keys `id`, `error`, `profile_producer`, then the operators' columns,
  built by `profile_schema` like `profiles`), written by the same fused runner as `profiles`
  (`curation.steps.profiling.profile.run_operator_set`: one read, one decode per image, errors
  per row);
- so both sets are incremental on their own: `profile` never re-runs because OCR was added
  or changed, and a new OCR version re-reads text without touching `profiles`. Listing `ocr`
  in `profile.operators` is refused (it would re-profile the whole pool and put the same
  columns in two tables).

Only `profile` would have to change if one table per set ever became a burden: the lake holds
no other coupling. The summary gives the throughput (images/s, and per CPU) and what was found:
images with text, lines read, scripts, the mean area share of text where there is some.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow.compute as pc

from curation.steps.profiling.profile import run_operator_set
from curation.steps.summary import StepSummary
from curation.storage.lake import Lake
from curation.storage.schemas import OCR
from operators.decode import DEFAULT_MAX_PIXELS
from operators.registry import DEFAULT_OCR_OPERATORS


@dataclass
class OcrConfig:
    """ocr step options (the `ocr:` section).

    operators: the OCR operator set (operators.registry names), run on one decode per image;
        none of them may also be in `profile.operators`.
    max_pixels: images whose header claims more pixels are not decoded (error row), pixels.
    batch_size: images per Ray task batch (OCR takes ~0.2-2 s per image: keep batches small
        so every CPU gets work).
    """

    operators: list[str] = field(default_factory=lambda: list(DEFAULT_OCR_OPERATORS))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"min": 1})
    batch_size: int = field(default=4, metadata={"min": 1})


def ocr(lake: Lake, cfg: OcrConfig) -> StepSummary:
    """Read text in every pool image not yet read by this operator set; append to `ocr`
    (a changed set re-reads the pool into a new overwrite version of `ocr` only)."""
    import ray

    summary, written = run_operator_set(lake, cfg, OCR, "ocr",
                                        columns=("ocr_boxes", "ocr_area", "ocr_script"))
    if written is None:
        return summary
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    rate = summary.rows_per_second
    summary.notes["throughput"] = f"{rate:.2f} images/s on {cpus} CPU(s), {rate / cpus:.2f} per CPU"
    summary.notes.update(text_stats(written))
    return summary


def text_stats(rows) -> dict:
    """Summary notes over `ocr` rows (a pyarrow table with ocr_boxes, ocr_area, ocr_script, error)."""
    read = rows.filter(pc.is_valid(rows["ocr_boxes"])) if "ocr_boxes" in rows.column_names else rows.slice(0, 0)
    with_text = read.filter(pc.greater(read["ocr_boxes"], 0)) if read.num_rows else read
    scripts = Counter(s for s in with_text["ocr_script"].to_pylist()) if with_text.num_rows else Counter()
    mean_area = pc.mean(with_text["ocr_area"]).as_py() if with_text.num_rows else None
    return {
        "images_with_text": f"{with_text.num_rows} of {read.num_rows} read",
        "lines": int(pc.sum(read["ocr_boxes"]).as_py() or 0) if read.num_rows else 0,
        "scripts": dict(scripts.most_common()) or "-",
        "text_area_share": f"mean {mean_area:.3f} where there is text" if mean_area is not None else "-",
    }
