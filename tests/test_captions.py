"""The captioner: prompt and answer schema, the HTTP backend against a local OpenAI-compatible
server (valid, malformed, rate-limited, failing and hanging answers), the captions table."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from curation.cli.main import main
from curation.demo import photo_like, save_image
from curation.demo.vlm_stub import VlmStub
from curation.steps.captions import caption as caption_module
from curation.steps.captions.prompt import caption_messages, parse_answer, parse_diff_answer
from curation.steps.run import run_step
from curation.storage import schemas
from curation.storage.lake import Lake

GOOD = {"long": "A red sign reading \"OPEN 24h\".", "medium": "A red sign.", "short": "A sign.",
        "tags": ["sign", " sign", "red", ""], "prompt": "red sign", "nsfw": 0.02}


def test_parse_answer_validates_the_schema():
    assert parse_answer(json.dumps(GOOD))["tags"] == ["sign", "red"]
    assert parse_answer("```json\n" + json.dumps(GOOD) + "\n```")["short"] == "A sign."
    assert parse_answer("Here you go: " + json.dumps(GOOD, ensure_ascii=False) + " Enjoy!")["nsfw"] == 0.02
    for bad, why in (("{not json", "not JSON"), ("[1, 2]", "not an object"), ("", "empty"),
                     (json.dumps({**GOOD, "nsfw": 3}), "outside"), (json.dumps({**GOOD, "tags": "a, b"}), "array"),
                     (json.dumps({k: v for k, v in GOOD.items() if k != "long"}), "misses 'long'"),
                     (json.dumps({**GOOD, "short": "  "}), "empty")):
        with pytest.raises(ValueError, match=why):
            parse_answer(bad)
    diff = {"source_caption": "a", "target_caption": "b", "instruction": "Make it blue",
            "differences": [{"type": "recolor", "description": "red to blue"}]}
    assert parse_diff_answer(json.dumps(diff))["differences"][0]["type"] == "recolor"


def test_prompt_is_ocr_first_and_keeps_strings_verbatim():
    msgs = caption_messages("data:image/jpeg;base64,AAAA", "zh", ["松鼠鳜鱼", "OPEN 24h"], "alt text", ["West Lake"])
    text = msgs[1]["content"][0]["text"]
    assert '"松鼠鳜鱼"' in text and '"OPEN 24h"' in text and "never translate" in text
    assert "Simplified Chinese" in text and "West Lake" in text and "alt text" in text
    assert msgs[1]["content"][1]["image_url"]["url"].startswith("data:image/jpeg")


@pytest.fixture(scope="module")
def caption_lake(ray_session, tmp_path_factory):
    """A pool of 7 images whose captions steer the stub server, plus one corrupt file."""
    from curation.steps.ingest.pool import IngestConfig, ingest

    root = tmp_path_factory.mktemp("cap")
    src = root / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    markers = ["plain one", "plain two", "[[malformed]]", "[[badschema]]", "[[429]] then fine", "[[500]]",
               "[[400]]"]
    for i, text in enumerate(markers):
        save_image(photo_like(rng, 96 + i, 80), src / f"{i}.jpg")
        (src / f"{i}.txt").write_text(text)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lake = Lake(str(root / "lake"))
    ingest(lake, IngestConfig(source=str(src)))
    return lake


def _run(lake, url, **changes):
    # a generous timeout: on a busy machine a local answer can take seconds (a 1 s timeout made
    # the 429 item's first attempt time out now and then); the timeout itself has its own test
    overrides = {"caption.http.url": url, "caption.http.timeout_s": 60.0, "caption.http.retries": 1,
                 "caption.http.backoff_s": 0.0, "caption.http.batch_size": 4, **changes}
    return run_step(lake, "caption", overrides=overrides)


def test_caption_step_rows_errors_and_increments(caption_lake, monkeypatch):
    pool = caption_lake.read("pool", columns=["id", "caption"])
    plain = pool.filter(pc.equal(pool["caption"], "plain one"))["id"][0].as_py()
    monkeypatch.setattr(caption_module, "ocr_strings", lambda lake: {plain: ["OPEN 24h", "松鼠鳜鱼"]})
    with VlmStub() as stub:
        summary = _run(caption_lake, stub.url)
        table = caption_lake.read(schemas.CAPTIONS)
        assert table.num_rows == pool.num_rows == 8  # one row per pool item, failures included
        by_caption = dict(zip(pool["id"].to_pylist(), pool["caption"].to_pylist()))
        rows = {by_caption[r["id"]]: r for r in table.to_pylist()}
        assert rows["plain one"]["error"] is None and '"OPEN 24h"' in rows["plain one"]["long"]
        assert rows["[[429]] then fine"]["error"] is None  # retried after Retry-After
        expected = {"[[malformed]]": "invalid answer: answer is not JSON",
                    "[[badschema]]": "invalid answer: answer misses 'long'",
                    "[[500]]": "HTTP 500", "[[400]]": "HTTP 400: image too large"}
        for key, message in expected.items():
            assert message in rows[key]["error"], (key, rows[key]["error"])
        broken = [r for r in table.to_pylist() if r["id"] not in by_caption or by_caption[r["id"]] is None]
        assert len(broken) == 1 and "cannot prepare the image: OSError" in broken[0]["error"]
        assert not any("base64" in (r["error"] or "") for r in table.to_pylist())
        assert summary.notes["ocr_verbatim"].startswith("2/2") and summary.rows_out == 3
        assert rows["plain one"]["prompt_tokens"] > 0 and rows["plain one"]["model"] == "default"
        requests = stub.requests
        again = _run(caption_lake, stub.url)  # up to date: nothing sent
        assert again.rows_in == 0 and stub.requests == requests
        zh = _run(caption_lake, stub.url, **{"caption.language": "zh"})  # a new producer redoes all
        assert zh.rows_in == 8 and set(caption_lake.read(schemas.CAPTIONS)["language"].to_pylist()) == {"zh"}


def test_an_unanswered_request_times_out_into_its_row(ray_session, tmp_path):
    # its own lake: with a short timeout only a request the server never answers is in flight
    from curation.steps.ingest.pool import IngestConfig, ingest

    save_image(photo_like(np.random.default_rng(1), 90, 70), tmp_path / "imgs" / "0.jpg")
    (tmp_path / "imgs" / "0.txt").write_text("[[timeout]]")
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(tmp_path / "imgs")))
    with VlmStub() as stub:
        summary = _run(lake, stub.url, **{"caption.http.timeout_s": 1.0})
        (row,) = lake.read(schemas.CAPTIONS).to_pylist()
        assert "no answer within 1 s (after 2 attempts)" in row["error"] and summary.rows_out == 0
        assert stub.requests == 2


def test_caption_command_fails_fast_without_a_server(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert main(["caption", lake]) == 2
    assert "caption.http.url" in capsys.readouterr().err
    with VlmStub() as stub:
        dead = stub.url
    assert main(["caption", lake, "--set", f"caption.http.url={dead}"]) == 2
    assert "caption.http.url: cannot reach 127.0.0.1" in capsys.readouterr().err


def test_difference_captions_for_pairs(caption_lake):
    import pyarrow as pa

    from curation.steps.captions.config import CaptionConfig, HttpBackend
    from curation.steps.captions.diff import difference_captions

    pool = caption_lake.read("pool", columns=["id", "uri", "byte_offset", "byte_size"]).slice(0, 2)
    u = pool["uri"].to_pylist()
    pairs = pa.table({"pair_id": ["p1", "p2", "p3"], "source_uri": [u[0], u[0], "/nowhere.jpg"],
                      "target_uri": [u[1], u[1], u[1]], "target_ocr": [["SALE 50%"], None, None]})
    with VlmStub() as stub:
        cfg = CaptionConfig(http=HttpBackend(url=stub.url, timeout_s=60, retries=0))
        out = {r["pair_id"]: r for r in difference_captions(pairs, cfg).to_pylist()}
    assert out["p1"]["error"] is None and out["p1"]["instruction"] == 'Change the colours and write "SALE 50%".'
    assert json.loads(out["p1"]["differences_json"])[0]["type"] == "recolor"
    assert "cannot prepare the image: FileNotFoundError" in out["p3"]["error"]
    assert len(out) == 3


def test_captions_feed_the_manifest_the_graph_and_the_rules(demo_lake, tmp_path):
    """Caption levels reach the stage's caption policy, VLM tags the knowledge graph, the VLM's
    NSFW score a rule."""
    import shutil

    import pyarrow as pa

    from curation.config.typed import from_dict, to_dict
    from curation.steps.export.export import StageConfig, export
    from curation.steps.kg.steps import pool_tags

    shutil.copytree(demo_lake["lake"], tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    ids = lake.read("pool", columns=["id"])["id"].to_pylist()
    unsafe = lake.read("manifests/lowres")["id"][0].as_py()  # passes the lowres rules
    rows = [{"id": i, "long": f"long {k}", "medium": "m", "short": "s", "tags": ["vlm tag", "lantern"],
             "prompt": "p", "nsfw": 0.9 if i == unsafe else 0.1, "caption_producer": "http:test|caption-v1|en",
             "error": None} for k, i in enumerate(ids)]
    lake.write(schemas.CAPTIONS, schemas.table_spec(schemas.CAPTIONS).conform(pa.Table.from_pylist(rows)),
               mode="overwrite")
    _, tags, source = pool_tags(lake)
    assert source == "pool+captions(http:test|caption-v1|en)" and all("vlm tag" in t for t in tags.to_pylist())
    rules = {**to_dict(demo_lake["spec"].stage("lowres").rules), "max_score": {"vlm_nsfw": 0.5}}
    stage = from_dict(StageConfig, {"rules": rules, "captions": {"levels": {"long": 1.0}, "raw": 0.0}})
    summary = export(lake, "cap", stage)
    assert summary.notes["removed_per_rule"]["max_score:vlm_nsfw"] == 1
    assert unsafe not in lake.read("manifests/cap")["id"].to_pylist()
    drawn = lake.read("samples/cap")
    assert set(drawn["caption_level"].to_pylist()) == {"long"}
    assert all(c.startswith("long ") for c in drawn["caption"].to_pylist())


def test_vllm_backend_builds_on_a_gpu_machine(tmp_path):
    """The in-cluster vLLM path: only where vLLM and a GPU are present (never in CI)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        pytest.skip("the vllm backend needs the vllm package and a GPU")
    from curation.steps.captions.caption import processor
    from curation.steps.captions.config import CaptionConfig, VllmBackend

    cfg = CaptionConfig(backend="vllm", vllm=VllmBackend(model_source=str(tmp_path)))
    assert processor(cfg, lambda row, text, error, usage: row) is not None
