"""Label Studio round trip (curation.steps.review.labelstudio): offline, no Ray, no server.

The export fixtures copy the layout of a real Label Studio 1.23.2 export (JSON and JSON_MIN of
a project made from `labeling_config` and `export_tasks`, see tests/test_labelstudio_live.py).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from curation.steps.review.config import LabelStudioConfig
from curation.steps.review.labelstudio import (
    MODEL_VERSION, export_tasks, image_reference, labeling_config, materialise_images, parse_export, score_to_rating,
    split_tags,
)

SCORES = ["clip_alignment", "aesthetic"]
RESULT_TYPES = {"TextArea": "textarea", "Rating": "rating", "Choices": "choices"}


def _row(item: str, **kw) -> dict:
    row = {"review_id": f"run1:{item}", "id": item, "run_id": "run1", "reason": "balanced", "query": None,
           "proposed_long": f"a photo of {item}", "proposed_medium": f"{item} photo", "proposed_short": item,
           "proposed_tags": [item, "photo"],
           "proposed_scores_json": json.dumps({"clip_alignment": 0.31, "aesthetic": 0.9}),
           "proposal_models_json": json.dumps({"captions": "http:qwen|v3|en", "scores": "heads@1"}),
           "ai_verifier": "alignment>=0.25", "ai_score": 0.31, "ai_pass": True}
    row.update(kw)
    return row


def _controls(config: str) -> dict[str, ET.Element]:
    return {el.get("name"): el for el in ET.fromstring(config).iter() if el.tag in RESULT_TYPES}


def test_labeling_config_parses_with_the_expected_controls():
    config = labeling_config(scores=SCORES)
    root = ET.fromstring(config)
    controls = _controls(config)
    assert set(controls) == {"caption_long", "caption_medium", "caption_short", "tags", "note", "verdict",
                             "score_clip_alignment", "score_aesthetic"}
    assert all(el.get("toName") == "image" for el in controls.values())
    for level in ("long", "medium", "short"):
        ta = controls[f"caption_{level}"]
        assert ta.get("editable") == "true" and ta.get("maxSubmissions") == "1"
        assert ta.get("value") is None  # a value would be submitted as a second text
    verdict = controls["verdict"]
    assert verdict.get("choice") == "single" and verdict.get("required") == "true"
    assert [c.get("value") for c in verdict] == ["accept", "correct", "reject"]
    assert controls["score_aesthetic"].get("maxRating") == "5"
    image = [el for el in root.iter("Image")]
    assert [(el.get("name"), el.get("value")) for el in image] == [("image", "$image")]
    shown = {el.get("value") for el in root.iter() if el.tag in ("Header", "Text")}
    assert {"$item_id", "$reason", "$query"} <= shown


def test_labeling_config_rejects_names_that_break_controls():
    with pytest.raises(ValueError, match="control name"):
        labeling_config(scores=["bad name"])
    with pytest.raises(ValueError, match="control name"):
        labeling_config(levels=("long", 'x"y'))


def test_score_to_rating_uses_five_equal_bins():
    assert [score_to_rating(s) for s in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == [1, 1, 2, 3, 4, 5, 5]
    assert score_to_rating(-0.3) == 1 and score_to_rating(1.7) == 5
    assert score_to_rating(None) is None and score_to_rating(float("nan")) is None


def test_tasks_carry_predictions_whose_names_match_the_config():
    """Label Studio hides a prediction whose from_name / to_name is not a control of the config
    (its own validator rejects one: tests/test_labelstudio_live.py)."""
    rows = [_row("a1"), _row("b2", ai_pass=False, ai_score=None, proposed_medium=None, proposed_short=None,
                            proposed_scores_json=json.dumps({"clip_alignment": 0.05}), query="squirrel fish",
                            reason="hard_case", proposal_models_json=json.dumps({"captions": "source"}))]
    config = labeling_config(scores=SCORES)
    controls = _controls(config)
    variables = {el.get("value")[1:] for el in ET.fromstring(config).iter() if (el.get("value") or "").startswith("$")}
    tasks = export_tasks(rows, {"a1": "/data/local-files/?d=a1.jpg", "b2": "/data/local-files/?d=b2.jpg"}, SCORES)
    assert tasks == export_tasks(rows, {"a1": "/data/local-files/?d=a1.jpg", "b2": "/data/local-files/?d=b2.jpg"},
                                 SCORES)  # stable: a re-export writes the same tasks
    for task in tasks:
        assert "id" not in task and variables <= set(task["data"])
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == MODEL_VERSION
        ids = [r["id"] for r in prediction["result"]]
        assert len(ids) == len(set(ids))
        for r in prediction["result"]:
            control = controls[r["from_name"]]  # KeyError: Label Studio would not show it
            assert r["to_name"] == control.get("toName") and r["type"] == RESULT_TYPES[control.tag]

    a, b = tasks
    assert a["data"] == {"image": "/data/local-files/?d=a1.jpg", "item_id": "a1", "review_id": "run1:a1",
                         "reason": "balanced", "query": "", "proposed_by": "http:qwen|v3|en",
                         "proposed_long": "a photo of a1", "proposed_medium": "a1 photo", "proposed_short": "a1",
                         "proposed_tags": "a1, photo"}
    values = {r["from_name"]: r["value"] for r in a["predictions"][0]["result"]}
    assert values == {"caption_long": {"text": ["a photo of a1"]}, "caption_medium": {"text": ["a1 photo"]},
                      "caption_short": {"text": ["a1"]}, "tags": {"text": ["a1, photo"]},
                      "score_clip_alignment": {"rating": 2}, "score_aesthetic": {"rating": 5},
                      "verdict": {"choices": ["accept"]}}
    assert a["predictions"][0]["score"] == pytest.approx(0.31)
    b_values = {r["from_name"]: r["value"] for r in b["predictions"][0]["result"]}
    assert set(b_values) == {"caption_long", "tags", "score_clip_alignment"}  # no verdict: the AI did not pass it
    assert "score" not in b["predictions"][0]
    assert b["data"]["proposed_by"] == "source" and b["data"]["query"] == "squirrel fish"

    with pytest.raises(ValueError, match="no image reference"):
        export_tasks([_row("c3")], {}, SCORES)


def test_image_reference_local_files_and_url(tmp_path):
    root = tmp_path / "root"
    cfg = LabelStudioConfig(images="local-files", document_root=str(root))
    assert image_reference(str(root / "run 1" / "img ü.jpg"), cfg) == "/data/local-files/?d=run%201/img%20%C3%BC.jpg"
    assert image_reference((root / "a.png").as_uri(), cfg) == "/data/local-files/?d=a.png"
    url = LabelStudioConfig(images="url", document_root=str(root), url_prefix="https://cdn.example.com/review/")
    assert image_reference(str(root / "x" / "a#1.png"), url) == "https://cdn.example.com/review/x/a%231.png"
    assert image_reference("https://example.com/a.jpg", cfg) == "https://example.com/a.jpg"
    with pytest.raises(ValueError, match="review.labelstudio.document_root"):
        image_reference(str(tmp_path / "elsewhere.jpg"), cfg)
    with pytest.raises(ValueError, match="review.labelstudio.document_root"):
        image_reference(str(root / "a.png"), LabelStudioConfig(document_root=None))
    with pytest.raises(ValueError, match="materialise_images"):
        image_reference("s3://bucket/a.jpg", cfg)


def test_materialise_images_writes_shard_members_below_the_root(tmp_path):
    from curation.storage.shards import ShardWriter

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 24
    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    (root / "pool" / "plain.jpg").write_bytes(jpeg)
    (tmp_path / "outside.jpg").write_bytes(jpeg)
    with ShardWriter(str(tmp_path / "shard-0.tar")) as w:
        member = w.add("m1.png", png)
    rows = [{"id": "aa", "uri": str(root / "pool" / "plain.jpg"), "byte_offset": None, "byte_size": None},
            {"id": "bb", "uri": member.uri, "byte_offset": member.byte_offset, "byte_size": member.byte_size},
            {"id": "cc", "uri": str(tmp_path / "outside.jpg"), "byte_offset": None, "byte_size": None},
            {"id": "dd", "uri": str(tmp_path / "missing.jpg"), "byte_offset": None, "byte_size": None}]
    out = root / "exports" / "run1"
    paths = materialise_images(rows, str(out), document_root=str(root))
    assert paths["aa"] == str(root / "pool" / "plain.jpg")
    assert paths["bb"] == str(out / "images" / "bb.png") and (out / "images" / "bb.png").read_bytes() == png
    assert paths["cc"] == str(out / "images" / "cc.jpg")
    assert "dd" not in paths
    cfg = LabelStudioConfig(document_root=str(root))
    assert image_reference(paths["bb"], cfg) == "/data/local-files/?d=exports/run1/images/bb.png"
    assert materialise_images(rows[1:2], str(out)) == {"bb": paths["bb"]}  # reused, not rewritten


# ---- exports as Label Studio 1.23 writes them ------------------------------------------------


def _result(name: str, kind: str, value: dict) -> dict:
    return {"id": name, "from_name": name, "to_name": "image", "type": kind, "value": value}


def _annotation(ann_id: int, result: list, updated_at: str, cancelled: bool = False, completed_by=1) -> dict:
    return {"id": ann_id, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": updated_at, "updated_at": updated_at, "draft_created_at": None,
            "lead_time": 12.5, "prediction": {}, "result_count": len(result), "unique_id": f"u-{ann_id}",
            "import_id": None, "last_action": None, "bulk_created": False, "task": 0, "project": 1,
            "updated_by": 1, "parent_prediction": None, "parent_annotation": None, "last_created_by": None}


def _ls_task(task_id: int, task: dict, annotations: list) -> dict:
    return {"id": task_id, "annotations": annotations, "drafts": [], "predictions": [task_id], "data": task["data"],
            "meta": {}, "created_at": "2026-12-02T16:26:05.340640Z", "updated_at": "2026-12-02T16:26:09.928999Z",
            "allow_skip": True, "inner_id": task_id, "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations), "total_predictions": 1,
            "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1,
            "updated_by": [], "comment_authors": []}


def _prefilled(task: dict, **changes) -> list:
    """What the editor submits for an annotation started from the prediction, with changes:
    control name -> new value dict (None drops the result)."""
    out = []
    for r in task["predictions"][0]["result"]:
        if r["from_name"] in changes:
            if changes[r["from_name"]] is not None:
                out.append({**r, "value": changes.pop(r["from_name"])})
            else:
                changes.pop(r["from_name"])
        else:
            out.append(dict(r))
    kinds = {"verdict": "choices", "note": "textarea"}
    out += [_result(k, kinds.get(k, "textarea"), v) for k, v in changes.items()]
    return out


@pytest.fixture
def exported():
    items = ["acc", "cor", "rej", "con", "can", "emp", "emp2", "una"]
    rows = [_row(i) for i in items]
    tasks = export_tasks(rows, {i: f"/data/local-files/?d=images/{i}.jpg" for i in items}, SCORES)
    return dict(zip(items, tasks))


def _export(exported: dict) -> list:
    t = exported
    accept = {"choices": ["accept"]}
    return [
        _ls_task(1, t["acc"], [_annotation(11, _prefilled(t["acc"]), "2026-12-02T16:30:00.100000Z")]),
        _ls_task(2, t["cor"], [_annotation(12, _prefilled(
            t["cor"], caption_long={"text": ["a photo of a red bicycle"]}, tags={"text": ["cor, bicycle ,, red"]},
            score_aesthetic={"rating": 2}, verdict={"choices": ["correct"]}), "2026-12-02T16:31:00Z",
            completed_by={"id": 3, "email": "ann@example.com", "first_name": "", "last_name": ""})]),
        _ls_task(3, t["rej"], [_annotation(13, _prefilled(t["rej"], verdict={"choices": ["reject"]},
                                                          note={"text": ["watermark all over"]}),
                                           "2026-12-02T16:32:00Z")]),
        _ls_task(4, t["con"], [
            _annotation(15, _prefilled(t["con"], caption_short={"text": ["a con"]}, verdict={"choices": ["correct"]}),
                        "2026-12-02T17:00:00+00:00", completed_by=2),
            _annotation(14, _prefilled(t["con"], verdict=accept), "2026-12-02T16:33:00Z")]),
        _ls_task(5, t["can"], [_annotation(16, [], "2026-12-02T16:34:00Z", cancelled=True)]),
        _ls_task(6, t["emp"], [_annotation(17, _prefilled(t["emp"], caption_long={"text": [" "]},
                                                          verdict={"choices": ["correct"]}),
                                           "2026-12-02T16:35:00Z")]),
        _ls_task(7, t["emp2"], [_annotation(18, _prefilled(t["emp2"], caption_medium={"text": []},
                                                           caption_short={"text": ["emp2, closer"]}, verdict=None),
                                            "2026-12-02T16:36:00Z")]),
        _ls_task(8, t["una"], []),
    ]


def test_parse_export_round_trip(exported):
    parsed = parse_export(json.dumps(_export(exported)).encode())
    assert parsed.tasks == 8
    by_item = {a.item_id: a for a in parsed.annotations}
    assert set(by_item) == {"acc", "cor", "rej", "con", "emp2"}

    acc = by_item["acc"]
    assert (acc.review_id, acc.verdict, acc.corrected, acc.annotator) == ("run1:acc", "accepted", {}, "1")
    assert acc.decided_at == "2026-12-02T16:30:00+00:00" and acc.annotation_id == "11"
    assert acc.ratings == {"clip_alignment": 2, "aesthetic": 5}

    cor = by_item["cor"]
    assert cor.verdict == "corrected" and cor.annotator == "ann@example.com"
    assert cor.corrected == {"long": "a photo of a red bicycle", "tags": ["cor", "bicycle", "red"]}
    assert cor.ratings["aesthetic"] == 2

    rej = by_item["rej"]
    assert (rej.verdict, rej.corrected, rej.note) == ("rejected", {}, "watermark all over")

    con = by_item["con"]  # the later annotation (15) wins although listed first
    assert (con.verdict, con.corrected, con.annotation_id, con.overruled) == ("corrected", {"short": "a con"}, "15",
                                                                            ("14",))
    assert con.annotator == "2" and con.decided_at == "2026-12-02T17:00:00+00:00"

    emp2 = by_item["emp2"]  # no verdict choice: corrected by its change; the emptied medium is not applied
    assert (emp2.verdict, emp2.corrected) == ("corrected", {"short": "emp2, closer"})

    assert parsed.problems == {"conflict": 1, "cancelled": 1, "empty_caption": 2, "unannotated": 1}
    assert any(e.startswith("conflict: review run1:con") and "15" in e and "14" in e for e in parsed.examples)
    assert any(e.startswith("empty_caption: review run1:emp:") for e in parsed.examples)


def test_parse_export_agreeing_annotations_are_no_conflict(exported):
    task = _ls_task(1, exported["acc"], [_annotation(1, _prefilled(exported["acc"]), "2026-12-02T16:30:00Z"),
                                         _annotation(2, _prefilled(exported["acc"]), "2026-12-02T16:31:00Z")])
    parsed = parse_export(json.dumps([task]).encode())
    assert not parsed.problems and [(a.verdict, a.annotation_id, a.overruled) for a in parsed.annotations] == [
        ("accepted", "2", ())]


def test_parse_export_verdict_problems(exported):
    t = exported["acc"]
    tasks = [_ls_task(1, t, [_annotation(1, _prefilled(t, verdict={"choices": ["correct"]}), "2026-12-02T16:30Z")]),
             _ls_task(2, t, [_annotation(2, _prefilled(t, verdict={"choices": ["maybe"]}), "2026-12-02T16:30Z")])]
    parsed = parse_export(json.dumps(tasks).encode())
    assert parsed.annotations == [] and parsed.problems == {"correct_without_change": 1, "unknown_verdict": 1}


def test_parse_export_reads_json_min():
    """The JSON_MIN export of the live round trip (Label Studio 1.23.2): data keys and control
    values side by side, one row per submitted annotation, single values unwrapped."""
    rows = [
        {"image": "/data/local-files/?d=imgs/a.png", "item_id": "aa", "review_id": "r1:aa", "reason": "low_alignment",
         "query": "", "proposed_by": "http:m|v1|en", "proposed_long": "a red square", "proposed_medium": "red",
         "proposed_short": "", "proposed_tags": "red, square", "id": 1, "caption_long": "a red square on white",
         "verdict": "correct", "score_clip_alignment": [{"rating": 4}], "annotator": 1, "annotation_id": 1,
         "created_at": "2026-12-02T16:26:09.867990Z", "updated_at": "2026-12-02T16:26:09.868047Z", "lead_time": 3.5},
        {"image": "/data/local-files/?d=imgs/b.png", "item_id": "bb", "review_id": "r1:bb", "reason": "balanced",
         "query": "", "proposed_by": "source", "proposed_long": "blue", "proposed_medium": "", "proposed_short": "",
         "proposed_tags": "sky", "id": 2, "tags": "sky, cloud", "note": "added cloud", "annotator": 1,
         "annotation_id": 2, "created_at": "2026-12-02T16:27:00Z", "updated_at": "2026-12-02T16:27:00Z",
         "lead_time": 1.0},
        {"image": "/data/local-files/?d=imgs/c.png", "item_id": "cc", "review_id": "r1:cc", "reason": "balanced",
         "query": "", "proposed_by": "source", "proposed_long": "green", "proposed_medium": "", "proposed_short": "",
         "proposed_tags": "", "id": 3, "annotator": None, "annotation_id": None, "created_at": None,
         "updated_at": None, "lead_time": None},
    ]
    parsed = parse_export(json.dumps(rows).encode())
    assert parsed.tasks == 3 and parsed.problems == {"unannotated": 1}
    a, b = parsed.annotations
    assert (a.review_id, a.item_id, a.verdict, a.corrected, a.annotator, a.ratings) == (
        "r1:aa", "aa", "corrected", {"long": "a red square on white"}, "1", {"clip_alignment": 4})
    assert (b.verdict, b.corrected, b.note) == ("corrected", {"tags": ["sky", "cloud"]}, "added cloud")


@pytest.mark.parametrize("data, message", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'{"data": {}}', "expected a JSON list of tasks, got dict"),
    (b'[{"foo": 1}, {"bar": 2}]', "no task has 'data'"),
    (b"[1, 2]", "no task has 'data'"),
])
def test_parse_export_rejects_corrupted_files(data, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_export(data)
    assert "\n" not in str(err.value)


def test_parse_export_counts_malformed_tasks(exported):
    good = _ls_task(1, exported["acc"], [_annotation(1, _prefilled(exported["acc"]), "2026-12-02T16:30:00Z")])
    tasks = [good, "junk", {"id": 9, "data": {"image": "x"}, "annotations": []},
             {"id": 10, "data": exported["cor"]["data"], "annotations": [{"id": 3, "result": "oops"}]}]
    parsed = parse_export(json.dumps(tasks).encode())
    assert [a.item_id for a in parsed.annotations] == ["acc"]
    assert parsed.problems == {"malformed_task": 1, "missing_ids": 1, "malformed_annotation": 1}
    assert parse_export(b"[]").tasks == 0


def test_split_tags():
    assert split_tags(" a, b ,,a，c ") == ["a", "b", "c"] and split_tags(None) == []
