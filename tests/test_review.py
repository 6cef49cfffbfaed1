"""The review queue end to end on a copy of the demo lake: propose (balanced + low alignment +
audit, AI verifier), export to Label Studio tasks, import an annotated export (accepted,
corrected, rejected, and the bad input: unknown items, conflicts, empty captions, a corrupted
file), apply (labels, removals), and the corrections winning in export, the graph's tags and
the training set, across re-runs."""

from __future__ import annotations

import copy
import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.cli.main import main
from curation.demo.vlm_stub import VlmStub
from curation.steps.run import run_step
from curation.storage import schemas
from curation.storage.lake import Lake


@pytest.fixture(scope="module")
def review_lake(demo_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    shutil.copytree(demo_lake["lake"], root / "lake")
    return {"lake": Lake(str(root / "lake")), "root": root, "spec": demo_lake["spec"]}


def _answer(task: dict, verdict: str, ann_id: int, when: str, **changes) -> dict:
    """One Label Studio annotation of a task, as its JSON export writes it: the prediction's
    prefilled results, edited by `changes` (control name -> text), and the verdict choice."""
    result = [copy.deepcopy(r) for r in task["predictions"][0]["result"] if r["from_name"] != "verdict"]
    for r in result:
        if r["from_name"] in changes:
            r["value"] = {"text": [changes.pop(r["from_name"])]}
    for name, text in changes.items():
        result.append({"id": name, "from_name": name, "to_name": "image", "type": "textarea", "value": {"text": [text]}})
    result.append({"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                   "value": {"choices": [verdict]}})
    return {"id": ann_id, "completed_by": {"id": 1, "email": "ann@example.org"}, "result": result,
            "was_cancelled": False, "created_at": when, "updated_at": when, "lead_time": 3.2}


def test_review_round_trip(review_lake, tmp_path):
    lake, spec = review_lake["lake"], review_lake["spec"]
    before = lake.read(schemas.REVIEWS).num_rows  # the demo's own run ("demo") is in the queue already
    s = run_step(lake, "review-propose", spec, overrides={"review.run_id": "r1", "review.propose.size": 12})
    reviews = lake.read(schemas.REVIEWS)
    reviews = reviews.filter(pc.equal(reviews["run_id"], "r1"))
    assert reviews.num_rows == 12 == s.notes["proposed"]
    assert set(reviews["state"].to_pylist()) == {"ai_checked"}
    assert {"low_alignment", "random_audit", "balanced"} <= set(s.notes["by_reason"])
    assert all(v.startswith("alignment>=") for v in reviews["ai_verifier"].to_pylist())
    again = run_step(lake, "review-propose", spec, overrides={"review.run_id": "r1", "review.propose.size": 12})
    assert again.notes["proposed"] == 0 and lake.read(schemas.REVIEWS).num_rows == before + 12
    # a new run never proposes an item still waiting for a human
    r2 = run_step(lake, "review-propose", spec, overrides={"review.run_id": "r2", "review.propose.size": 5})
    ids = lake.read(schemas.REVIEWS, columns=["id", "run_id"]).to_pylist()
    assert len({i["id"] for i in ids}) == len(ids) == before + 17 and r2.notes["proposed"] == 5

    out = tmp_path / "ls" / "tasks.json"
    e = run_step(lake, "review-export", spec, out=str(out), overrides={"review.run_id": "r1"})
    tasks = json.loads(out.read_text())
    assert e.notes["tasks"] == len(tasks) == 12 and (tmp_path / "ls" / "tasks.xml").exists()
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)
    pending = lake.read(schemas.REVIEWS)
    pending = pending.filter(pc.equal(pending["run_id"], "r1"))
    assert pc.sum(pc.equal(pending["state"], "human_pending")).as_py() == 12
    version = lake.version(schemas.REVIEWS)
    run_step(lake, "review-export", spec, out=str(out), overrides={"review.run_id": "r1"})  # re-export: same tasks
    assert lake.version(schemas.REVIEWS) == version and json.loads(out.read_text()) == tasks

    # the annotators' export: accept, correct, reject, conflict, an empty caption, an unknown item
    ann = copy.deepcopy(tasks)
    ann[0]["annotations"] = [_answer(tasks[0], "accept", 1, "2026-12-01T10:00:00Z")]
    ann[1]["annotations"] = [_answer(tasks[1], "correct", 2, "2026-12-01T10:01:00Z",
                                     caption_long="A corrected caption: a red kite over a field.", tags="kite, field")]
    ann[2]["annotations"] = [_answer(tasks[2], "reject", 3, "2026-12-01T10:02:00Z", note="not a photo")]
    ann[3]["annotations"] = [_answer(tasks[3], "accept", 4, "2026-12-01T10:03:00Z"),
                             _answer(tasks[3], "reject", 5, "2026-12-01T10:04:00Z", note="changed my mind")]
    ann[4]["annotations"] = [_answer(tasks[4], "correct", 6, "2026-12-01T10:05:00Z", caption_long="")]
    stranger = copy.deepcopy(tasks[5])
    stranger["data"].update(review_id="r9:" + "f" * 64, item_id="f" * 64)
    stranger["annotations"] = [_answer(stranger, "accept", 7, "2026-12-01T10:06:00Z")]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(ann + [stranger]))
    imp = run_step(lake, "review-import", spec, source=str(export))
    assert imp.notes["by_verdict"] == {"accepted": 1, "corrected": 1, "rejected": 2}
    problems = imp.notes["problems"]
    assert problems["unknown_item"] == 1 and problems["conflict"] == 1 and problems["empty_caption"] == 1
    assert problems["unannotated"] == 7
    version = lake.version(schemas.REVIEWS)
    assert run_step(lake, "review-import", spec, source=str(export)).notes["applied"] == 0  # idempotent
    assert lake.version(schemas.REVIEWS) == version

    removed_before = set(lake.read(schemas.REMOVALS, columns=["id"])["id"].to_pylist()) \
        if lake.exists(schemas.REMOVALS) else set()
    rejected = {tasks[2]["data"]["item_id"], tasks[3]["data"]["item_id"]}
    a = run_step(lake, "review-apply", spec)
    assert a.notes["labels_written"] == 2 and a.notes["removals_written"] == len(rejected - removed_before)
    assert run_step(lake, "review-apply", spec).notes == {**a.notes, "labels_written": 0, "removals_written": 0}
    labels = {r["id"]: r for r in lake.read(schemas.LABELS).to_pylist()}
    corrected = labels[tasks[1]["data"]["item_id"]]
    assert corrected["long"].startswith("A corrected caption") and corrected["tags"] == ["kite", "field"]
    assert corrected["annotator"] == "ann@example.org" and corrected["run_id"] == "r1"
    removals = lake.read(schemas.REMOVALS).to_pylist()
    assert rejected <= {r["id"] for r in removals}
    if tasks[2]["data"]["item_id"] not in removed_before:
        assert any(r["id"] == tasks[2]["data"]["item_id"] and r["reason"] == "review: rejected: not a photo"
                   for r in removals)

    # the correction wins in the export, also after the captioner re-labels the item
    item = tasks[1]["data"]["item_id"]
    lake.write(schemas.CAPTIONS, pa.Table.from_pylist([{
        "id": item, "long": "a newer model's caption", "medium": "m", "short": "s", "tags": ["x"], "prompt": "p",
        "nsfw": 0.0, "language": "en", "model": "m2", "prompt_version": "v", "backend": "http",
        "caption_producer": "http:m2|v|en"}], schema=schemas.CAPTIONS_SCHEMA), key="id")
    run_step(lake, "export", spec, stage="lowres", out=str(tmp_path / "lowres"))
    manifest = lake.read(schemas.manifest_table("lowres"))
    row = manifest.filter(pc.equal(manifest["id"], item)).to_pylist()
    if row:  # the item may fail the stage's rules; its label is then checked in the evaluation below
        assert row[0]["caption_long"].startswith("A corrected caption")
        assert row[0]["label_source"].startswith("human:corrected by ann@example.org")
    from curation.steps.export.export import evaluate

    ev = evaluate(lake, spec.stages["lowres"]).table
    got = ev.filter(pc.equal(ev["id"], item)).to_pylist()[0]
    assert got["caption_long"].startswith("A corrected caption") and got["tags"] == ["kite", "field"]
    rejected = ev.filter(pc.equal(ev["id"], tasks[2]["data"]["item_id"])).to_pylist()[0]
    assert rejected["keep"] is False
    from curation.steps.kg.steps import pool_tags

    ids, tags, source = pool_tags(lake)
    assert tags.to_pylist()[ids.to_pylist().index(item)] == ["kite", "field"] and "labels" in source

    # the accepted set as a training set
    assert main(["review", "dataset", str(lake.uri), str(tmp_path / "train.parquet")]) == 0
    train = pq.read_table(tmp_path / "train.parquet")
    assert train.num_rows == 2 and all(r["image"]["bytes"] for r in train.to_pylist())
    sources = {r["id"]: json.loads(r["label_source_json"]) for r in train.to_pylist()}
    assert sources[item]["long"].startswith("human:corrected") and sources[item]["tags"].startswith("human")


def test_bad_exports_are_refused(review_lake, tmp_path, capsys):
    lake = str(review_lake["lake"].uri)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": {"item_id": ')
    assert main(["review", "import", lake, str(broken)]) == 2
    assert "review import" in capsys.readouterr().err
    assert main(["review", "import", lake, str(tmp_path / "missing.json")]) == 2


def test_vlm_verifier(review_lake):
    lake, spec = review_lake["lake"], review_lake["spec"]
    with VlmStub() as stub:
        s = run_step(lake, "review-propose", spec, overrides={
            "review.run_id": "vlm1", "review.propose.size": 4, "review.verifier.kind": "vlm",
            "review.verifier.threshold": 0.5, "caption.http.url": stub.url, "caption.http.retries": 0})
    rows = lake.read(schemas.REVIEWS).filter(pc.equal(lake.read(schemas.REVIEWS)["run_id"], "vlm1")).to_pylist()
    assert len(rows) == 4 and s.notes["ai_pass"] == "4/4"
    assert all(r["ai_verifier"].startswith("vlm:") and r["ai_score"] == pytest.approx(0.9) for r in rows)
