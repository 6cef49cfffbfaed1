"""`curate nightly`: a run recorded in `runs`, a finished run id a no-op, a failed or SIGKILLed
run resumed to the state of an uninterrupted one, and one run per lake (the lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.storage import schemas
from curation.storage.lake import Lake

REPO = Path(__file__).resolve().parents[1]
SPEC = """lake: {lake}
profile: {{operators: [metadata, phash], batch_size: 4}}
score:
  encoders:
    - name: clip
      backend: open_clip
      model: ViT-B-32
      random: true
      model_overrides:
        embed_dim: 32
        vision_cfg: {{image_size: 32, layers: 1, width: 32, head_width: 16, patch_size: 16}}
        text_cfg: {{context_length: 16, vocab_size: 49408, width: 32, heads: 2, layers: 1}}
  alignment_encoder: clip
  batch_size: 8
steps:
  - {{step: ingest, source: "{source}", name: night}}
  - {{step: profile}}
  - {{step: score}}
"""


def _curate(*args: str, fault: str | None = None, wait: bool = True):
    env = dict(os.environ, CURATE_PROGRESS="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    if fault:
        env["CURATE_FAULT"] = fault
    cmd = [sys.executable, "-m", "curation.cli.main", *args, "--num-cpus", "2"]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from curation.demo import write_jpegs

    root = tmp_path_factory.mktemp("night")
    write_jpegs(root / "imgs", 8, megapixels=(0.05, 0.1), seed=4)
    spec = root / "night.yaml"
    spec.write_text(SPEC.format(lake=root / "unused", source=root / "imgs"))
    return root, spec


def _state(lake: Path) -> dict:
    """What the night produced, independent of versions: ids per table and the profile values."""
    lk = Lake(str(lake), create=False)
    prof = lk.read(schemas.PROFILES, columns=["id", "phash", "width"]).sort_by("id")
    return {"pool": sorted(lk.read(schemas.POOL, columns=["id"])["id"].to_pylist()), "profiles": prof.to_pylist(),
            "scores": sorted(lk.read(schemas.SCORES, columns=["id"])["id"].to_pylist())}


def test_finished_run_is_a_noop(night):
    root, spec = night
    lake = root / "lake-a"
    r = _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nightly 2026-12-01: finished (3 steps" in r.stdout
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    steps = json.loads(run["steps_json"])
    assert run["state"] == "finished" and run["attempts"] == 1 and [s["step"] for s in steps] == [
        "ingest", "profile", "score"]
    assert set(json.loads(run["versions_json"])) >= {"pool", "profiles", "scores"}
    versions = {t: Lake(str(lake)).version(t) for t in Lake(str(lake)).tables()}
    t0 = time.perf_counter()
    again = _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert {t: Lake(str(lake)).version(t) for t in Lake(str(lake)).tables()} == versions
    assert time.perf_counter() - t0 < 60  # no step ran, no Ray started


@pytest.mark.parametrize("fault", ["after_commit:pool=kill", "before_commit:profiles=kill", "after_commit:profiles=kill",
                                   "before_commit:scores=kill"])
def test_killed_run_resumes_to_the_uninterrupted_state(night, fault):
    root, spec = night
    reference = root / "lake-a"
    if not (reference / schemas.RUNS).exists():
        assert _curate("nightly", str(reference), "--spec", str(spec), "--run-id", "2026-12-01").returncode == 0
    lake = root / f"lake-{fault.split('=')[0].replace(':', '-')}"
    killed = _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01", fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-1500:])
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "running"  # killed: never marked finished
    lock = lake / "_locks" / "nightly.lock"
    assert lock.exists()  # the dead process's lock is still there ...
    resumed = _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "took over the stale lock" in resumed.stdout
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "finished" and run["attempts"] == 2
    assert _state(lake) == _state(reference)
    assert not lock.exists()


def test_failed_step_is_recorded_and_the_rerun_resumes(night, tmp_path):
    root, spec = night
    broken = tmp_path / "broken.yaml"  # kg-weights needs a knowledge graph this lake does not have
    broken.write_text(spec.read_text().replace("  - {step: score}\n", "  - {step: score}\n  - {step: kg-weights}\n"))
    lake = tmp_path / "lake"
    r = _curate("nightly", str(lake), "--spec", str(broken), "--run-id", "n1")
    assert r.returncode == 1 and "failed; rerun the same command to resume from kg-weights" in r.stdout, r.stdout
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "failed" and run["error"].startswith("kg-weights:")
    assert [s["step"] for s in json.loads(run["steps_json"])] == ["ingest", "profile", "score"]
    fixed = _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "n1")
    assert fixed.returncode == 0 and fixed.stdout.count("done in an earlier attempt") == 3


def test_one_run_per_lake(night, tmp_path):
    from curation.steps.nightly.lock import LockHeld, NightLock

    with NightLock(str(tmp_path), "a"):
        with pytest.raises(LockHeld, match="run a"):
            with NightLock(str(tmp_path), "b"):
                pass
        t0 = time.perf_counter()
        with pytest.raises(LockHeld):
            with NightLock(str(tmp_path), "b", wait_s=0.3, poll_s=0.1):
                pass
        assert time.perf_counter() - t0 >= 0.3
    with NightLock(str(tmp_path), "c"):  # released: free again
        pass
    root, spec = night
    holder = _curate("nightly", str(tmp_path / "lake"), "--spec", str(spec), "--run-id", "x", wait=False)
    lock = tmp_path / "lake" / "_locks" / "nightly.lock"
    for _ in range(300):
        if lock.exists():
            break
        time.sleep(0.1)
    second = _curate("nightly", str(tmp_path / "lake"), "--spec", str(spec), "--run-id", "y")
    holder.wait(timeout=300)
    assert second.returncode == 3 and "another nightly run holds" in second.stdout
    assert holder.returncode == 0


def test_incremental_dedup_as_the_step_mode(night, tmp_path):
    """`dedup.mode: incremental` after a full run: a night's new items are decided against the
    existing groups, and a night with nothing new writes nothing."""
    root, spec = night
    from curation.demo import write_jpegs

    text = spec.read_text().replace("  - {step: score}\n", "  - {step: score}\n  - {step: dedup}\n")
    text = text.replace("steps:", "dedup: {encoder: clip, k: 4, tau: 0.99, levels: [1.0], keep_by: [], mode: incremental}\nsteps:")
    night_spec = tmp_path / "night.yaml"
    night_spec.write_text(text)
    lake = tmp_path / "lake"
    first = _curate("nightly", str(lake), "--spec", str(night_spec), "--run-id", "d1")  # no dedup yet: a full run
    assert first.returncode == 0, first.stderr[-2000:]
    extra = write_jpegs(tmp_path / "more", 3, megapixels=(0.05, 0.1), seed=9)
    (root / "imgs" / "night2-copy.jpg").write_bytes(extra[0].read_bytes())
    try:
        second = _curate("nightly", str(lake), "--spec", str(night_spec), "--run-id", "d2")
    finally:
        (root / "imgs" / "night2-copy.jpg").unlink()
    assert second.returncode == 0, second.stderr[-2000:]
    dedup = Lake(str(lake)).read(schemas.DEDUP)
    assert dedup.num_rows == Lake(str(lake)).read(schemas.POOL).num_rows  # one decision per item
    runs = {r["run_id"]: json.loads(r["steps_json"]) for r in Lake(str(lake)).read(schemas.RUNS).to_pylist()}
    assert [s["rows_in"] for s in runs["d2"] if s["step"] == "dedup"] == [1]  # only the night's new item


def test_versions_a_run_wrote_are_pinned_against_vacuum(night):
    from curation.storage.maintenance import pinned_versions

    root, spec = night
    lake = root / "lake-a"
    if not (lake / schemas.RUNS).exists():
        assert _curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01").returncode == 0
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    pins = pinned_versions(Lake(str(lake)))
    for table, version in json.loads(run["versions_json"]).items():
        assert version in pins[table]
