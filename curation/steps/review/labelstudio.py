"""Label Studio round trip of the review queue: labelling config, tasks out, export back in.

Pure functions over plain rows: no lake, no Ray, no Label Studio SDK (its JSON needs none).

    labeling_config(levels, scores)          -> the project's labelling-config XML
    materialise_images(pool_rows, out_dir)   -> item id -> a local file of the item's image
    image_reference(path, cfg)               -> what a task's `image` holds (local-files or url)
    export_tasks(review_rows, refs, scores)  -> Label Studio tasks with the proposal as prediction
    parse_export(bytes)                      -> ParsedExport: one Annotation per answered item

The task's `data` carries the proposal under `proposed_<level>` / `proposed_tags`, and the
editable controls are named `caption_<level>` / `tags`: different names, because a JSON_MIN
export writes the data keys and the control values into one flat dict.

The proposal reaches the annotator as a *prediction* (Label Studio pre-fills a new annotation
from it): the TextAreas carry no `value` attribute, because the editor (TextArea.jsx) puts a
`value` into the control's input box and its `beforeSend` submits that text as one more
result, next to the edited prefilled one. A prediction whose `from_name` / `to_name` is not a control of the config is
not shown at all, so both sides take their names from `control_names`. Every prediction has
the one `model_version` MODEL_VERSION: the first import sets the project's model version to
the last prediction's, and the labelling stream then shows only predictions of that version,
so per-item versions would leave some tasks without their proposal. Where each proposal came
from (the captioner's producer, or 'source') is the task's `proposed_by` instead.

Serving images from local files needs, on the Label Studio side,
LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<root>
and a Local Storage in the project (Settings > Cloud Storage > Local files, or
`POST /api/storages/localfiles {"project", "path", "use_blob_urls": true}`) whose absolute
path contains the image files' directory: without it `/data/local-files/` answers 404
(checked on Label Studio 1.23). The storage needs no sync.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.steps.review.config import LabelStudioConfig
from curation.storage import io
from curation.storage.shards import sniff_extension

__all__ = [
    "LEVELS", "MODEL_VERSION", "VERDICTS", "Annotation", "ParsedExport", "control_names", "export_tasks",
    "image_reference", "labeling_config", "materialise_images", "parse_export", "score_to_rating", "split_tags",
]

LEVELS = ("long", "medium", "short")
# The verdict control's choices and the review states they lead to.
VERDICTS = {"accept": "accepted", "correct": "corrected", "reject": "rejected"}
MAX_RATING = 5
MODEL_VERSION = "curate-review"  # every prediction's model_version (see the module docstring)
MAX_EXAMPLES = 20
# Label Studio's own keys in a JSON_MIN row (the rest are task data or control values).
_MIN_META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TAG_SPLIT = re.compile(r"[,\uff0c]")  # ASCII and full-width commas


def score_to_rating(score: float | None) -> int | None:
    """A [0, 1] score as a 1..5 rating: five equal bins, [0, 0.2) -> 1, [0.2, 0.4) -> 2, ...,
    [0.8, 1] -> 5. Scores outside [0, 1] are clamped first (an alignment cosine below 0 rates 1);
    None and NaN give None (no rating proposed)."""
    if score is None or not math.isfinite(score):
        return None
    s = min(1.0, max(0.0, float(score)))
    return min(MAX_RATING, 1 + int(s * MAX_RATING))


def control_names(levels: Sequence[str] = LEVELS, scores: Sequence[str] = ()) -> dict[str, str]:
    """The config's control names by role: `caption_<level>` per level, `tags`, `verdict`,
    `note`, and `score_<name>` per score (roles `level:<level>` and `score:<name>`).
    ValueError for a level or score name that is not a plain identifier."""
    for name in (*levels, *scores):
        if not _NAME.fullmatch(name):
            raise ValueError(f"labelstudio: {name!r} is not usable in a control name (letters, digits, _ . -)")
    names = {f"level:{lv}": f"caption_{lv}" for lv in levels}
    names.update(tags="tags", verdict="verdict", note="note")
    names.update({f"score:{s}": f"score_{s}" for s in scores})
    return names


def labeling_config(levels: Sequence[str] = LEVELS, scores: Sequence[str] = ()) -> str:
    """Label Studio labelling-config XML for reviewing one item.

    Shows the image (`$image`), the item id (`$item_id`), why it is reviewed (`$reason`) and,
    for hard cases, the query that found it (`$query`). Controls, all on the image: one
    editable single-submission TextArea per caption level (`caption_<level>`), a TextArea
    `tags` (comma-separated), a Rating `score_<name>` (1..5, see `score_to_rating`) per score,
    the required single Choices `verdict` (accept / correct / reject) and a TextArea `note`.
    The proposal is pre-filled by the tasks' prediction (`export_tasks`).
    """
    names = control_names(levels, scores)
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$item_id", size="4")
    ET.SubElement(view, "Text", name="reason", value="$reason")
    ET.SubElement(view, "Text", name="query", value="$query")
    ET.SubElement(view, "Image", name="image", value="$image", maxWidth="768px")
    for level in levels:
        ET.SubElement(view, "Header", value=f"{level} caption", size="5")
        ET.SubElement(view, "TextArea", name=names[f"level:{level}"], toName="image", editable="true",
                      maxSubmissions="1", rows="4" if level == "long" else "2", showSubmitButton="false",
                      placeholder=f"{level} caption")
    ET.SubElement(view, "Header", value="tags (comma-separated)", size="5")
    ET.SubElement(view, "TextArea", name=names["tags"], toName="image", editable="true", maxSubmissions="1",
                  rows="1", placeholder="tag, tag, ...")
    for score in scores:
        ET.SubElement(view, "Header", value=f"{score} (1: below 0.2 ... 5: 0.8 and above)", size="5")
        ET.SubElement(view, "Rating", name=names[f"score:{score}"], toName="image", maxRating=str(MAX_RATING))
    ET.SubElement(view, "Header", value="verdict", size="5")
    choices = ET.SubElement(view, "Choices", name=names["verdict"], toName="image", choice="single",
                            required="true", showInline="true")
    for value in VERDICTS:
        ET.SubElement(choices, "Choice", value=value)
    ET.SubElement(view, "TextArea", name=names["note"], toName="image", editable="true", maxSubmissions="1",
                  rows="2", placeholder="note: why rejected, what was wrong")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def image_reference(path_or_url: str, cfg: LabelStudioConfig) -> str:
    """What a task's `image` holds for a local image file.

    local-files: `/data/local-files/?d=<path relative to document_root>` (URL-quoted; Label
    Studio's root must be the same directory). url: `url_prefix` + the relative path. An
    http(s) URL is returned as it is (Label Studio loads it directly); `file://` URIs are
    paths. ValueError naming `review.labelstudio.document_root` when it is unset or the file is
    not below it, and for other URIs (object stores: materialise them first).
    """
    if path_or_url.startswith(("http://", "https://")):
        return path_or_url
    if "://" in path_or_url and not path_or_url.startswith("file://"):
        raise ValueError(f"labelstudio: {path_or_url} is not a local file; materialise_images copies it below "
                         "review.labelstudio.document_root")
    if not cfg.document_root:
        raise ValueError("review.labelstudio.document_root: not set; it must be the directory Label Studio serves "
                         "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) or the one url_prefix points at")
    path = io.resolve(path_or_url)[1] if path_or_url.startswith("file://") else path_or_url
    root = os.path.abspath(cfg.document_root)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel.split(os.sep, 1)[0] == os.pardir:
        raise ValueError(f"review.labelstudio.document_root: {path} is not below {root}")
    quoted = urllib.parse.quote(os.fsencode(rel.replace(os.sep, "/")), safe="/")
    if cfg.images == "url":
        if not cfg.url_prefix:
            raise ValueError("review.labelstudio.url_prefix: images 'url' needs a url_prefix")
        return cfg.url_prefix.rstrip("/") + "/" + quoted
    return "/data/local-files/?d=" + quoted


def _local_file(uri: str, offset: int | None) -> str | None:
    """The local path of a uri that is a whole plain file, else None."""
    if offset is not None or io.split_member(uri)[1] is not None:
        return None
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = io.resolve(uri)[1] if uri.startswith("file://") else uri
    return path if os.path.isfile(path) else None


def materialise_images(rows: Iterable[dict], out_dir: str, document_root: str | None = None) -> dict[str, str]:
    """Item id -> a local image file Label Studio can be pointed at.

    rows: pool rows with `id`, `uri`, `byte_offset`, `byte_size`. A whole local file is used
    where it is (when `document_root` is given, only if it lies below it). Anything else (a
    shard member, an object-store object, a file outside the root) is written once to
    `<out_dir>/images/<id>.<ext>`, the extension sniffed from the bytes; an existing file of
    that name is reused (ids are content hashes). Items whose bytes cannot be read are left
    out of the result (the caller counts them).
    """
    root = os.path.abspath(document_root) if document_root else None
    images = Path(out_dir) / "images"
    out: dict[str, str] = {}
    for row in rows:
        item, uri = row["id"], row["uri"]
        local = _local_file(uri, row.get("byte_offset"))
        if local and (root is None or os.path.commonpath([root, os.path.abspath(local)]) == root):
            out[item] = local
            continue
        if not _NAME.fullmatch(item):
            raise ValueError(f"labelstudio: item id {item!r} is not usable as a file name")
        existing = sorted(images.glob(f"{item}.*"))
        if existing:
            out[item] = str(existing[0])
            continue
        try:
            data = io.read_bytes(uri, row.get("byte_offset"), row.get("byte_size"))
        except OSError:
            continue
        images.mkdir(parents=True, exist_ok=True)
        target = images / f"{item}.{sniff_extension(data)}"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        out[item] = str(target)
    return out


def _proposed_by(row: dict) -> str:
    """Where the proposal came from: the captioner's producer (backend:model | prompt version |
    language) from `proposal_models_json`, or 'source' for source captions."""
    models = json.loads(row.get("proposal_models_json") or "{}")
    captions = models.get("captions") if isinstance(models, dict) else None
    return str(captions) if captions else "source"


def _join_tags(tags: Iterable[str] | None) -> str:
    return ", ".join(t for t in (tags or []) if t)


def split_tags(text: str | None) -> list[str]:
    """Comma-separated tags (ASCII or full-width commas) as a list: stripped, empty and repeated
    ones dropped, order kept."""
    out: list[str] = []
    for tag in _TAG_SPLIT.split(text or ""):
        tag = tag.strip()
        if tag and tag not in out:
            out.append(tag)
    return out


def export_tasks(rows: Sequence[dict], image_refs: dict[str, str], scores: Sequence[str] = (),
                 levels: Sequence[str] = LEVELS) -> list[dict]:
    """Label Studio tasks (import JSON) for review rows (`REVIEWS_SCHEMA` dicts).

    Each task: `data` = {image, item_id, review_id, reason, query, proposed_by (see
    `_proposed_by`), proposed_<level>, proposed_tags ("a, b")}, and one prediction:
    model_version MODEL_VERSION, score = the AI verifier's score (sorts the Data Manager;
    omitted when there is none), result = the proposal as the config's
    controls expect it: one textarea per non-empty level, the tags, a rating per score of
    `proposed_scores_json` (`score_to_rating`), and the verdict `accept` when the AI verifier
    passed the item. Result ids are the control names (stable across exports); Label Studio
    assigns task ids. `image_refs` maps item ids to `image_reference` results; ValueError for
    an item without one.
    """
    names = control_names(levels, scores)
    tasks = []
    for row in rows:
        item = row["id"]
        if item not in image_refs:
            raise ValueError(f"labelstudio: no image reference for item {item} (review {row['review_id']})")
        data = {"image": image_refs[item], "item_id": item, "review_id": row["review_id"],
                "reason": row.get("reason") or "", "query": row.get("query") or "", "proposed_by": _proposed_by(row)}
        values: list[tuple[str, str, dict]] = []  # (control, result type, value)
        for level in levels:
            text = row.get(f"proposed_{level}") or ""
            data[f"proposed_{level}"] = text
            if text:
                values.append((names[f"level:{level}"], "textarea", {"text": [text]}))
        data["proposed_tags"] = _join_tags(row.get("proposed_tags"))
        if data["proposed_tags"]:
            values.append((names["tags"], "textarea", {"text": [data["proposed_tags"]]}))
        proposed_scores = json.loads(row.get("proposed_scores_json") or "{}")
        for score in scores:
            rating = score_to_rating(proposed_scores.get(score))
            if rating is not None:
                values.append((names[f"score:{score}"], "rating", {"rating": rating}))
        if row.get("ai_pass"):
            values.append((names["verdict"], "choices", {"choices": ["accept"]}))
        result = [{"id": c, "from_name": c, "to_name": "image", "type": kind, "value": v} for c, kind, v in values]
        prediction: dict[str, Any] = {"model_version": MODEL_VERSION, "result": result}
        if row.get("ai_score") is not None and math.isfinite(row["ai_score"]):
            prediction["score"] = float(row["ai_score"])
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


# ---- reading the export ---------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """One item's human answer, from the chosen annotation of its task.

    verdict: accepted, corrected or rejected. corrected: the fields the human changed
    ('long' / 'medium' / 'short': str, 'tags': list[str]); empty unless corrected.
    annotator: the Label Studio user (email when the export has it, else the user id).
    decided_at: the annotation's updated_at (else created_at), UTC ISO-8601, seconds.
    ratings: the 1..5 rating per score name as submitted (pre-filled from the model's score
    unless the human changed it; compare with `score_to_rating` of the proposal).
    overruled: ids of other annotations of the task that disagreed and lost to this, the latest.
    """

    review_id: str
    item_id: str
    verdict: str
    corrected: dict[str, str | list[str]]
    annotator: str | None
    decided_at: str | None
    note: str | None
    annotation_id: str | None
    ratings: dict[str, int] = field(default_factory=dict)
    overruled: tuple[str, ...] = ()


@dataclass
class ParsedExport:
    """What `parse_export` read: the applicable answers, counted problems (conflict,
    empty_caption, unannotated, cancelled, malformed_task, malformed_annotation, missing_ids,
    unknown_verdict, correct_without_change), up to `MAX_EXAMPLES` one-line examples of them,
    and the number of tasks in the file (JSON_MIN: of distinct review ids)."""

    annotations: list[Annotation]
    problems: Counter
    examples: list[str]
    tasks: int


class _Report:
    def __init__(self):
        self.problems: Counter = Counter()
        self.examples: list[str] = []

    def add(self, kind: str, where: str, detail: str = "") -> None:
        self.problems[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {where}" + (f": {detail}" if detail else ""))


def _utc(stamp: Any) -> dt.datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        t = dt.datetime.fromisoformat(stamp)  # 3.11+ reads a trailing Z
    except ValueError:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("id")
        return None if who is None else str(who)
    return None if completed_by is None else str(completed_by)


def _read_result(result: list) -> dict[str, Any]:
    """Control name -> its value: joined text ('\\n' between several submissions), the first
    chosen choice, or the rating. Unreadable entries are skipped."""
    out: dict[str, Any] = {}
    for r in result:
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            continue
        name, value = r.get("from_name"), r["value"]
        if "text" in value:
            texts = value["text"] if isinstance(value["text"], list) else [value["text"]]
            out[name] = "\n".join(str(t).strip() for t in texts if str(t).strip())
        elif value.get("choices"):
            out[name] = str(value["choices"][0])
        elif "rating" in value:
            out[name] = value["rating"]
    return out


def _outcome(values: dict[str, Any], data: dict, where: str, report: _Report | None):
    """(verdict, corrected, note, ratings) of one annotation's values, or None when it cannot be
    applied. Problems go to `report`; with None nothing is reported (judging the annotations a
    later one overrules)."""
    def problem(kind: str, detail: str = "") -> None:
        if report is not None:
            report.add(kind, where, detail)

    corrected: dict[str, Any] = {}
    emptied = []
    for name, text in values.items():
        if not (isinstance(name, str) and name.startswith("caption_")):
            continue
        level = name[len("caption_"):]
        before = (data.get(f"proposed_{level}") or "").strip()
        if not text and before:
            emptied.append(level)
            problem("empty_caption", f"{level} caption edited to empty; kept the proposal")
        elif text and text != before:
            corrected[level] = text
    if "tags" in values:
        tags = split_tags(values["tags"])
        if tags != split_tags(data.get("proposed_tags")):
            corrected["tags"] = tags
    choice = values.get("verdict")
    note = values.get("note") or None
    ratings = {k[len("score_"):]: int(v) for k, v in values.items()
               if isinstance(k, str) and k.startswith("score_") and isinstance(v, (int, float))}
    if choice is not None and choice not in VERDICTS:
        problem("unknown_verdict", f"{choice!r}")
        return None
    if choice == "reject":
        return "rejected", {}, note, ratings
    if corrected:
        return "corrected", corrected, note, ratings
    if emptied:
        return None  # the only change could not be applied: reported above
    if choice == "correct":
        problem("correct_without_change", "verdict 'correct' but every field equals the proposal")
        return None
    return "accepted", {}, note, ratings


def _choose(task: dict, report: _Report, where: str) -> Annotation | None:
    data = task["data"]
    anns = task.get("annotations") or []
    if not isinstance(anns, list):
        report.add("malformed_task", where, "annotations is not a list")
        return None
    live, cancelled = [], 0
    for a in anns:
        if not isinstance(a, dict) or not isinstance(a.get("result", []), list):
            report.add("malformed_annotation", where, "an annotation without a result list")
        elif a.get("was_cancelled") or a.get("skipped"):
            cancelled += 1
        else:
            live.append(a)
    if not live:
        if cancelled or not anns:
            report.add("cancelled" if cancelled else "unannotated", where)
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)

    def when(a: dict) -> tuple:
        t = _utc(a.get("updated_at")) or _utc(a.get("created_at")) or epoch
        return t, a["id"] if isinstance(a.get("id"), int) else 0

    live.sort(key=when)
    latest = live[-1]
    values = _read_result(latest.get("result") or [])
    outcome = _outcome(values, data, where, report)
    overruled = []
    for other in live[:-1]:
        theirs = _outcome(_read_result(other.get("result") or []), data, where, None)
        if (theirs and theirs[:2]) != (outcome and outcome[:2]):  # verdict and corrections
            overruled.append(str(other.get("id")))
    if overruled:
        report.add("conflict", where, f"annotation {latest.get('id')} (latest) wins over {', '.join(overruled)}")
    if outcome is None:
        return None
    verdict, corrected, note, ratings = outcome
    t = _utc(latest.get("updated_at")) or _utc(latest.get("created_at"))
    return Annotation(
        review_id=str(data["review_id"]), item_id=str(data["item_id"]), verdict=verdict, corrected=corrected,
        annotator=_annotator(latest.get("completed_by")), decided_at=t.isoformat(timespec="seconds") if t else None,
        note=note, annotation_id=None if latest.get("id") is None else str(latest["id"]), ratings=ratings,
        overruled=tuple(overruled))


def _from_json_min(rows: list) -> list:
    """JSON_MIN rows (one per annotation, data keys and control values side by side) regrouped
    as JSON tasks: one per review id, its annotations rebuilt as results."""
    tasks: dict[Any, dict] = {}
    out: list = []
    for row in rows:
        if not isinstance(row, dict):
            out.append(row)
            continue
        data = {k: v for k, v in row.items() if k not in _MIN_META and not _is_control(k)}
        key = data.get("review_id", id(row))
        task = tasks.get(key)
        if task is None:
            task = tasks[key] = {"data": data, "annotations": []}
            out.append(task)
        if row.get("annotation_id") is None:
            continue
        result = []
        for name, value in row.items():
            if not _is_control(name):
                continue
            if isinstance(value, list) and value and isinstance(value[0], dict):
                result += [{"from_name": name, "value": v} for v in value]
            elif name == "verdict":
                result.append({"from_name": name, "value": {"choices": [value]}})
            else:
                result.append({"from_name": name, "value": {"text": value if isinstance(value, list) else [value]}})
        task["annotations"].append({"id": row["annotation_id"], "completed_by": row.get("annotator"),
                                    "created_at": row.get("created_at"), "updated_at": row.get("updated_at"),
                                    "result": result})
    return out


def _is_control(key: str) -> bool:
    return key in ("tags", "verdict", "note") or key.startswith(("caption_", "score_"))


def parse_export(data: bytes) -> ParsedExport:
    """Read a Label Studio export (JSON, or JSON_MIN) of tasks made by `export_tasks`.

    Per task: item and review id from its data; the chosen annotation is the latest (by
    updated_at, else created_at) of those not cancelled; when several disagree (verdict or
    values) the latest wins and a `conflict` is counted, the others listed in `overruled`.
    Verdict: the `verdict` choice (reject -> rejected, corrections dropped); without one,
    corrected when a text differs from the proposal, else accepted; accept or correct with
    changes -> corrected. A caption edited to empty is an `empty_caption` problem and not
    applied; an item whose only change was that, or with 'correct' and nothing changed, is
    reported and left out. Tags are split on commas. Tasks without annotations count as
    `unannotated`, with only cancelled ones as `cancelled`; a malformed task is counted too.

    ValueError (one line) when the file is not JSON, not a list, or its entries carry no task
    data at all.
    """
    try:
        tasks = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"labelstudio export: not JSON ({e})") from None
    if not isinstance(tasks, list):
        raise ValueError(f"labelstudio export: expected a JSON list of tasks, got {type(tasks).__name__}")
    dicts = [t for t in tasks if isinstance(t, dict)]
    if tasks and not any(isinstance(t.get("data"), dict) for t in dicts):
        if not any("review_id" in t for t in dicts):
            raise ValueError("labelstudio export: no task has 'data' or a review_id (not a Label Studio JSON or "
                             "JSON_MIN export of review tasks)")
        tasks = _from_json_min(tasks)
    report = _Report()
    out = []
    for i, task in enumerate(tasks):
        where = f"task {i}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            report.add("malformed_task", where, "no data")
            continue
        ids = task["data"]
        if not ids.get("review_id") or not ids.get("item_id"):
            report.add("missing_ids", where, "data has no review_id / item_id (not exported by curate)")
            continue
        where = f"review {ids['review_id']}"
        answer = _choose(task, report, where)
        if answer is not None:
            out.append(answer)
    return ParsedExport(annotations=out, problems=report.problems, examples=report.examples, tasks=len(tasks))
