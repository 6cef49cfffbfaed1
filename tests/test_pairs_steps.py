"""The video and render pair steps on a lake (frames and renders enter the pool, bad videos are
error rows, reruns add nothing), `curate pairs` on the command line, and export of pairs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.cli.main import main
from curation.config.spec import load_spec, packaged_spec_path
from curation.demo import photo_like, save_image
from curation.demo.videos import write_demo_videos
from curation.steps.export.pairs import pair_rows
from curation.steps.pairs.video_step import VideoPairer, encoder_for
from curation.steps.run import run_step
from curation.storage import schemas
from curation.storage.lake import Lake


@pytest.fixture(scope="module")
def pair_inputs(ray_session, tmp_path_factory):
    """A pool of six 480x360 photos, two short videos (one cut each) and a file that is no video."""
    from curation.steps.ingest.pool import IngestConfig, ingest

    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(5)
    for i in range(6):
        save_image(photo_like(rng, 480, 360), root / "imgs" / f"{i}.jpg")
    videos = root / "videos"
    write_demo_videos([photo_like(rng, 480, 320) for _ in range(4)], videos, seed=1, size=(320, 180), fps=12)
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    lake = Lake(str(root / "lake"))
    ingest(lake, IngestConfig(source=str(root / "imgs")))
    spec = load_spec(packaged_spec_path("demo.yaml"))  # its tiny random clip embeds the frames
    return {"root": root, "lake": lake, "videos": videos, "spec": spec}


def test_video_pairs(pair_inputs):
    lake, spec = pair_inputs["lake"], pair_inputs["spec"]
    s = run_step(lake, "pairs-video", spec, source=str(pair_inputs["videos"]),
                 overrides={"pairs.video.band": [-1.0, 1.0], "pairs.video.interval_s": 0.5})
    pairs = lake.read(schemas.EDIT_PAIRS)
    video = pairs.filter(pc.equal(pairs["kind"], "video"))
    ok = video.filter(pc.is_null(video["error"]))
    assert s.notes["videos"] == 3 and s.notes["videos_failed"] == 1 and s.notes["shots"] == 4
    assert ok.num_rows > 0 and s.notes["rejected_by_band"] == {"too_similar": 0, "too_far": 0}
    bad = video.filter(pc.is_valid(video["error"])).to_pylist()
    assert len(bad) == 1 and bad[0]["error"].startswith("video:") and "broken.mp4" in bad[0]["group_id"]
    for p in ok.to_pylist():
        prov = json.loads(p["provenance_json"])
        assert abs(prov["t_target_s"] - prov["t_source_s"] - 0.5) <= 0.25  # interval_s apart
        assert prov["shot"][0] <= prov["t_source_s"] < prov["t_target_s"] <= prov["shot"][1]  # never across a cut
        assert -1.0 <= p["similarity"] <= 1.0 and p["instruction_source"] == "pending"
    pool = lake.read(schemas.POOL, columns=["id", "sources", "extra_json"])
    frames = pool.filter(pc.is_in(pool["id"], value_set=pc.unique(pa.concat_arrays(
        [ok["source_id"].combine_chunks(), ok["target_id"].combine_chunks()]))))
    extra = [json.loads(e) for e in frames["extra_json"].to_pylist()]
    assert all("video" in e and "t_s" in e for e in extra)
    versions = (lake.version(schemas.EDIT_PAIRS), lake.version(schemas.POOL))
    run_step(lake, "pairs-video", spec, source=str(pair_inputs["videos"]),
             overrides={"pairs.video.band": [-1.0, 1.0], "pairs.video.interval_s": 0.5})
    assert (lake.version(schemas.EDIT_PAIRS), lake.version(schemas.POOL)) == versions
    # a narrow band keeps fewer pairs and says why (the step's actor, here in this process)
    narrow = dataclasses.replace(spec.pairs.video, band=(0.0, 0.0001), interval_s=0.5)
    pairer = VideoPairer(narrow, encoder_for(spec.score, narrow))
    rows = [pairer.one(str(v)) for v in sorted(pair_inputs["videos"].glob("*.mp4")) if v.name != "broken.mp4"]
    assert sum(r["too_similar"] for r in rows) == ok.num_rows and not any(r.get("pair_a") for r in rows)


def test_render_pairs(pair_inputs):
    lake, spec = pair_inputs["lake"], pair_inputs["spec"]
    s = run_step(lake, "pairs-render", spec, overrides={"pairs.render.n": 4, "pairs.render.side": 384})
    pairs = lake.read(schemas.EDIT_PAIRS)
    render = pairs.filter(pc.equal(pairs["kind"], "render")).to_pylist()
    assert s.notes["requested"] == 4 and len(render) == s.notes["rendered"] == 4 - sum(s.notes["rejected"].values())
    assert {p["instruction_source"] for p in render} == {"known"}
    langs = [json.loads(p["provenance_json"])["language"] for p in render]
    assert set(langs) <= {"en", "zh"} and all(p["instruction"] for p in render)
    failed = sum(p["error"] is not None for p in render)
    assert sum(int(v.split("/")[0]) for v in s.notes["ocr_passed"].values()) == len(render) - failed
    # rerun with the same n: nothing new; a larger n adds the next ones
    again = run_step(lake, "pairs-render", spec, overrides={"pairs.render.n": 4, "pairs.render.side": 384})
    assert again.notes["requested"] == 0 and again.notes["already_made"] == 4
    more = run_step(lake, "pairs-render", spec, overrides={"pairs.render.n": 5, "pairs.render.side": 384})
    assert more.notes["requested"] == 1
    pool = lake.read(schemas.POOL, columns=["id", "sources"])
    rendered = [r for r in pool.to_pylist() if "render" in r["sources"]]
    assert len(rendered) >= 2 * len(render)  # both images of every rendered pair


def test_cli_pairs(pair_inputs, capsys):
    lake = str(pair_inputs["lake"].uri)
    spec = str(packaged_spec_path("demo.yaml"))
    assert main(["pairs", lake, "--from", "bogus"]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["pairs", lake, "--from", "video", str(pair_inputs["root"] / "nowhere"), "--spec", spec]) == 2
    assert "pairs" in capsys.readouterr().err
    assert main(["pairs", lake, "--from", "render", "--n", "5", "--spec", spec,
                 "--set", "pairs.render.side=384"]) == 0
    assert "[pairs-render]" in capsys.readouterr().out


def test_export_rows_leave_out_pending_and_error_pairs():
    ids = [f"{i:064x}" for i in range(4)]
    evaluated = pa.table({"id": ids, "keep": [True] * 4, "reason": pa.nulls(4, pa.string()), "uri": [f"/{i}.jpg" for i in range(4)],
                          "byte_offset": pa.nulls(4, pa.int64()), "byte_size": pa.nulls(4, pa.int64()),
                          "height": [100, 200, 300, 400], "width": [100, 200, 300, 400]})
    pairs = pa.table({"pair_id": ["a", "b", "c"], "source_id": [ids[0], ids[1], ids[2]],
                      "target_id": [ids[1], ids[2], ids[3]], "kind": ["expert", "mixed", "render"],
                      "instruction": ["Make it blue", None, "Remove the text"],
                      "error": [None, None, "ocr: target read 'X'"]})
    rows, left_out = pair_rows(evaluated, pairs)
    assert rows["id"].to_pylist() == ["a"] and left_out == {"instruction_pending": 1, "pair_error": 1}
    assert rows["source_height"].to_pylist() == [100] and rows["height"].to_pylist() == [200]
