"""`curate nightly`: a run recorded in `runs`, a finished run id a no-op, a failed or SIGKILLed
run resumed to the state of an uninterrupted one, and one run per lake (the lock).

Only what needs its own process runs as a subprocess (the SIGKILLed runs, and the no-op rerun
that must not start Ray); everything else runs in process on the shared Ray session."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from curation.config.spec import load_spec
from curation.steps.nightly.night import nightly
from curation.storage import schemas
from curation.storage.lake import Lake
from procs import run_curate, run_python

SPEC = """lake: {lake}
profile: {{operators: [metadata, phash], batch_size: 4}}
steps:
  - {{step: ingest, source: "{source}", name: night}}
  - {{step: profile}}
"""
SCORE = """score:
  encoders:
    - name: clip
      backend: open_clip
      model: ViT-B-32
      random: true
      model_overrides:
        embed_dim: 32
        vision_cfg: {image_size: 32, layers: 1, width: 32, head_width: 16, patch_size: 16}
        text_cfg: {context_length: 16, vocab_size: 49408, width: 32, heads: 2, layers: 1}
  alignment_encoder: clip
  batch_size: 8
dedup: {encoder: clip, k: 4, tau: 0.99, levels: [1.0], keep_by: [], mode: incremental}
"""


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from curation.demo import write_jpegs

    root = tmp_path_factory.mktemp("night")
    write_jpegs(root / "imgs", 8, megapixels=(0.05, 0.1), seed=4)
    spec = root / "night.yaml"
    spec.write_text(SPEC.format(lake=root / "unused", source=root / "imgs"))
    return root, spec


def _night(spec: Path, lake: Path, run_id: str, out: list | None = None):
    """`curate nightly` in this process (the shared Ray session)."""
    loaded = load_spec(str(spec))
    loaded.lake = str(lake)
    return nightly(loaded, run_id=run_id, printer=(out if out is not None else []).append)


@pytest.fixture(scope="module")
def reference(night, ray_session):
    """The uninterrupted night 2026-12-01 (lake-a)."""
    root, spec = night
    assert _night(spec, root / "lake-a", "2026-12-01").exit_code == 0
    return root / "lake-a"


def _state(lake: Path) -> dict:
    """What the night produced, independent of versions: ids per table and the profile values."""
    lk = Lake(str(lake), create=False)
    prof = lk.read(schemas.PROFILES, columns=["id", "phash", "width"]).sort_by("id")
    return {"pool": sorted(lk.read(schemas.POOL, columns=["id"])["id"].to_pylist()), "profiles": prof.to_pylist()}


def test_finished_run_is_a_noop(night, reference):
    root, spec = night
    run = Lake(str(reference)).read(schemas.RUNS).to_pylist()[0]
    steps = json.loads(run["steps_json"])
    assert run["state"] == "finished" and run["attempts"] == 1 and [s["step"] for s in steps] == ["ingest", "profile"]
    assert set(json.loads(run["versions_json"])) >= {"pool", "profiles"}
    versions = {t: Lake(str(reference)).version(t) for t in Lake(str(reference)).tables()}
    # in a fresh process, as cron would run it: nothing runs and Ray is never started
    code = ("import sys\nfrom curation.cli.main import main\n"
            f"rc = main(['nightly', {str(reference)!r}, '--spec', {str(spec)!r}, '--run-id', '2026-12-01'])\n"
            "ray = sys.modules.get('ray')\nprint('RESULT', rc, bool(ray and ray.is_initialized()))")
    again = run_python(code, what="the no-op rerun of a finished night")
    assert again.stdout.strip().splitlines()[-1] == "RESULT 0 False", again.stdout + again.stderr
    assert "already finished" in again.stdout
    assert {t: Lake(str(reference)).version(t) for t in Lake(str(reference)).tables()} == versions


# killed inside a step (profiles staged, not committed), and after a step committed but before the
# run recorded it (the last step here; after_commit:pool resumes the same way, one step earlier)
@pytest.mark.parametrize("fault", ["before_commit:profiles=kill", "after_commit:profiles=kill"])
def test_killed_run_resumes_to_the_uninterrupted_state(night, reference, fault):
    root, spec = night
    lake = root / f"lake-{fault.split('=')[0].replace(':', '-')}"
    killed = run_curate("nightly", str(lake), "--spec", str(spec), "--run-id", "2026-12-01", fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-1500:])
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "running"  # killed: never marked finished
    lock = lake / "_locks" / "nightly.lock"
    assert lock.exists()  # the dead process's lock is still there ...
    out: list[str] = []
    resumed = _night(spec, lake, "2026-12-01", out)
    assert resumed.exit_code == 0, out
    assert "took over the stale lock" in out[0]
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "finished" and run["attempts"] == 2
    assert _state(lake) == _state(reference)
    assert not lock.exists()


def test_failed_step_is_recorded_and_the_rerun_resumes(night, ray_session, tmp_path):
    root, spec = night
    broken = tmp_path / "broken.yaml"  # kg-weights needs a knowledge graph this lake does not have
    broken.write_text(spec.read_text().replace("  - {step: profile}\n", "  - {step: profile}\n  - {step: kg-weights}\n"))
    lake = tmp_path / "lake"
    out: list[str] = []
    failed = _night(broken, lake, "n1", out)
    assert failed.exit_code == 1 and "failed; rerun the same command to resume from kg-weights" in out[-1], out
    run = Lake(str(lake)).read(schemas.RUNS).to_pylist()[0]
    assert run["state"] == "failed" and run["error"].startswith("kg-weights:")
    assert [s["step"] for s in json.loads(run["steps_json"])] == ["ingest", "profile"]
    out = []
    assert _night(spec, lake, "n1", out).exit_code == 0 and sum("done in an earlier attempt" in x for x in out) == 2


def test_one_run_per_lake(night, tmp_path, capsys, monkeypatch):
    from curation.cli.main import main
    from curation.steps.nightly.lock import LockHeld, NightLock

    from curation.steps.nightly import lock as lock_module

    class Clock:
        """The lock's clock: `sleep` moves it on at once, so the wait is counted, not timed."""

        def __init__(self):
            self.now, self.slept = 0.0, []

        def __getattr__(self, name):
            return getattr(time, name)

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.slept.append(seconds)
            self.now += seconds

    with NightLock(str(tmp_path), "a"):
        with pytest.raises(LockHeld, match="run a"):
            with NightLock(str(tmp_path), "b"):
                pass
        clock = Clock()
        monkeypatch.setattr(lock_module, "time", clock)
        with pytest.raises(LockHeld):
            with NightLock(str(tmp_path), "b", wait_s=0.3, poll_s=0.1):
                pass
        monkeypatch.undo()
        assert clock.slept == pytest.approx([0.1, 0.1, 0.1])  # polled until wait_s ran out, then gave up
    with NightLock(str(tmp_path), "c"):  # released: free again
        pass
    # a stale lock (its process is gone) is taken over, and the takeover is reported
    gone = {"run_id": "old", "pid": 2 ** 22 + 1, "host": socket.gethostname(), "since": "x", "t": 0}
    lock_path = tmp_path / "_locks" / "nightly.lock"
    lock_path.write_text(json.dumps(gone))
    with NightLock(str(tmp_path), "d") as held:
        assert held.taken_over == gone and json.loads(lock_path.read_text())["run_id"] == "d"
        # a second process that judged the old lock stale must not delete the fresh one
        assert not NightLock(str(tmp_path), "e")._take_over(gone)
        assert json.loads(lock_path.read_text())["run_id"] == "d"
    assert not lock_path.exists() and not list(lock_path.parent.iterdir())
    root, spec = night
    lake = tmp_path / "lake"
    with NightLock(str(lake), "x"):  # a live holder (this process): the command exits 3, nothing runs
        assert main(["nightly", str(lake), "--spec", str(spec), "--run-id", "y"]) == 3
    assert "another nightly run holds" in capsys.readouterr().out
    assert not Lake(str(lake)).exists(schemas.RUNS)


def test_incremental_dedup_as_the_step_mode(night, ray_session, tmp_path):
    """`dedup.mode: incremental` after a full run: a night's new items are decided against the
    existing groups, and a night with nothing new writes nothing."""
    root, spec = night
    from curation.demo import write_jpegs

    text = spec.read_text().replace("  - {step: profile}\n", "  - {step: profile}\n  - {step: score}\n  - {step: dedup}\n")
    night_spec = tmp_path / "night.yaml"
    night_spec.write_text(text.replace("steps:", SCORE + "steps:"))
    lake = tmp_path / "lake"
    assert _night(night_spec, lake, "d1").exit_code == 0  # no dedup yet: a full run
    extra = write_jpegs(tmp_path / "more", 3, megapixels=(0.05, 0.1), seed=9)
    (root / "imgs" / "night2-copy.jpg").write_bytes(extra[0].read_bytes())
    out: list[str] = []
    try:
        second = _night(night_spec, lake, "d2", out)
    finally:
        (root / "imgs" / "night2-copy.jpg").unlink()
    assert second.exit_code == 0, out
    dedup = Lake(str(lake)).read(schemas.DEDUP)
    assert dedup.num_rows == Lake(str(lake)).read(schemas.POOL).num_rows  # one decision per item
    runs = {r["run_id"]: json.loads(r["steps_json"]) for r in Lake(str(lake)).read(schemas.RUNS).to_pylist()}
    assert [s["rows_in"] for s in runs["d2"] if s["step"] == "dedup"] == [1]  # only the night's new item
    assert any(line.strip() == "new_embedded: 1" for line in out)  # the report's dedup lines


def test_versions_a_run_wrote_are_pinned_against_vacuum(reference):
    from curation.storage.maintenance import pinned_versions

    run = Lake(str(reference)).read(schemas.RUNS).to_pylist()[0]
    pins = pinned_versions(Lake(str(reference)))
    for table, version in json.loads(run["versions_json"]).items():
        assert version in pins[table]
