"""Crash and concurrency safety of the lake's writers, with the fault injector
(`curation.storage.faults`): a `curate` process is SIGKILLed between its data and its commit
(or between two commits of one step), then rerun; every table must end identical to an
uninterrupted run. Two writers racing on one lake must keep every row exactly once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.storage.lake import Lake
from procs import communicate, run_curate, start_curate

KEYS = {"graph_edges": ["src_id", "dst_id"]}
VOLATILE = {"ingest_batch"}  # a per-run stamp (time + random suffix)

STEPS = ["ingest", "profile", "score", "dedup", "export"]
STEP_LINES = {
    "ingest": "  - {{step: ingest, source: {source}, name: src}}",
    "profile": "  - {{step: profile}}",
    "score": "  - {{step: score}}",
    "dedup": "  - {{step: dedup}}",
    "export": "  - {{step: export, stage: s, out: {out}}}",
}
SPEC = """\
lake: {lake}
profile: {{batch_size: 4}}
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
  heads:
    - {{name: aesthetic, kind: aesthetic, encoder: clip, random: true}}
  alignment_encoder: clip
  batch_size: 8
dedup: {{encoder: clip, k: 4, tau: 0.99, levels: [1.0]}}
stages:
  s: {{rules: {{min_side: 64}}, buckets: {{resolution: 256, step: 32}}}}
steps:
"""


def _write_spec(path: Path, lake: Path, source: Path, out: Path, steps: list[str]) -> Path:
    text = SPEC + "\n".join(STEP_LINES[s] for s in steps) + "\n"
    path.write_text(text.format(lake=lake, source=source, out=out))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from curation.demo import write_jpegs

    root = tmp_path_factory.mktemp("fault-src")
    paths = write_jpegs(root / "imgs", 10, megapixels=(0.05, 0.1), seed=3)
    for i, p in enumerate(paths):
        p.with_suffix(".txt").write_text(f"a photo number {i}")
    (root / "imgs" / "copy.jpg").write_bytes(paths[0].read_bytes())  # an exact duplicate
    return root / "imgs"


@pytest.fixture(scope="module")
def reference(ray_session, source, tmp_path_factory):
    """The uninterrupted run in this process, one step at a time: a copy of the lake after
    each step (the state a killed step starts from, and the state its rerun must reach)."""
    from curation.config.spec import load_spec
    from curation.steps.run import run_job

    tmp = tmp_path_factory.mktemp("fault-ref")
    lake, states = tmp / "lake", {}
    for step in STEPS:
        spec = _write_spec(tmp / f"{step}.yaml", lake, source, tmp / "out", [step])
        run_job(load_spec(str(spec)), printer=lambda s: None)
        states[step] = tmp / f"after-{step}"
        shutil.copytree(lake, states[step])
    return states


def _key(table: str) -> list[str]:
    return KEYS.get(table.split("/")[0], ["id"])


def assert_same_lake(got: Lake, want: Lake) -> None:
    assert got.tables() == want.tables()
    for table in want.tables():
        g, w = got.read(table), want.read(table)
        key = _key(table)
        if table.startswith("kg_"):
            continue
        keys = [tuple(r.values()) for r in g.select(key).to_pylist()]
        assert len(keys) == len(set(keys)), f"{table}: duplicate keys"
        assert g.num_rows == w.num_rows, f"{table}: {g.num_rows} rows, want {w.num_rows}"
        order = [(k, "ascending") for k in key]
        g, w = g.sort_by(order), w.sort_by(order)
        for name in w.column_names:
            if name in VOLATILE:
                continue
            a, b = g.column(name), w.column(name)
            if pa.types.is_floating(b.type):
                np.testing.assert_allclose(a.to_numpy(zero_copy_only=False).astype(float),
                                           b.to_numpy(zero_copy_only=False).astype(float),
                                           rtol=1e-3, atol=1e-4, equal_nan=True, err_msg=f"{table}.{name}")
            elif pa.types.is_binary(b.type) and table.startswith("embeddings/"):
                va = np.frombuffer(b"".join(a.to_pylist()), np.float16).astype(np.float32)
                vb = np.frombuffer(b"".join(b.to_pylist()), np.float16).astype(np.float32)
                np.testing.assert_allclose(va, vb, atol=2e-3, err_msg=f"{table}.{name}")
            else:
                assert a.to_pylist() == b.to_pylist(), f"{table}.{name} differs"


@pytest.mark.parametrize("step,fault", [
    ("ingest", "before_commit:pool=kill"),              # hashed, not committed
    ("profile", "before_commit:profiles=kill"),         # Ray wrote the files, no commit
    # embeddings committed, scores written but not committed (later than after_commit:embeddings,
    # whose rerun takes the same path: the keyed embeddings append finds its rows there)
    ("score", "before_commit:scores=kill"),
    ("dedup", "after_commit:graph_edges/*=kill"),       # graph committed, decisions not
    ("export", "after_commit:manifests/*=kill"),        # Delta manifest committed, plain copy not
])
def test_killed_step_then_rerun_equals_uninterrupted(step, fault, source, reference, tmp_path):
    from curation.config.spec import load_spec
    from curation.steps.run import run_job

    lake = tmp_path / "lake"
    before = STEPS[STEPS.index(step) - 1] if step != "ingest" else None
    if before:
        shutil.copytree(reference[before], lake)
    spec = _write_spec(tmp_path / "spec.yaml", lake, source, tmp_path / "out", [step])
    killed = run_curate("run", str(spec), fault=fault)
    assert killed.returncode == -9, f"the fault did not fire:\n{killed.stdout}\n{killed.stderr[-3000:]}"
    run_job(load_spec(str(spec)), printer=lambda s: None)  # the rerun, in this process
    assert_same_lake(Lake(str(lake)), Lake(str(reference[step])))
    if step == "export":
        assert (tmp_path / "out" / "manifest.parquet").exists()
    again = run_job(load_spec(str(spec)), printer=lambda s: None)  # once more: nothing changes
    assert_same_lake(Lake(str(lake)), Lake(str(reference[step])))
    assert all(s.notes.get("up_to_date") for s in again if s.step in ("profile", "score"))


def test_concurrent_ingests_and_profiles_keep_every_row_once(source, tmp_path):
    # two processes, each `ingest` of a source (the two share some images) then `profile`, held
    # 2 s before every commit: both race to create `pool`, then to create and fill `profiles`
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    files = sorted(source.glob("img_*.jpg"))
    for i, f in enumerate(files):
        for d in ([a] if i < 4 else [b] if i >= 7 else [a, b]):
            (d / f.name).write_bytes(f.read_bytes())
    lake = tmp_path / "lake"
    specs = []
    for d in (a, b):
        spec = tmp_path / f"{d.name}.yaml"
        spec.write_text(f"lake: {lake}\nprofile: {{batch_size: 4}}\nsteps:\n"
                        f"  - {{step: ingest, source: {d}, name: {d.name}}}\n  - {{step: profile}}\n")
        specs.append(spec)
    procs = [start_curate("run", str(spec), fault="before_commit:*=delay:2") for spec in specs]
    outs = [communicate(p, what=f"concurrent curate run {spec.name}") for p, spec in zip(procs, specs)]
    assert [p.returncode for p in procs] == [0, 0], outs
    pool = Lake(str(lake)).read("pool")
    ids = pool["id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(files)
    shared = {r["id"]: sorted(r["sources"]) for r in pool.to_pylist()}
    assert sorted(shared.values()).count(["a", "b"]) == 3
    # each process profiles after its own ingest committed: the later one sees every pool row
    prof = Lake(str(lake)).read("profiles")["id"].to_pylist()
    assert sorted(prof) == sorted(ids)


def test_fault_rules_are_checked():
    from curation.storage.faults import ENV, fault_point

    os.environ[ENV] = "before_commit:x=explode"
    try:
        with pytest.raises(ValueError, match="unknown action"):
            fault_point("before_commit:x")
        fault_point("before_commit:other")  # no rule for this point: nothing happens
    finally:
        del os.environ[ENV]
