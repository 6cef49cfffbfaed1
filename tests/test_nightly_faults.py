"""Faults a nightly run meets, in process on the shared Ray session: a source that vanished, a
half-written shard, a file that fails inside a batch, a half-written data file in the lake,
and the lake's storage briefly unavailable. Each run fails or resumes with a clear message, and
no committed table holds a partial or duplicated result. (Kills: tests/test_nightly.py.)"""

from __future__ import annotations

import json
import shutil

import pyarrow.compute as pc
import pytest

from curation.config.spec import load_spec
from curation.steps.nightly.night import nightly
from curation.storage import schemas
from curation.storage.lake import Lake

SPEC = """lake: {lake}
nightly: {{retry_wait_s: 0}}
profile: {{operators: [metadata, phash], batch_size: 4}}
steps:
  - {{step: ingest, source: "{source}", name: night}}
  - {{step: profile}}
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from curation.demo import write_jpegs

    root = tmp_path_factory.mktemp("faults")
    paths = write_jpegs(root / "imgs", 6, megapixels=(0.05, 0.1), seed=5)
    return root, paths


def _spec(tmp_path, source, lake="lake"):
    path = tmp_path / f"{lake}.yaml"
    path.write_text(SPEC.format(lake=tmp_path / lake, source=source))
    return load_spec(str(path))


def _unique(lake: Lake, table: str) -> bool:
    ids = lake.read(table, columns=["id"])["id"]
    return len(ids) == len(pc.unique(ids))


def _run(spec, run_id, out):
    return nightly(spec, run_id=run_id, printer=out.append)


def test_a_vanished_source_stops_the_night_before_anything_runs(ray_session, images, tmp_path):
    from curation.config.typed import ConfigError

    root, _ = images
    source = tmp_path / "incoming"
    shutil.copytree(root / "imgs", source)
    spec = _spec(tmp_path, source)
    out: list[str] = []
    assert _run(spec, "n1", out).exit_code == 0
    lake = Lake(spec.lake)
    versions = {t: lake.version(t) for t in lake.tables()}
    shutil.rmtree(source)  # the share was unmounted before night 2
    # checked before the lock, the run record or any step: exit 2 (`curate nightly`) naming key and path
    with pytest.raises(ConfigError, match=r"steps\[0\]\.source: source not found: .*incoming") as err:
        _run(spec, "n2", out)
    assert err.value.path == "steps[0].source"
    assert {t: lake.version(t) for t in lake.tables()} == versions
    assert lake.read(schemas.RUNS)["run_id"].to_pylist() == ["n1"]
    shutil.copytree(root / "imgs", source)  # back again: night 2 runs and adds nothing twice
    again = _run(spec, "n2", out)
    assert again.exit_code == 0 and again.run["attempts"] == 1
    assert lake.read(schemas.POOL).num_rows == 6 and _unique(lake, schemas.POOL)


def test_a_half_written_shard_and_a_bad_file_give_error_rows_and_the_run_goes_on(ray_session, images, tmp_path):
    from curation.demo import write_webdataset

    _, paths = images
    shards = write_webdataset(tmp_path / "shards", paths, [f"caption {i}" for i in range(len(paths))], shard_size=3)
    whole = shards[1].read_bytes()
    shards[1].write_bytes(whole[: len(whole) // 2])  # the upstream writer is still writing it
    spec = _spec(tmp_path, tmp_path / "shards")
    out: list[str] = []
    night = _run(spec, "n1", out)
    assert night.exit_code == 0, out
    lake = Lake(spec.lake)
    pool = lake.read(schemas.POOL, columns=["id", "error"])
    errors = [e for e in pool["error"].to_pylist() if e]
    assert errors and all("unexpected end of data" in e or "truncated" in e.lower() for e in errors), errors
    good = pool.num_rows - len(errors)
    assert 3 <= good < 6  # the whole shard, and what the half-written one held completely
    profiles = lake.read(schemas.PROFILES, columns=["id"])
    assert profiles.num_rows == pool.num_rows  # one profile row per pool row, the error rows included
    steps = {s["step"]: s for s in json.loads(night.run["steps_json"])}
    assert steps["ingest"]["errors"] == len(errors)
    # the writer finished: the next night reads the shard whole; nothing is added twice
    shards[1].write_bytes(whole)
    assert _run(spec, "n2", out).exit_code == 0
    pool = lake.read(schemas.POOL, columns=["id", "error"])
    assert pc.sum(pc.is_valid(pool["error"])).as_py() == 0, pool["error"].to_pylist()
    assert pool.num_rows == 6 and _unique(lake, schemas.POOL) and _unique(lake, schemas.PROFILES)


def test_a_half_written_data_file_in_the_lake_is_never_read(ray_session, images, tmp_path):
    """A writer killed mid-file leaves bytes in the table's folder that no commit names."""
    root, _ = images
    spec = _spec(tmp_path, root / "imgs")
    out: list[str] = []
    assert _run(spec, "n1", out).exit_code == 0
    lake = Lake(spec.lake)
    before = lake.read(schemas.POOL).sort_by("id")
    parquet = next((tmp_path / "lake" / "pool").glob("*.parquet"))
    (parquet.parent / "part-killed-writer.parquet").write_bytes(parquet.read_bytes()[:200])
    assert _run(spec, "n2", out).exit_code == 0
    assert lake.read(schemas.POOL).sort_by("id").equals(before)


def test_storage_briefly_unavailable_is_retried_and_a_longer_outage_fails_then_resumes(ray_session, images,
                                                                                        tmp_path, monkeypatch):
    from curation.storage import faults

    root, _ = images
    reference = _spec(tmp_path, root / "imgs", "reference")
    assert _run(reference, "n1", []).exit_code == 0
    want = Lake(reference.lake).read(schemas.PROFILES, columns=["id", "phash", "width"]).sort_by("id")

    spec = _spec(tmp_path, root / "imgs")
    out: list[str] = []
    monkeypatch.setattr(faults, "_raised", {})
    monkeypatch.setenv(faults.ENV, "before_commit:profiles=oserror:1")
    night = _run(spec, "n1", out)
    assert night.exit_code == 0, out
    assert any("storage error" in line and "retry 1 of 2" in line for line in out), out
    assert any(line.startswith("  profile:") and "after 1 storage error(s)" in line for line in out)
    lake = Lake(spec.lake)
    assert lake.read(schemas.PROFILES, columns=["id", "phash", "width"]).sort_by("id").equals(want)

    # an outage longer than the retries: the run fails naming the storage, the rerun resumes
    other = _spec(tmp_path, root / "imgs", "lake2")
    monkeypatch.setattr(faults, "_raised", {})
    monkeypatch.setenv(faults.ENV, "before_commit:profiles=oserror:5")
    out = []
    night = _run(other, "n1", out)
    assert night.exit_code == 1 and "profile: storage unavailable: OSError" in night.run["error"]
    assert not Lake(other.lake).exists(schemas.PROFILES)  # nothing half-committed
    monkeypatch.delenv(faults.ENV)
    again = _run(other, "n1", out)
    assert again.exit_code == 0 and any("ingest: done in an earlier attempt" in line for line in out)
    assert Lake(other.lake).read(schemas.PROFILES, columns=["id", "phash", "width"]).sort_by("id").equals(want)
