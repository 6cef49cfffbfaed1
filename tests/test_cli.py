import json

import pyarrow.parquet as pq
import pytest

from curation.cli.main import main
from curation.config.spec import ConfigError, expand_env, load_spec, packaged_spec_path


def test_status_json_and_text(demo_lake, capsys):
    assert main(["status", demo_lake["lake"], "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in status["tables"]}
    assert {"pool", "profiles", "manifests/lowres"} <= set(tables)
    assert tables["profiles"]["rows"] == tables["pool"]["rows"]
    assert tables["profiles"]["producer"]["step"] == "profile"
    assert main(["status", demo_lake["lake"]]) == 0
    text = capsys.readouterr().out
    assert "manifests/lowres" in text and "step=ingest" in text


def test_ingest_profile_export_commands(ray_session, tmp_path, capsys):
    from curation.demo import write_jpegs

    write_jpegs(tmp_path / "imgs", 6, megapixels=(0.1, 0.2), seed=3)
    lake = str(tmp_path / "lake")
    assert main(["ingest", lake, str(tmp_path / "imgs"), "--source", "mine"]) == 0
    assert "[ingest] 6 in -> 6 out" in capsys.readouterr().out
    assert main(["profile", lake, "--operators", "metadata,compression,phash,border_std,jpeg_bpp,degradation", "--max-pixels", "10000000"]) == 0
    assert "[profile] 6 in -> 6 out" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["export", lake, "--stage", "lowres", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[export] 6 in" in printed and str(out / "manifest.parquet") in printed
    assert pq.read_table(out / "manifest.parquet").num_rows == json.loads((out / "_manifest.json").read_text())["output_count"]


def test_run_spec_and_errors(ray_session, tmp_path, capsys, monkeypatch):
    from curation.demo import write_jpegs

    write_jpegs(tmp_path / "imgs", 4, megapixels=(0.1, 0.2), seed=4)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""
lake: {tmp_path}/lake
profile: {{operators: [metadata, compression]}}
stages:
  tiny: {{rules: {{min_side: 10}}, buckets: {{resolution: 256, step: 32}}}}
steps:
  - {{step: ingest, source: {tmp_path}/imgs}}
  - {{step: profile}}
  - {{step: export, stage: tiny}}
""")
    assert main(["run", str(spec)]) == 0
    assert "[export] 4 in -> 4 out" in capsys.readouterr().out
    spec.write_text("lake: x\nstages: {s: {rules: {min_sid: 3}}}\n")
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "stages.s.rules" in err and "min_side" in err  # names the key and suggests the right one
    assert main(["export", str(tmp_path / "lake"), "--stage", "missing"]) == 2
    assert "unknown stage 'missing'" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "lake"), str(tmp_path / "nowhere")]) == 2
    assert "source not found" in capsys.readouterr().err


def test_demo_command_runs_the_demo(monkeypatch, tmp_path):
    from curation.demo import run as demo_run

    made = []

    class Recorder(demo_run.Demo):
        def run(self):
            made.append((self.workdir, self.images, self.overrides))

    monkeypatch.setattr(demo_run, "Demo", Recorder)
    assert main(["demo", "--workdir", str(tmp_path / "d"), "--images", "7", "--num-cpus", "1"]) == 0
    assert made == [(str(tmp_path / "d"), 7, {"runtime.num_cpus": 1})]


def test_demo_prints_every_phase(demo_output, demo_lake):
    # the session's demo (tests/conftest.py): the job, its review round and the second night
    out = demo_output
    assert "[ingest]" in out and "[profile]" in out and "[score]" in out and "[export]" in out
    assert "random weights (scores are meaningless)" in out
    manifest = demo_lake["workdir"] / "export" / "lowres" / "manifest.parquet"
    assert f"manifest: {manifest}" in out and pq.read_table(manifest).num_rows > 0
    assert "stage lowres:" in out and "concepts [weight]" in out and "stage sft:" in out  # each stage's balance line
    assert "[ocr]" in out and "images with text, scripts {" in out and "images/s" in out  # the planted signs read
    assert "review: simulated reviewer answered" in out and "lowres after review:" in out
    # the second night: copies merge into existing items, the larger re-encodes take over their groups
    assert "nightly demo-night-2: finished" in out and "existing_ids_updated: 3" in out
    assert "kept to duplicate: 2:" in out and "2 kept items now duplicates of a larger copy (planted 2)" in out


def test_spec_env_expansion_and_packaged_specs(monkeypatch):
    monkeypatch.setenv("CURATE_X", "/data")
    monkeypatch.delenv("CURATE_UNSET", raising=False)
    assert expand_env("${CURATE_X}/a ${CURATE_UNSET:-def} ${CURATE_UNSET}") == "/data/a def "
    steps = {"profile.yaml": ["ingest", "profile", "export"], "demo.yaml": ["ingest", "pairs-experts", "pairs-video", "pairs-render", "profile", "ocr", "score", "dedup",
                                                            "kg-build", "kg-augment", "kg-weights", "export", "export", "export",
                                                            "hardcases", "review-propose", "review-export"]}
    for name, expected in steps.items():
        spec = load_spec(packaged_spec_path(name))
        assert {"lowres", "sft"} <= set(spec.stages) and [s.step for s in spec.steps] == expected
    assert [s.step for s in load_spec(packaged_spec_path("score.yaml")).steps] == ["score", "export"]
    curriculum = load_spec(packaged_spec_path("curriculum.yaml"))
    assert set(curriculum.stages) == {"lowres", "omni", "sft", "edit-512", "edit-1024"}
    assert curriculum.stages["omni"].resolution is not None and curriculum.stages["sft"].balance.mode == "uniform"
    edit = curriculum.stages["edit-512"]
    assert [s.weight for s in edit.sources] == [4.0, 0.9, 0.1] and edit.synthetic_factor == 0.1
    assert curriculum.stages["edit-1024"].buckets.resolution == 1024
    with pytest.raises(ConfigError):
        from curation.config.typed import from_dict
        from curation.config.spec import JobSpec

        from_dict(JobSpec, {"steps": [{"step": "transmogrify"}]})


def test_missing_model_weights_fail_before_any_step(ray_session, tmp_path, capsys, monkeypatch):
    from curation.storage.lake import Lake

    monkeypatch.setenv("CURATE_LAKE", str(tmp_path / "lake"))
    for var in ("CURATE_CLIP_L14", "CURATE_CN_CLIP", "CURATE_AESTHETIC"):
        monkeypatch.delenv(var, raising=False)
    assert main(["run", packaged_spec_path("score.yaml")]) == 2
    err = capsys.readouterr().err
    assert "encoders[].pretrained" in err and "clip_l14" in err
    assert Lake(str(tmp_path / "lake")).tables() == []
    monkeypatch.setenv("CURATE_CLIP_L14", str(tmp_path / "missing.safetensors"))
    assert main(["score", str(tmp_path / "lake"), "--spec", packaged_spec_path("score.yaml")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_dedup_search_prune_commands(demo_lake, capsys, tmp_path):
    import shutil

    lake = str(tmp_path / "lake")
    shutil.copytree(demo_lake["lake"], lake)
    spec = packaged_spec_path("demo.yaml")
    assert main(["dedup", lake, "--spec", spec]) == 0
    assert "[dedup]" in capsys.readouterr().out
    assert main(["search", lake, "--text", "a red car", "-k", "3", "--spec", spec, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {"id", "uri", "similarity", "community_l0"} <= set(hits[0])
    assert main(["prune", lake, "--image", hits[0]["uri"], "-k", "1", "--min-similarity", "0.5",
                 "--reason", "failure case 7", "--spec", spec]) == 0
    assert "would be removed (add --apply to record)" in capsys.readouterr().out
    assert main(["prune", lake, "--image", hits[0]["uri"], "-k", "1", "--min-similarity", "0.5",
                 "--reason", "failure case 7", "--spec", spec, "--apply"]) == 0
    assert "recorded as removals" in capsys.readouterr().out
    assert main(["search", lake, "--spec", spec]) == 2
    assert "give one --text or --image" in capsys.readouterr().err
