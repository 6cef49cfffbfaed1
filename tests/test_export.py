import json
import math
import os

import pyarrow.parquet as pq
import pyarrow as pa
import pytest

from curation.steps.export.export import NEAR_DUPLICATE, NOT_PROFILED, StageConfig, evaluate, export
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.storage.lake import Lake
from curation.storage.schemas import caption_field_map
from curation.config.spec import ConfigError


def _by_rel(table, root):
    return {os.path.relpath(r["uri"], root): r for r in table.to_pylist()}


def test_manifest_counts_and_columns(demo_lake):
    lake = Lake(demo_lake["lake"])
    out = demo_lake["workdir"] / "export" / "lowres"
    info = json.loads((out / "_manifest.json").read_text())
    manifest = pq.read_table(out / "manifest.parquet")
    assert info["output_count"] == manifest.num_rows > 0
    assert info["input_count"] == lake.read("pool").num_rows
    assert info["input_count"] - sum(info["removed_per_rule"].values()) == info["output_count"]
    assert info["exact_duplicates_collapsed"] == 3
    assert info["producers"]["profiles"]["operators"].startswith("metadata@")
    assert "aesthetic@random-0:aesthetic<-clip" in info["producers"]["scores"]["models"]
    assert info["spec"]["rules"]["min_side"] == 256
    # the same manifest is registered in the lake
    assert lake.read("manifests/lowres").num_rows == manifest.num_rows
    for col in ("id", "uri", "caption", "width", "height", "bucket_height", "bucket_width", "seq_len",
                "phash", "laplacian_var", "jpeg_bpp", "aesthetic", "nsfw", "aigc", "clip_alignment"):
        assert col in manifest.column_names, col
    for r in manifest.to_pylist():
        assert r["seq_len"] == (r["bucket_height"] // 16) * (r["bucket_width"] // 16)
        assert r["bucket_height"] % 32 == 0 and r["bucket_width"] % 32 == 0
        assert min(r["width"], r["height"]) >= 256
        # the bucket's aspect is the image's up to the bucket grid (32 px steps at 256²)
        assert abs(math.log(r["bucket_width"] / r["bucket_height"]) - math.log(r["width"] / r["height"])) < 0.2


def test_planted_defects_and_duplicates_are_removed(demo_lake, demo_corpus):
    spec = demo_lake["spec"]
    ev = evaluate(Lake(demo_lake["lake"]), spec.stage("lowres"))
    rows = _by_rel(ev.table, demo_corpus.root)
    expected = {"frame": "min_border_std", "blur": "min_laplacian_var", "low_res": "min_side",
                "extreme_aspect": "min_side", "flat": None, "blocky": "max_blockiness", "noise": "max_noise_sigma"}
    for category, rule in expected.items():
        for rel in demo_corpus.planted.get(category, []):
            if rel in rows:
                assert not rows[rel]["keep"], (category, rel, rows[rel]["reason"])
                if rule:
                    assert rows[rel]["reason"] in (rule, NEAR_DUPLICATE), (category, rel, rows[rel]["reason"])
    for kind, rel in demo_corpus.bad_files.items():
        assert rows[rel]["reason"] == "error", kind
    for group in demo_corpus.near_duplicate_groups:
        kept = [rel for rel in group if rel in rows and rows[rel]["keep"]]
        assert len(kept) <= 1, group
        reasons = {rows[rel]["reason"] for rel in group if rel in rows and not rows[rel]["keep"]}
        assert reasons, group
    # the group keeper is the largest image (stage keep_by: pixels desc first)
    for group in demo_corpus.near_duplicate_groups:
        members = [rows[rel] for rel in group if rel in rows and rows[rel]["reason"] in (None, NEAR_DUPLICATE)]
        keepers = [m for m in members if m["keep"]]
        if keepers:
            assert keepers[0]["width"] * keepers[0]["height"] == max(m["width"] * m["height"] for m in members)


def test_export_before_profile_and_unknown_stage(ray_session, demo_lake, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    src = tmp_path / "imgs"
    src.mkdir()
    from curation.demo import photo_like, save_image
    import numpy as np

    save_image(photo_like(np.random.default_rng(0), 300, 300), src / "a.jpg")
    ingest(lake, IngestConfig(source=str(src)))
    s = export(lake, "x", StageConfig())
    assert s.rows_out == 0 and s.notes["removed_per_rule"] == {"error": 1}
    assert s.notes["sample"].startswith("none: every item was filtered")
    assert evaluate(lake, StageConfig()).table["error"].to_pylist() == [NOT_PROFILED]
    with pytest.raises(ConfigError, match="unknown stage"):
        demo_lake["spec"].stage("nope")


def test_demo_pool_keeps_bad_captions_and_every_file(demo_lake, demo_corpus):
    pool = Lake(demo_lake["lake"]).read("pool")
    pool = pool.filter(pa.array(["demo" in s for s in pool["sources"].to_pylist()]))  # the corpus, not pair images
    uris = {os.path.relpath(u, demo_corpus.root): r for r in pool.to_pylist() for u in r["uris"]}
    # every image-named file is in the pool: byte-identical copies share a row, nothing is dropped
    assert {os.path.relpath(str(f), demo_corpus.root) for f in demo_corpus.files} == set(uris)
    issues = {"caption_empty": "empty", "caption_invalid_utf8": "invalid_utf8", "caption_long": "truncated"}
    for category, issue in issues.items():
        for rel in demo_corpus.planted[category]:
            assert uris[rel]["caption_issue"] == issue, (category, uris[rel]["caption_issue"])
    assert "\ufffd" in uris[demo_corpus.planted["caption_invalid_utf8"][0]]["caption"]
    for rel in demo_corpus.planted["caption_missing"]:
        if rel not in sum(demo_corpus.exact_duplicates, []):
            assert uris[rel]["caption"] is None and uris[rel]["caption_issue"] == "missing"
    zh = [uris[rel] for rel in demo_corpus.planted["caption_json"]]
    assert any("caption_zh" in caption_field_map(r["caption_fields"]) for r in zh) and any(r["tags"] for r in zh)


def test_original_size_from_the_source_reaches_the_manifest(ray_session, tmp_path):
    from curation.demo import write_jpegs
    from curation.steps.profiling.profile import ProfileConfig, profile

    files = write_jpegs(tmp_path / "imgs", 2, megapixels=(0.1, 0.2), seed=11)
    # a source that resized its images records what they measured before (as img2dataset does)
    (tmp_path / "t.csv").write_text(f"path,caption,original_width,original_height\n"
                                    f"{files[0]},a,4000,3000\n{files[1]},b,,\n")
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(tmp_path / "t.csv")))
    profile(lake, ProfileConfig())
    export(lake, "s", StageConfig(), out=str(tmp_path / "out"))
    rows = {r["uri"]: r for r in pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()}
    first, second = rows[str(files[0])], rows[str(files[1])]
    assert (first["original_width"], first["original_height"]) == (4000, 3000)
    assert (second["original_width"], second["original_height"]) == (second["width"], second["height"])


def test_an_unchanged_export_is_skipped_only_when_it_is_current(ray_session, tmp_path):
    """skip_unchanged writes nothing while the spec, the draw parameters, every table the
    export reads and its files are as the last export left them; any of them moving exports."""
    from curation.demo import write_jpegs
    from curation.steps.profiling.profile import ProfileConfig, profile

    files = write_jpegs(tmp_path / "imgs", 4, megapixels=(0.1, 0.2), seed=3)
    (tmp_path / "t.csv").write_text("path,caption\n" + "".join(f"{f},a photo {i}\n" for i, f in enumerate(files)))
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(tmp_path / "t.csv")))
    profile(lake, ProfileConfig())
    stage, out = StageConfig(), str(tmp_path / "out")

    def versions():
        return tuple(lake.version(t) for t in ("manifests/s", "samples/s", "batches/s"))

    first = export(lake, "s", stage, out=out, skip_unchanged=True)
    assert "skipped" not in first.notes and first.rows_out == 4
    before = versions()
    again = export(lake, "s", stage, out=out, skip_unchanged=True)
    assert again.notes["skipped"].startswith("unchanged: manifest v") and again.rows_out == 0
    assert versions() == before
    assert "skipped" not in export(lake, "s", stage, out=out).notes  # without the option: always
    before = versions()
    assert "skipped" not in export(lake, "s", stage, out=out, epoch=1, skip_unchanged=True).notes  # other draw
    assert "skipped" in export(lake, "s", stage, out=out, epoch=1, skip_unchanged=True).notes
    strict = StageConfig(rules=stage.rules.__class__(min_side=10_000))
    assert export(lake, "s", strict, out=out, skip_unchanged=True).rows_out == 0  # other spec: exported
    assert "skipped" in export(lake, "s", strict, out=out, skip_unchanged=True).notes
    export(lake, "s", stage, out=out, skip_unchanged=True)
    assert "skipped" in export(lake, "s", stage, out=out, skip_unchanged=True).notes
    os.remove(os.path.join(out, "manifest.parquet"))  # its files gone: exported again
    assert "skipped" not in export(lake, "s", stage, out=out, skip_unchanged=True).notes
    more = write_jpegs(tmp_path / "imgs2", 1, megapixels=(0.1, 0.2), seed=4)
    (tmp_path / "u.csv").write_text(f"path,caption\n{more[0]},one more\n")
    ingest(lake, IngestConfig(source=str(tmp_path / "u.csv")))  # the pool moved
    redone = export(lake, "s", stage, out=out, skip_unchanged=True)
    assert "skipped" not in redone.notes and redone.rows_in == 5
    assert versions() != before
