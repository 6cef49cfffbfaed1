"""The step registry: one table of steps used by the spec, `curate run`, the step commands and
the Python API; overrides through `typed.override`; kg weights with `use_embeddings`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curation.cli.main import build_parser, main
from curation.config.spec import STEP_OPTIONS, JobSpec, StepSpec, load_spec, packaged_spec_path
from curation.config.typed import ConfigError, from_dict, override
from curation.steps import registry
from curation.steps.summary import StepSummary
from procs import run

ROOT = Path(__file__).resolve().parents[1]
CALLS: list = []


def echo_step(lake, cfg) -> StepSummary:
    """A step for the tests, registered as `echo` below (run="test_step_registry:echo_step")."""
    CALLS.append((lake.uri, cfg))
    return StepSummary("echo", 0, 0, 0.0, notes={"batch_size": cfg.batch_size})


@pytest.fixture
def echo(monkeypatch):
    """Register the `echo` step (no Ray, reads the `ingest` section) for one test."""
    monkeypatch.setattr(registry, "_STEPS", dict(registry._STEPS))
    CALLS.clear()
    registry.register(registry.Step(name="echo", run="test_step_registry:echo_step", section="ingest",
                                    needs_ray=False, help="echo the ingest section", writes=()))
    yield
    CALLS.clear()


def test_the_registered_steps():
    assert registry.names() == ["ingest", "profile", "ocr", "score", "dedup", "export", "sample", "caption",
                                "kg-build", "kg-augment", "kg-weights", "pairs-experts", "pairs-video", "pairs-render",
                                "hardcases", "review-propose", "review-export", "review-import", "review-apply"]
    spec = JobSpec()
    for entry in registry.steps():
        assert callable(entry.function()), entry.name
        assert set(entry.options) <= set(STEP_OPTIONS), entry.name
        if entry.section and entry.section != "stages":
            assert dataclasses.is_dataclass(entry.config(spec)), entry.section
    assert [e.name for e in registry.steps() if not e.needs_ray] == [
        "kg-build", "kg-augment", "kg-weights", "hardcases", "review-export", "review-import", "review-apply"]
    assert registry.get("score").writes == ("scores", "embeddings/<encoder>")
    assert registry.get("export").writes == ("manifests/<stage>", "samples/<stage>", "batches/<stage>")


def test_unknown_step_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown step 'transmogrify'; known steps: ingest, profile, ocr, score"):
        registry.get("transmogrify")
    with pytest.raises(ConfigError, match=r"^steps\[1\]: unknown step 'nope'; known steps: ingest"):
        from_dict(JobSpec, {"steps": [{"step": "profile"}, {"step": "nope"}]})
    with pytest.raises(ConfigError):
        StepSpec("nope")


def test_register_refuses_duplicates_and_bad_targets(monkeypatch):
    monkeypatch.setattr(registry, "_STEPS", dict(registry._STEPS))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.Step(name="profile", run="x:y"))
    with pytest.raises(ValueError, match="module:function"):
        registry.register(registry.Step(name="other", run="no_colon"))


def test_cli_start_imports_neither_torch_nor_ray():
    code = ("import sys\nfrom curation.cli.main import build_parser\nbuild_parser()\n"
            "import curation.steps.registry, curation\n"
            "print(sorted(m for m in ('torch', 'ray', 'open_clip', 'curation.steps.profiling.score') if m in sys.modules))\n"
            # reading a spec (encoders and heads included) costs no torch import either: every
            # `curate` process and Ray worker that reads one would pay seconds for it
            "from curation.config.spec import load_spec, packaged_spec_path\n"
            "assert load_spec(packaged_spec_path('demo.yaml')).score.heads\n"
            "print(sorted(m for m in ('torch', 'ray', 'open_clip') if m in sys.modules))")
    out = run([sys.executable, "-c", code], what="the CLI's start in a fresh process", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "[]"]


def test_a_new_step_is_one_function_and_one_registration(echo, tmp_path, capsys):
    """Registered, the step runs from a spec, from `run_step`, and as a generic CLI command."""
    from curation import run_job, run_step

    lake = tmp_path / "lake"
    spec = tmp_path / "job.yaml"
    spec.write_text(f"lake: {lake}\ningest: {{batch_size: 7}}\nsteps: [{{step: echo}}]\n")
    summaries = run_job(load_spec(str(spec)), printer=lambda s: None)
    assert summaries[0].notes == {"batch_size": 7} and CALLS[-1][1].batch_size == 7
    assert run_step(str(lake), "echo", batch_size=3).notes == {"batch_size": 3}
    assert main(["echo", str(lake), "--set", "ingest.batch_size=5"]) == 0
    assert "[echo]" in capsys.readouterr().out and CALLS[-1][1].batch_size == 5
    assert main(["echo", str(lake), "--set", "ingest.batch_size=0"]) == 2
    assert "ingest.batch_size: must be >= 1, got 0" in capsys.readouterr().err
    # no Ray step: the generic command offers no --address
    with pytest.raises(SystemExit):
        build_parser().parse_args(["echo", str(lake), "--address", "auto"])


def test_run_step_options_and_checks(tmp_path, monkeypatch):
    import curation.runtime
    from curation import run_step

    monkeypatch.setattr(curation.runtime, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    lake = tmp_path / "lake"
    with pytest.raises(ConfigError, match=r"profile.operators\[0\]: unknown operator 'nope'"):
        run_step(str(lake), "profile", operators=["nope"])
    with pytest.raises(ConfigError, match=r"profile.max_pixels: must be >= 1, got 0"):
        run_step(str(lake), "profile", max_pixels=0)
    with pytest.raises(ConfigError, match="unknown key 'operatorz'"):
        run_step(str(lake), "profile", operatorz=["phash"])
    with pytest.raises(ConfigError, match=r"steps\[0\].stage: step 'profile' takes no 'stage' option"):
        run_step(str(lake), "profile", stage="lowres")
    with pytest.raises(ConfigError, match="source not found"):
        run_step(str(lake), "ingest", source=str(tmp_path / "nowhere"))
    assert not lake.exists()


def test_address_is_honoured_where_offered_and_absent_elsewhere(tmp_path, monkeypatch, capsys):
    import curation.runtime

    seen = []

    class Stop(Exception):
        pass

    def fake_init(cfg=None):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(curation.runtime, "init_ray", fake_init)
    (tmp_path / "imgs").mkdir()
    for argv in (["profile", str(tmp_path / "lake")], ["ingest", str(tmp_path / "lake"), str(tmp_path / "imgs")],
                 ["dedup", str(tmp_path / "lake")], ["export", str(tmp_path / "lake"), "--stage", "lowres"]):
        with pytest.raises(Stop):
            main(argv + ["--address", "ray://head:10001", "--num-cpus", "3"])
        assert (seen[-1].address, seen[-1].num_cpus) == ("ray://head:10001", 3)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"lake: {tmp_path / 'lake'}\nruntime: {{address: auto}}\nsteps: [{{step: profile}}]\n")
    with pytest.raises(Stop):
        main(["run", str(spec)])
    assert seen[-1].address == "auto"
    with pytest.raises(Stop):
        main(["run", str(spec), "--address", "ray://other:1"])
    assert seen[-1].address == "ray://other:1"
    parser = build_parser()
    for argv in (["kg", "weights", "L"], ["search", "L", "--text", "t"], ["status", "L"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv + ["--address", "auto"])
    capsys.readouterr()


def test_override_is_replace_with_checks():
    spec = load_spec(packaged_spec_path("profile.yaml"))
    before = dataclasses.replace(spec)
    ops, stage = list(spec.profile.operators), spec.stages["lowres"]
    new = override(spec, {"lake": "/x", "profile.operators": ["phash"], "stages.lowres.buckets.resolution": 512,
                          "kg.build.prune.rules": False})
    assert new.lake == "/x" and new.profile.operators == ["phash"] and new.kg.build.prune.rules is False
    assert new.stages["lowres"].buckets.resolution == 512
    # nothing of the original was touched
    assert spec.profile.operators == ops and spec.stages["lowres"] is stage and stage.buckets.resolution == 256
    assert spec.kg.build.prune.rules is True and spec == before
    with pytest.raises(ConfigError, match=r"^stages.lowres.buckets: resolution \(500 px\) must be a multiple"):
        override(spec, {"stages.lowres.buckets.resolution": 500})
    with pytest.raises(ConfigError, match=r"^profile.max_pixels: must be >= 1, got 0$"):
        override(spec, {"profile.max_pixels": 0})
    with pytest.raises(ConfigError, match=r"^profile.batch_size: expected int, got str 'x'$"):
        override(spec, {"profile.batch_size": "x"})
    with pytest.raises(ConfigError, match=r"did you mean 'max_pixels'"):
        override(spec, {"profile.max_pixel": 3})
    with pytest.raises(ConfigError, match=r"^stages.nope: no such key"):
        override(spec, {"stages.nope.rules.min_side": 3})
    with pytest.raises(ConfigError, match=r"^lake: str .* has no keys to set \(x\)"):
        override(spec, {"lake.x": 3})


def test_yaml_locations(tmp_path):
    from curation.config.yamlfile import load_yaml

    data, locate = load_yaml("a:\n  b.c:\n    - {x: 1}\n    - {y: 2}\nd: 3\n", "f.yaml")
    assert data == {"a": {"b.c": [{"x": 1}, {"y": 2}]}, "d": 3}
    assert locate("a.b.c[1].y") == "f.yaml:4:8"
    assert locate("a.b.c[5]") == "f.yaml:2:3"  # the deepest part that exists
    assert locate("d") == "f.yaml:5:1" and locate(None) == "f.yaml" and locate("zz") == "f.yaml"


# --------------------------------------------------------------------------- kg weights


@pytest.fixture
def kg_lake(tmp_path):
    from curation.demo.wiki import write_demo_wiki
    from curation.storage.lake import Lake
    from curation.storage.schemas import POOL_SCHEMA, conform

    wiki = write_demo_wiki(tmp_path / "wiki")
    lake = Lake(str(tmp_path / "lake"))
    tags = [["dog", "red"], ["puppies", "sunsett"], ["robot"], []]
    ids = [f"{i:064x}" for i in range(len(tags))]
    lake.write("pool", conform(pa.table({"id": ids, "tags": tags, "caption": [None] * len(tags)}), POOL_SCHEMA),
               mode="overwrite")
    return lake, wiki


def test_kg_weights_use_embeddings_with_the_configured_embedder(kg_lake, tmp_path):
    """`kg.weights.use_embeddings: true` maps unmatched tags with kg.augment's embedder (it
    used to fail: no embedder was passed)."""
    from curation import run_step

    lake, wiki = kg_lake
    spec = override(JobSpec(), {f"kg.build.{k}": str(wiki[k]) for k in ("page", "pagelinks", "linktarget", "redirect")})
    run_step(lake, "kg-build", spec)
    plain = run_step(lake, "kg-weights", spec)
    plain_rows = {r["id"]: r for r in lake.read("weights").to_pylist()}
    embedded = run_step(lake, "kg-weights", spec, use_embeddings=True, embed_min_similarity=0.5)
    rows = {r["id"]: r for r in lake.read("weights").to_pylist()}
    assert embedded.rows_out == plain.rows_out == 4
    assert "embed cos>=0.5" in rows[f"{0:064x}"]["weight_producer"]
    assert "embed off" in plain_rows[f"{0:064x}"]["weight_producer"]
    # "sunsett" / "puppies" match no title or alias; the hashing embedder's n-grams find one
    misspelt = f"{1:064x}"
    assert rows[misspelt]["tags_matched"] > plain_rows[misspelt]["tags_matched"]
    # a spec whose weights need the encoder embedder without an encoder config fails up front
    bad = override(spec, {"kg.weights.use_embeddings": True, "kg.augment.embedder": "encoder"})
    with pytest.raises(ConfigError, match="kg.augment.encoder: embedder 'encoder' needs an encoder config"):
        run_step(lake, "kg-weights", bad)
