"""Sources on an object store: patterns, tar shards with img2dataset tables, image globs with
sidecars and embedded-image tables read from `s3://` URIs on a real (local, moto) S3 server,
by the driver's listing and by the Ray workers' reads."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.cli.main import main as curate
from curation.demo import write_jpegs
from curation.demo.sources import write_img2dataset
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.storage.io import read_bytes
from curation.storage.lake import Lake


def _upload(local: Path, uri: str) -> None:
    dest, path = pafs.FileSystem.from_uri(uri)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest)


def test_patterns_shards_globs_and_tables_on_s3(ray_session, s3_server, tmp_path):
    bucket = s3_server("sources")
    # img2dataset output: three shards, two ingested by a brace range.
    info = write_img2dataset(tmp_path / "laion", 12, fail_every=4, mode="webdataset", shard_size=4)
    _upload(tmp_path / "laion", f"{bucket}/laion")
    # Images with caption sidecars in nested folders, taken by a recursive glob.
    photos = write_jpegs(tmp_path / "photos" / "a" / "b", 3, megapixels=(0.01, 0.02))
    for i, p in enumerate(photos):
        p.with_suffix(".txt").write_text(f"photo {i}")
    _upload(tmp_path / "photos", f"{bucket}/photos")
    # A Parquet table with the images inside.
    blobs = [p.read_bytes() for p in write_jpegs(tmp_path / "inline", 2, megapixels=(0.01, 0.02), seed=5)]
    hf = tmp_path / "hf"
    hf.mkdir()
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary()), "text": ["inline 0", "inline 1"]}),
                   hf / "train-00000-of-00001.parquet")
    _upload(hf, f"{bucket}/hf/data")

    lake = Lake(str(tmp_path / "lake"))
    sources = [f"{bucket}/laion/{{00000..00001}}.tar", f"{bucket}/photos/**/*.jpg", f"{bucket}/hf/data"]
    s = ingest(lake, IngestConfig(source=sources))
    shard_successes = {k: v for k, v in info["success"].items() if k[:5] in ("00000", "00001")}
    assert s.rows_out == len(shard_successes) + 3 + 2 and not s.errors
    assert s.notes["sources_ingested"] == 4 and s.notes["img2dataset_shards"] == 2
    rows = lake.read("pool").to_pylist()
    by_id = {r["id"]: r for r in rows}
    for key, expected in shard_successes.items():
        row = by_id[hashlib.sha256(expected["image"]).hexdigest()]
        assert row["uri"] == f"{bucket}/laion/{key[:5]}.tar#{key}.jpg" and row["caption"] == expected["caption"]
        assert json.loads(row["extra_json"])["url"] == expected["url"]
        assert read_bytes(row["uri"], row["byte_offset"], row["byte_size"]) == expected["image"]
    for i, p in enumerate(photos):
        row = by_id[hashlib.sha256(p.read_bytes()).hexdigest()]
        assert row["uri"] == f"{bucket}/photos/a/b/{p.name}" and row["caption"] == f"photo {i}"
    for i, b in enumerate(blobs):
        row = by_id[hashlib.sha256(b).hexdigest()]
        assert row["caption"] == f"inline {i}" and row["uri"].startswith(f"{lake.root}/_shards/")
        assert json.loads(row["extra_json"])["source_table"] == f"{bucket}/hf/data/train-00000-of-00001.parquet"
    again = ingest(lake, IngestConfig(source=sources))
    assert again.rows_out == 0 and again.notes["existing_ids_updated"] == 0


def test_missing_object_store_source_fails_before_work(s3_server, tmp_path, capsys):
    bucket = s3_server("empty-bucket")
    lake = tmp_path / "lake"
    assert curate(["ingest", str(lake), f"{bucket}/shards/{{00000..00003}}.tar"]) == 2
    err = capsys.readouterr().err
    assert "matches nothing" in err or "not found" in err
    assert not lake.exists()


def test_lake_on_s3_stores_embedded_images_and_profiles_them(ray_session, s3_server, tmp_path):
    """The lake itself on S3 (Delta commits by conditional PUT): embedded images go to its
    `_shards` on the store, and the profile step reads them back from there."""
    from curation.steps.run import run_step

    lake_uri = f"{s3_server('lakebucket')}/lake"
    blobs = [p.read_bytes() for p in write_jpegs(tmp_path / "inline", 3, megapixels=(0.01, 0.02), seed=9)]
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary()), "caption": ["a", "b", "c"]}), table)
    s = run_step(lake_uri, "ingest", source=str(table))
    assert s.rows_out == 3 and not s.errors
    lake = Lake(lake_uri)
    rows = lake.read("pool").to_pylist()
    assert all(r["uri"].startswith("s3://lakebucket/lake/_shards/") for r in rows)
    assert {hashlib.sha256(read_bytes(r["uri"], r["byte_offset"], r["byte_size"])).hexdigest() for r in rows} == \
        {hashlib.sha256(b).hexdigest() for b in blobs}
    p = run_step(lake_uri, "profile", operators=["metadata"])
    assert p.rows_out == 3 and not p.errors
    assert run_step(lake_uri, "ingest", source=str(table)).rows_out == 0 and lake.versions("pool") == [0]
