"""Opt-in: the review round trip against a real Label Studio server.

Skipped unless CURATE_LABEL_STUDIO names a `label-studio` executable or `label_studio` is
importable, so the default suite never starts a server. Label Studio pins its own Django and
friends: install it in a venv of its own,

    python3 -m venv /tmp/ls-venv && /tmp/ls-venv/bin/pip install label-studio
    CURATE_LABEL_STUDIO=/tmp/ls-venv/bin/label-studio .venv/bin/python -m pytest tests/test_labelstudio_live.py

The test starts `label-studio start` on a free port with a fresh data directory (first start:
database migrations, about a minute), local-files serving below a temporary document root and
a user with a legacy API token; makes a project from `labeling_config`, adds the Local Storage
that local-files serving requires, imports `export_tasks` output with images from
`materialise_images`, fetches each image through the server, annotates through the REST API,
exports JSON and JSON_MIN and reads them back with `parse_export`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.steps.review.config import LabelStudioConfig
from curation.steps.review.labelstudio import (
    MODEL_VERSION, export_tasks, image_reference, labeling_config, materialise_images, parse_export,
)
from procs import WAIT_TIMEOUT_S, run


def _command() -> list[str] | None:
    exe = os.environ.get("CURATE_LABEL_STUDIO")
    if exe:
        return [exe]
    if importlib.util.find_spec("label_studio") is not None:
        return [sys.executable, "-m", "label_studio.server"]
    return None


def _sdk_python() -> str | None:
    """A Python that imports label_studio_sdk (Label Studio's own venv, or this one)."""
    exe = os.environ.get("CURATE_LABEL_STUDIO")
    if exe and (Path(exe).parent / "python").exists():
        return str(Path(exe).parent / "python")
    return sys.executable if importlib.util.find_spec("label_studio_sdk") is not None else None


pytestmark = pytest.mark.skipif(_command() is None, reason="set CURATE_LABEL_STUDIO to a label-studio executable")

requests = pytest.importorskip("requests")

SCORES = ["clip_alignment"]
TOKEN = "curate-test-token-0123456789"
USER = "reviewer@example.com"
STARTUP_S = WAIT_TIMEOUT_S  # a Django server's first start (migrations) on a busy machine


def _png(rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), rgb).save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, auth headers, document root) of a Label Studio started for this module."""
    base_dir = tmp_path_factory.mktemp("labelstudio")
    root = base_dir / "root"
    root.mkdir()
    port = _free_port()
    env = dict(os.environ, LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root))
    base = f"http://127.0.0.1:{port}"
    with open(base_dir / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*_command(), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(base_dir / "data"), "--username", USER, "--password", "curate-test-pw",
             "--user-token", TOKEN, "--enable-legacy-api-token"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited ({proc.returncode}): {(base_dir / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio not up after {STARTUP_S} s: {(base_dir / 'server.log').read_text()[-2000:]}")
            time.sleep(2)
        yield base, {"Authorization": f"Token {TOKEN}"}, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the session started above: the server and its children
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _rows() -> list[dict]:
    def row(item: str, **kw) -> dict:
        out = {"review_id": f"run1:{item}", "id": item, "run_id": "run1", "reason": "low_alignment", "query": None,
               "proposed_long": f"a photo of {item}", "proposed_medium": f"{item} photo", "proposed_short": None,
               "proposed_tags": [item, "photo"], "proposed_scores_json": json.dumps({"clip_alignment": 0.31}),
               "proposal_models_json": json.dumps({"captions": "http:qwen|v3|en"}), "ai_verifier": "alignment>=0.25",
               "ai_score": 0.31, "ai_pass": True}
        out.update(kw)
        return out

    return [row("aa"), row("bb", reason="hard_case", query="squirrel fish",
                           proposal_models_json=json.dumps({"captions": "source"})),
            row("cc", ai_pass=False, ai_score=0.1), row("dd")]


def test_predictions_pass_label_studios_validator():
    """Label Studio's own LabelInterface accepts every exported prediction against the config
    and rejects one whose names miss the config (such a prediction is not shown)."""
    python = _sdk_python()
    if python is None:
        pytest.skip("no Python with label_studio_sdk")
    config = labeling_config(scores=SCORES)
    refs = {r["id"]: f"/data/local-files/?d={r['id']}.png" for r in _rows()}
    predictions = [t["predictions"][0] for t in export_tasks(_rows(), refs, SCORES)]
    renamed = json.loads(json.dumps(predictions[0]))
    renamed["result"][0]["from_name"] = "caption"
    script = ("import json, sys\nfrom label_studio_sdk.label_interface import LabelInterface\n"
              "d = json.load(sys.stdin)\nli = LabelInterface(d['config'])\n"
              "print(json.dumps([li.validate_prediction(p, return_errors=True) for p in d['predictions']]))\n")
    out = run([python, "-c", script], what="Label Studio's LabelInterface on our predictions",
              input=json.dumps({"config": config, "predictions": [*predictions, renamed]}))
    assert out.returncode == 0, out.stderr
    *ours, theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert ours == [[]] * len(predictions)
    assert theirs and "caption" in theirs[0]


def test_round_trip_through_label_studio(server, tmp_path):
    base, auth, root = server
    version = requests.get(base + "/api/version", headers=auth, timeout=30).json()["release"]
    print(f"Label Studio {version}")

    # Images: one plain file outside the document root and three members of a lake shard.
    from curation.storage.shards import ShardWriter

    images = {"aa": _png((200, 30, 30)), "bb": _png((30, 200, 30)), "cc": _png((30, 30, 200)),
              "dd": _png((90, 90, 90))}
    (tmp_path / "aa.png").write_bytes(images["aa"])
    pool = [{"id": "aa", "uri": str(tmp_path / "aa.png"), "byte_offset": None, "byte_size": None}]
    with ShardWriter(str(tmp_path / "shard-0.tar")) as w:
        for item in ("bb", "cc", "dd"):
            m = w.add(f"{item}.png", images[item])
            pool.append({"id": item, "uri": m.uri, "byte_offset": m.byte_offset, "byte_size": m.byte_size})
    export_dir = root / "exports" / "run1"
    paths = materialise_images(pool, str(export_dir), document_root=str(root))
    cfg = LabelStudioConfig(images="local-files", document_root=str(root))
    refs = {item: image_reference(path, cfg) for item, path in paths.items()}
    tasks = export_tasks(_rows(), refs, SCORES)

    r = requests.post(base + "/api/projects", headers=auth, timeout=60,
                      json={"title": "curate review run1", "label_config": labeling_config(scores=SCORES)})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = requests.post(base + "/api/storages/localfiles", headers=auth, timeout=60,
                      json={"project": pid, "path": str(export_dir / "images"), "use_blob_urls": True,
                            "title": "review images"})
    assert r.status_code == 201, r.text
    r = requests.post(base + f"/api/projects/{pid}/import", headers=auth, json=tasks, timeout=120)
    assert r.status_code == 201, r.text
    assert (r.json()["task_count"], r.json()["prediction_count"]) == (4, 4)

    listed = requests.get(base + "/api/tasks", headers=auth, params={"project": pid, "page_size": 100},
                          timeout=60).json()["tasks"]
    by_review = {t["data"]["review_id"]: t for t in listed}
    assert set(by_review) == {f"run1:{i}" for i in images}
    for task in by_review.values():
        got = requests.get(base + task["data"]["image"], headers=auth, timeout=60)
        assert got.status_code == 200, (task["data"]["image"], got.status_code)
        assert got.content == images[task["data"]["item_id"]]

    # The labelling stream hands out the task with our prediction (model version of the project).
    project = requests.get(base + f"/api/projects/{pid}", headers=auth, timeout=60).json()
    assert project["model_version"] == MODEL_VERSION
    nxt = requests.get(base + f"/api/projects/{pid}/next", headers=auth, timeout=60).json()
    assert [p["model_version"] for p in nxt["predictions"]] == [MODEL_VERSION]
    assert {r["from_name"] for r in nxt["predictions"][0]["result"]} >= {"caption_long", "tags", "verdict"}

    def annotate(review_id: str, body: dict) -> None:
        res = requests.post(base + f"/api/tasks/{by_review[review_id]['id']}/annotations/", headers=auth,
                            json=body, timeout=60)
        assert res.status_code == 201, res.text

    prefill = {t["data"]["review_id"]: t["predictions"][0]["result"] for t in tasks}
    corrected = [dict(r, value={"text": ["a red square on white"]}) if r["from_name"] == "caption_long"
                 else dict(r, value={"choices": ["correct"]}) if r["from_name"] == "verdict" else r
                 for r in prefill["run1:aa"]]
    annotate("run1:aa", {"result": corrected, "lead_time": 4.2})
    annotate("run1:bb", {"result": prefill["run1:bb"], "lead_time": 1.5})
    annotate("run1:cc", {"result": [], "was_cancelled": True})

    export = requests.get(base + f"/api/projects/{pid}/export", headers=auth, timeout=120,
                          params={"exportType": "JSON", "download_all_tasks": "true"})
    assert export.status_code == 200, export.text[:500]
    parsed = parse_export(export.content)
    assert parsed.tasks == 4
    assert parsed.problems == {"cancelled": 1, "unannotated": 1}, parsed.examples
    got = {a.review_id: a for a in parsed.annotations}
    assert set(got) == {"run1:aa", "run1:bb"}
    aa = got["run1:aa"]
    assert (aa.item_id, aa.verdict, aa.corrected) == ("aa", "corrected", {"long": "a red square on white"})
    assert aa.annotator and aa.decided_at and aa.decided_at.endswith("+00:00") and aa.ratings == {"clip_alignment": 2}
    assert (got["run1:bb"].verdict, got["run1:bb"].corrected) == ("accepted", {})

    minimal = requests.get(base + f"/api/projects/{pid}/export", headers=auth, params={"exportType": "JSON_MIN"},
                           timeout=120)
    assert minimal.status_code == 200, minimal.text[:500]
    got_min = {a.review_id: (a.verdict, a.corrected) for a in parse_export(minimal.content).annotations}
    assert got_min == {"run1:aa": ("corrected", {"long": "a red square on white"}), "run1:bb": ("accepted", {})}
