"""img2dataset output folders: "webdataset" and "files" modes ingest every successful sample with
its caption and the per-shard parquet's columns; failed rows are counted, never ingested."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.demo.sources import write_img2dataset
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.steps.ingest.sources import discover, source_notes
from curation.storage.io import read_bytes
from curation.storage.lake import Lake

KEPT = ("url", "key", "status", "width", "height", "original_width", "original_height", "exif", "sha256",
        "license", "similarity")


def _check_pool(lake, info, folder, mode):
    rows = lake.read("pool").to_pylist()
    success = info["success"]
    assert len(rows) == len(success) and not any(r["error"] for r in rows)
    by_id = {r["id"]: r for r in rows}
    for key, expected in success.items():
        row = by_id[hashlib.sha256(expected["image"]).hexdigest()]  # exactly one row per sample
        shard = key[:5]
        if mode == "webdataset":
            assert row["uri"] == f"{folder}/{shard}.tar#{key}.jpg"
            assert read_bytes(row["uri"], row["byte_offset"], row["byte_size"]) == expected["image"]
        elif mode == "parquet":  # the bytes were copied into the lake's shards
            assert row["uri"].startswith(f"{lake.root}/_shards/laion/") and row["uri"].endswith(f"#{row['id']}.jpg")
            assert read_bytes(row["uri"], row["byte_offset"], row["byte_size"]) == expected["image"]
            assert json.loads(row["extra_json"])["source_table"] == f"{folder}/{shard}.parquet"
        else:
            assert row["uri"] == f"{folder}/{shard}/{key}.jpg"
        assert row["caption"] == expected["caption"] and row["caption_issue"] is None
        extra = json.loads(row["extra_json"])
        for column in KEPT:
            assert extra[column] == expected[column], (column, extra)
    assert not set(info["failed"]) & {json.loads(r["extra_json"])["key"] for r in rows}


def _check_notes(notes, info):
    failed = info["failed"].values()
    assert notes["img2dataset_failed"] == len(info["failed"]) > 0
    assert notes["img2dataset_successes"] == len(info["success"])
    assert notes["img2dataset_rows"] == len(info["success"]) + len(info["failed"])
    by_status = {}
    for r in failed:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert notes["img2dataset_failed_by_status"] == by_status
    kinds = notes["img2dataset_failed_by_error"]
    assert sum(kinds.values()) == len(info["failed"])
    assert kinds["HTTP Error 404: Not Found"] == sum(r["error_message"] == "HTTP Error 404: Not Found" for r in failed)
    assert "cannot identify image file" in kinds  # object addresses do not make kinds of their own


@pytest.mark.parametrize("mode", ["webdataset", "files", "parquet"])
def test_img2dataset_folder_ingests_successes_and_counts_failures(ray_session, tmp_path, mode):
    folder = tmp_path / "laion"
    info = write_img2dataset(folder, 21, fail_every=4, mode=mode, shard_size=8)
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(folder), name="laion", batch_size=4))
    assert s.notes["source_kind"] == {"webdataset": "webdataset", "files": "directory", "parquet": "embedded"}[mode]
    assert s.notes["img2dataset"] == mode and s.notes["img2dataset_shards"] == 3
    assert s.rows_in == s.rows_out == len(info["success"]) == 16 and not s.errors
    _check_notes(s.notes, info)
    _check_pool(lake, info, folder, mode)
    assert "img2dataset_failed: 5" in s.render()
    again = ingest(lake, IngestConfig(source=str(folder), name="laion"))
    assert again.rows_out == 0 and again.notes["existing_ids_updated"] == 0
    assert lake.versions("pool") == [0] and lake.read("pool").num_rows == 16


def test_parquet_columns_are_joined_by_key(ray_session, tmp_path):
    """Columns only in the parquet (not in the tar's .json members) still reach extra_json."""
    folder = tmp_path / "out"
    info = write_img2dataset(folder, 10, fail_every=3, mode="webdataset", shard_size=5, additional_columns=False)
    for shard in ("00000", "00001"):
        path = folder / f"{shard}.parquet"
        t = pq.read_table(path)
        pq.write_table(t.append_column("punsafe", pa.array([int(k) / 100 for k in t["key"].to_pylist()])), path)
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(folder)))
    assert s.rows_out == len(info["success"]) == 7
    for row in lake.read("pool").to_pylist():
        extra = json.loads(row["extra_json"])
        assert extra["punsafe"] == int(extra["key"]) / 100 and extra["url"].startswith("https://")


def test_sidecar_files_never_hide_shards(tmp_path):
    folder = tmp_path / "mixed"
    write_img2dataset(folder, 12, fail_every=5, mode="webdataset", shard_size=6)
    (folder / "README.md").write_text("notes")
    (folder / "other.parquet").write_bytes(b"not a parquet file")  # no shard of its own: ignored
    kind, candidates = discover(str(folder))
    assert kind == "webdataset" and candidates["kind"].to_pylist() == ["tar", "tar"]
    assert candidates["meta_table"].to_pylist() == [str(folder / "00000.parquet"), str(folder / "00001.parquet")]
    assert source_notes(candidates)["img2dataset_failed"] == 2
    # Plain shards with unrelated files beside them (no img2dataset tables) are shards too.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.tar").write_bytes((folder / "00000.tar").read_bytes())
    (plain / "index.json").write_text("{}")
    kind, candidates = discover(str(plain))
    assert kind == "webdataset" and candidates.num_rows == 1 and source_notes(candidates) == {}


def test_unreadable_img2dataset_table_keeps_its_shard(ray_session, tmp_path):
    folder = tmp_path / "out"
    info = write_img2dataset(folder, 8, fail_every=4, mode="webdataset", shard_size=4)
    (folder / "00001.parquet").write_bytes(b"PAR1 truncated")
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(folder)))
    assert s.rows_out == len(info["success"]) == 6 and not s.errors
    assert len(s.notes["img2dataset_unreadable_tables"]) == 1 and s.notes["img2dataset_failed"] == 1
    captions = {r["caption"] for r in lake.read("pool").to_pylist()}
    assert captions == {r["caption"] for r in info["success"].values()}


def test_parquet_output_mode_tables_are_embedded_image_tables(tmp_path):
    folder = tmp_path / "pq"
    write_img2dataset(folder, 12, fail_every=4, mode="parquet", shard_size=6)
    kind, candidates = discover(str(folder))
    assert kind == "embedded" and candidates["kind"].to_pylist() == ["embedded", "embedded"]
    notes = source_notes(candidates)
    assert notes["img2dataset"] == "parquet" and notes["img2dataset_failed"] == 3
    assert notes["embedded_tables"] == 2 and notes["embedded_image_column"] == "jpg"


def test_single_img2dataset_shard_joins_its_parquet(tmp_path):
    folder = tmp_path / "out"
    write_img2dataset(folder, 8, fail_every=4, mode="webdataset", shard_size=4)
    kind, candidates = discover(str(folder / "00001.tar"))
    assert kind == "webdataset" and candidates["meta_table"].to_pylist() == [str(folder / "00001.parquet")]
    assert source_notes(candidates)["img2dataset_failed"] == 1
