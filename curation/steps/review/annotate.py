"""The queue's round trip through an annotation tool (Label Studio): export tasks, import the
verdicts. The file formats live in `labelstudio.py`; this module moves review states.

    curate review export LAKE --to labelstudio OUT.json   -> OUT.json (tasks), OUT.xml (labelling
        config to create the project with), images/ (items that are not plain files)
    curate review import LAKE EXPORT.json                 -> accepted / corrected / rejected

Image references (`review.labelstudio`): `local-files` makes each image a path below
`document_root` served by Label Studio itself (start it with
LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to
the same directory; without `document_root`, the export's own folder, and every image is copied
into its `images/`); `url` prefixes the same relative path with `url_prefix` (a static file
server, a bucket's https endpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.review import labelstudio as ls
from curation.steps.review.apply import LEVELS
from curation.steps.review.config import ReviewConfig
from curation.steps.review.queue import now, update
from curation.storage import io, schemas
from curation.storage.lake import Lake

__all__ = ["export_reviews", "import_reviews"]


def _outputs(out: str) -> tuple[str, str, str]:
    """(tasks json, labelling config xml, the folder whose images/ gets copied images)."""
    stem = out[:-5] if out.lower().endswith(".json") else out
    return f"{stem}.json", f"{stem}.xml", os.path.dirname(os.path.abspath(stem))


def export_reviews(lake: Lake, out: str, cfg: ReviewConfig, run_id: str | None = None) -> dict:
    """Write the tasks of every review waiting for a human (ai_checked, or already exported and
    still pending; one run's with `run_id`), and move ai_checked ones to human_pending."""
    if not lake.exists(schemas.REVIEWS):
        raise ValueError("no review queue in this lake: run `curate review propose` first")
    reviews = lake.read(schemas.REVIEWS)
    todo = reviews.filter(pc.is_in(reviews["state"], value_set=pa.array(["ai_checked", "human_pending"])))
    if run_id is not None:
        todo = todo.filter(pc.equal(todo["run_id"], run_id))
    tasks_path, config_path, out_dir = _outputs(out)
    rows = todo.sort_by([("run_id", "ascending"), ("review_id", "ascending")]).to_pylist()
    pool = lake.read(schemas.POOL, columns=["id", "uri", "byte_offset", "byte_size"])
    where = {r["id"]: r for r in pool.to_pylist()}
    lcfg = cfg.labelstudio
    if lcfg.document_root is None:  # a self-contained export: every image copied beside it
        lcfg = dataclasses.replace(lcfg, document_root=out_dir)
    paths = ls.materialise_images([{**r, **where[r["id"]]} for r in rows], out_dir, lcfg.document_root)
    unreadable = [r["review_id"] for r in rows if r["id"] not in paths]
    rows = [r for r in rows if r["id"] in paths]  # an image that cannot be read cannot be reviewed
    refs = {r["id"]: ls.image_reference(paths[r["id"]], lcfg) for r in rows}
    scores = sorted({k for r in rows for k in json.loads(r["proposed_scores_json"] or "{}")})
    tasks = ls.export_tasks(rows, refs, scores)
    fs, path = io.resolve(tasks_path)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(tasks, ensure_ascii=False, indent=1).encode())
    fs, path = io.resolve(config_path)
    with fs.open_output_stream(path) as f:
        f.write(ls.labeling_config(LEVELS, scores).encode())
    stamp = now()
    moved = [{**r, "state": "human_pending", "export_file": tasks_path, "updated_at": stamp}
             for r in rows if r["state"] == "ai_checked"]
    update(lake, moved, {"step": "review export", "file": tasks_path})
    return {"tasks": len(tasks), "newly_pending": len(moved), "tasks_file": tasks_path, "config_file": config_path,
            "images": lcfg.images, "document_root": lcfg.document_root, "images_unreadable": len(unreadable),
            "unreadable_examples": unreadable[:5]}


def import_reviews(lake: Lake, export_path: str) -> dict:
    """Apply an annotation export: each annotation of a known, pending (or already answered)
    review sets its verdict, corrections, annotator and time; the same file twice changes
    nothing; a newer answer replaces an older one."""
    if not lake.exists(schemas.REVIEWS):
        raise ValueError("no review queue in this lake: run `curate review propose` first")
    try:
        data = io.read_bytes(export_path)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the annotation export {export_path}: {exc}") from None
    parsed = ls.parse_export(data)
    reviews = {r["review_id"]: r for r in lake.read(schemas.REVIEWS).to_pylist()}
    problems = dict(parsed.problems)
    changed, unchanged, examples = [], 0, list(parsed.examples)
    for a in parsed.annotations:
        r = reviews.get(a.review_id)
        if r is None or r["id"] != a.item_id:
            problems["unknown_item"] = problems.get("unknown_item", 0) + 1
            examples.append(f"{a.review_id or a.item_id}: not in the review queue")
            continue
        if r["state"] in ("proposed", "ai_checked"):
            problems["not_exported"] = problems.get("not_exported", 0) + 1
            examples.append(f"{a.review_id}: answered before it was exported (state {r['state']}); applied")
        if r["human_verdict"] is not None and (r["updated_at"] or "") > (a.decided_at or ""):
            unchanged += 1  # an older answer than the one the queue holds
            continue
        new = {**r, "human_verdict": a.verdict, "annotator": a.annotator, "human_note": a.note, "state": a.verdict,
               "updated_at": a.decided_at or now()}
        for level in LEVELS:
            new[f"corrected_{level}"] = a.corrected.get(level)
        new["corrected_tags"] = a.corrected.get("tags")
        if all(new[k] == r[k] for k in new):
            unchanged += 1
            continue
        changed.append(new)
    update(lake, changed, {"step": "review import", "file": export_path})
    by_verdict: dict[str, int] = {}
    for c in changed:
        by_verdict[c["human_verdict"]] = by_verdict.get(c["human_verdict"], 0) + 1
    return {"tasks": parsed.tasks, "annotations": len(parsed.annotations), "applied": len(changed),
            "unchanged": unchanged, "by_verdict": by_verdict, "problems": problems, "examples": examples[:10]}
