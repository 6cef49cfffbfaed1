"""Everything is checked before work starts: each bad input exits 2 with one line naming the
file / line / key, before Ray starts and before anything is created on disk."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from curation.cli.main import main
from curation.config.spec import load_spec
from curation.config.typed import ConfigError
from procs import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if a command gets as far as starting Ray (the checks must come first)."""
    import curation.runtime

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the configuration was checked")

    monkeypatch.setattr(curation.runtime, "init_ray", refuse)


def _fails(argv, capsys, *needles, created=()):
    """main(argv) exits 2 with one line on stderr containing every needle, no traceback, and
    none of the paths in `created` exists afterwards."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    for path in created:
        assert not os.path.exists(path), f"{path} was created"
    return err


def _spec(tmp_path, text, name="job.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --------------------------------------------------------------------------- YAML


def test_malformed_yaml_names_file_line_column(tmp_path, capsys, no_ray):
    spec = _spec(tmp_path, """
        lake: {lake}
        profile:
          operators: [metadata, phash
          batch_size: 4
        """.replace("{lake}", str(tmp_path / "lake")))
    _fails(["run", spec], capsys, f"{spec}:4:", "invalid YAML", created=[tmp_path / "lake"])


def test_scanner_error(tmp_path, capsys, no_ray):
    spec = _spec(tmp_path, "lake: 'unterminated\n")
    _fails(["run", spec], capsys, f"{spec}:", "invalid YAML")


def test_duplicate_key_at_any_level(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    spec = _spec(tmp_path, f"""
        lake: {lake}
        profile:
          batch_size: 8
          max_pixels: 1000000
          batch_size: 16
        """)
    _fails(["run", spec], capsys, f"{spec}:5:3", "duplicate key 'batch_size'", "first at line 3", created=[lake])
    spec = _spec(tmp_path, f"lake: {lake}\nsteps:\n  - {{step: profile, step: export}}\n")
    _fails(["run", spec], capsys, f"{spec}:3:", "duplicate key 'step'", created=[lake])
    spec = _spec(tmp_path, f"lake: {lake}\nlake: {lake}2\n")
    _fails(["run", spec], capsys, f"{spec}:2:1", "duplicate key 'lake'")


def test_merge_keys_are_not_duplicates(tmp_path):
    spec = _spec(tmp_path, """
        stages:
          base: &base {rules: {min_side: 256}}
          other:
            <<: *base
            rules: {min_side: 512}
        """)
    assert load_spec(str(spec)).stages["other"].rules.min_side == 512


def test_python_tag_is_refused_and_never_run(tmp_path, capsys, no_ray):
    marker = tmp_path / "marker"
    spec = _spec(tmp_path, f"""
        lake: !!python/object/apply:os.system ["touch {marker}"]
        """)
    _fails(["run", spec], capsys, f"{spec}:1:7", "unsupported YAML tag !!python/object/apply:os.system",
           created=[marker])


def test_spec_file_missing_or_not_a_mapping(tmp_path, capsys):
    _fails(["run", tmp_path / "nope.yaml"], capsys, "job spec not found")
    spec = _spec(tmp_path, "- a\n- b\n")
    _fails(["run", spec], capsys, "a job spec must be a mapping")


# --------------------------------------------------------------------------- keys and ranges


def test_range_errors_name_the_key_and_line(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    spec = _spec(tmp_path, f"""
        lake: {lake}
        profile:
          batch_size: 0
        """)
    _fails(["run", spec], capsys, f"{spec}:3:3", "profile.batch_size: must be >= 1, got 0", created=[lake])
    spec = _spec(tmp_path, f"""
        lake: {lake}
        dedup: {{tau: 1.5}}
        stages:
          s: {{rules: {{min_percentile: {{aesthetic: 120}}}}, buckets: {{resolution: 0}}}}
        """)
    _fails(["run", spec], capsys, "dedup.tau: must be <= 1.0, got 1.5")
    spec.write_text(f"lake: {lake}\nstages:\n  s: {{rules: {{min_percentile: {{aesthetic: 120}}}}}}\n")
    _fails(["run", spec], capsys, f"{spec}:3:", "stages.s.rules.min_percentile.aesthetic: must be <= 100")


@pytest.mark.parametrize("argv, needle", [
    (["profile", "{lake}", "--max-pixels", "0"], "profile.max_pixels: must be >= 1, got 0"),
    (["profile", "{lake}", "--num-cpus", "0"], "runtime.num_cpus: must be >= 1, got 0"),
    (["profile", "{lake}", "--set", "profile.batch_size=0"], "profile.batch_size: must be >= 1, got 0"),
    (["profile", "{lake}", "--set", "profile.batch_sise=4"], "did you mean 'batch_size'"),
    (["dedup", "{lake}", "--set", "dedup.k=0"], "dedup.k: must be >= 1, got 0"),
    (["kg", "augment", "{lake}", "--levels", "0"], "kg.augment.taxonomy"),
    (["kg", "weights", "{lake}", "--set", "kg.weights.use_embeddings=maybe"],
     "kg.weights.use_embeddings: expected bool, got str 'maybe'"),
    (["run", "{spec}", "--num-cpus", "0"], "runtime.num_cpus: must be >= 1, got 0"),
])
def test_command_line_overrides_meet_the_same_checks(argv, needle, tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    spec = _spec(tmp_path, f"lake: {lake}\n")
    argv = [a.replace("{lake}", str(lake)).replace("{spec}", str(spec)) for a in argv]
    _fails(argv, capsys, needle, created=[lake])


def test_unknown_operator_before_ray(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    _fails(["profile", lake, "--operators", "metadata,sharpness"], capsys,
           "profile.operators[1]: unknown operator 'sharpness'", "known: ", created=[lake])
    spec = _spec(tmp_path, f"""
        lake: {lake}
        profile:
          operators: [metadata, sharpness]
        steps:
          - {{step: profile}}
        """)
    _fails(["run", spec], capsys, f"{spec}:3:", "unknown operator 'sharpness'", created=[lake])


def test_unknown_step_and_option(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    spec = _spec(tmp_path, f"lake: {lake}\nsteps:\n  - {{step: transmogrify}}\n")
    _fails(["run", spec], capsys, f"{spec}:3:", "unknown step 'transmogrify'", "known steps: ingest, profile")
    spec = _spec(tmp_path, f"lake: {lake}\nsteps:\n  - {{step: profile, stage: lowres}}\n")
    _fails(["run", spec], capsys, "steps[0].stage: step 'profile' takes no 'stage' option", created=[lake])


def test_unknown_heads_encoder_and_missing_model_files(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    spec = _spec(tmp_path, f"""
        lake: {lake}
        score:
          encoders: [{{name: clip, backend: open_clip, model: ViT-B-32, pretrained: {tmp_path}/none.safetensors}}]
          heads: [{{name: aesthetic, kind: aesthetic, encoder: clop, random: true}}]
        steps: [{{step: score}}]
        """)
    _fails(["run", spec], capsys, "head 'aesthetic' reads encoder 'clop'", created=[lake])
    spec.write_text(spec.read_text().replace("clop", "clip"))
    _fails(["run", spec], capsys, "none.safetensors", created=[lake])


# --------------------------------------------------------------------------- stages and names


def test_stage_names_cannot_escape_the_lake(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    _fails(["export", lake, "--stage", "../x"], capsys, "steps[0].stage: invalid stage name '../x'", created=[lake])
    _fails(["export", lake, "--stage", "a/b"], capsys, "invalid stage name 'a/b'", created=[lake])
    spec = _spec(tmp_path, f"lake: {lake}\nstages:\n  ..: {{}}\n")
    _fails(["run", spec], capsys, f"{spec}:3:3", "invalid stage name '..'")
    spec = _spec(tmp_path, f"lake: {lake}\nscore:\n  encoders: [{{name: ../clip, random: true}}]\n")
    _fails(["run", spec], capsys, "score.encoders[0].name: invalid encoder name '../clip'")
    _fails(["export", lake, "--stage", "missing"], capsys, "unknown stage 'missing'", created=[lake])


# --------------------------------------------------------------------------- inputs and the lake


def test_missing_source_and_dumps(tmp_path, capsys, no_ray):
    lake = tmp_path / "lake"
    _fails(["ingest", lake, tmp_path / "nowhere"], capsys, "steps[0].source: source not found", created=[lake])
    _fails(["kg", "build", lake, "--xml", tmp_path / "dump.xml"], capsys,
           "kg.build.xml: dump not found", created=[lake])
    _fails(["kg", "augment", lake, "--prompts", tmp_path / "p.txt"], capsys, "kg.augment.prompts: prompt log not found",
           created=[lake])


def test_unknown_uri_column_before_ray(tmp_path, capsys, no_ray):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = tmp_path / "lake"
    (tmp_path / "t.csv").write_text("path,caption\na.jpg,hi\n")
    _fails(["ingest", lake, tmp_path / "t.csv", "--uri-column", "bogus"], capsys,
           "steps[0].uri_column: uri column 'bogus' is not in", "['path', 'caption']", created=[lake])
    pq.write_table(pa.table({"x": ["a.jpg"], "caption": ["hi"]}), tmp_path / "t.parquet")
    _fails(["ingest", lake, tmp_path / "t.parquet"], capsys, "ingest.uri_column:", "has no uri column",
           "--uri-column", created=[lake])
    (tmp_path / "t.jsonl").write_text('{"img": "a.jpg", "caption": "hi"}\n')
    _fails(["ingest", lake, tmp_path / "t.jsonl", "--uri-column", "image"], capsys,
           "uri column 'image' is not in", "['img', 'caption']", created=[lake])


def test_lake_path_is_a_file_or_under_a_file(tmp_path, capsys, no_ray):
    (tmp_path / "imgs").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(["ingest", afile, tmp_path / "imgs"], capsys, f"lake: {afile} is a file, not a directory")
    _fails(["ingest", afile / "lake", tmp_path / "imgs"], capsys, "cannot create", "is a file, not a directory",
           created=[afile / "lake"])
    assert afile.read_text() == "x"


def test_export_out_under_a_file(tmp_path, capsys, no_ray):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(["export", tmp_path / "lake", "--stage", "lowres", "--out", afile / "out"], capsys,
           "steps[0].out: cannot create", created=[tmp_path / "lake"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes to a chmod-ed directory; see the os.access test below")
def test_read_only_lake_directory(tmp_path, capsys, no_ray):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _fails(["profile", ro / "lake"], capsys, "is not writable", created=[ro / "lake"])
        _fails(["profile", ro], capsys, "is not writable")
    finally:
        ro.chmod(0o755)


def test_read_only_lake_directory_as_root_too(tmp_path, capsys, no_ray, monkeypatch):
    """What a read-only mount answers (os.access is false for writes there, even for root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(ro)) and mode & os.W_OK
                        else real(p, mode, **kw))
    _fails(["profile", ro / "lake"], capsys, f"cannot create {ro / 'lake'}", "is not writable", created=[ro / "lake"])
    _fails(["profile", ro], capsys, f"directory {ro} is not writable")


def test_status_never_creates_anything(tmp_path, capsys):
    missing = tmp_path / "missing" / "lake"
    _fails(["status", missing], capsys, f"no lake at {missing}", created=[tmp_path / "missing"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(["status", afile], capsys, "is a file")


def test_search_on_a_missing_lake_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "missing"
    _fails(["search", missing, "--text", "a dog"], capsys, "no lake at", created=[missing])
    _fails(["prune", missing, "--text", "a dog", "--reason", "r", "--apply"], capsys, "no lake at", created=[missing])


def test_unreachable_object_store_lake():
    """An s3:// lake whose endpoint refuses connections: one line, exit 2, no traceback (in a
    child process: the S3 client keeps threads that the test process should not inherit)."""
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "CURATE_REMOTE_TIMEOUT": "60"}
    uri = "s3://bucket/lake?endpoint_override=127.0.0.1:9&scheme=http"
    proc = run([sys.executable, "-m", "curation.cli.main", "status", uri], what="curate status on an unreachable s3 lake",
               cwd=ROOT, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"curate status: error: lake: {uri}: cannot use it") and "Traceback" not in proc.stderr


def test_bad_input_never_imports_ray_or_creates_the_lake(tmp_path):
    """In a fresh process: several bad inputs, each exit 2, and Ray is never even imported."""
    lake = tmp_path / "lake"
    (tmp_path / "job.yaml").write_text(f"lake: {lake}\nprofile: {{batch_size: 0}}\nsteps: [{{step: profile}}]\n")
    code = textwrap.dedent(f"""
        import sys
        from curation.cli.main import main
        codes = [main(a) for a in (["run", {str(tmp_path / 'job.yaml')!r}],
                                   ["profile", {str(lake)!r}, "--max-pixels", "0"],
                                   ["profile", {str(lake)!r}, "--operators", "nope"],
                                   ["ingest", {str(lake)!r}, {str(tmp_path / 'nowhere')!r}],
                                   ["export", {str(lake)!r}, "--stage", "../x"])]
        print(codes, "ray" in sys.modules)
        """)
    proc = run([sys.executable, "-c", code], what="bad inputs in a fresh process", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[2, 2, 2, 2, 2] False"
    assert not lake.exists()


def test_load_spec_errors_are_config_errors_with_a_path(tmp_path):
    spec = _spec(tmp_path, "profile:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(str(spec))
    assert exc.value.path == "profile.batch_size" and str(exc.value).startswith(f"{spec}:2:3: profile.batch_size")
