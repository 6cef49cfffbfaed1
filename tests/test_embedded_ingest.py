"""Images embedded in tables: Hugging Face `datasets` layouts (saved folders, Parquet shards with
an Image struct), binary columns, Arrow IPC files. The bytes land in the lake's shards once;
every table row is one pool row (rows without an image are error rows); re-runs add nothing."""

import hashlib
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli.main import main as curate
from curation.steps.ingest import embedded
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.steps.ingest.sources import SourceError, discover
from curation.storage.io import read_bytes
from curation.storage.lake import Lake
from curation.storage.shards import ShardWriter, shard_index


def _jpeg(i: int, size=(24, 16)) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), i, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pool(lake: Lake) -> dict[str, dict]:
    return {r["id"]: r for r in lake.read("pool").to_pylist()}


def _shard_files(lake: Lake) -> list[str]:
    root = os.path.join(lake.root, "_shards")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def test_saved_hf_dataset_folder(ray_session, tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [_jpeg(i) for i in range(6)]
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": f"img{i}.jpg"} for i, b in enumerate(images)],
                                     "text": [f"caption {i}" for i in range(6)],
                                     "tags": [["a", "b"]] * 6, "score": [i / 10 for i in range(6)]})
    ds = ds.cast_column("image", datasets.Image())
    folder = tmp_path / "saved"
    ds.save_to_disk(str(folder), max_shard_size="2KB")  # several data-*.arrow files
    data_files = sorted(folder.glob("data-*.arrow"))
    assert len(data_files) > 1
    (folder / "cache-0123.arrow").write_bytes(data_files[0].read_bytes())  # a map cache: not data
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(folder), name="hf"))
    assert s.notes["source_kind"] == "embedded" and s.notes["embedded_image_column"] == "image"
    assert s.rows_in == s.rows_out == 6 and not s.errors  # the map cache beside the data is not read
    pool = _pool(lake)
    for i, data in enumerate(images):
        row = pool[_sha(data)]
        assert row["caption"] == f"caption {i}" and row["tags"] == ["a", "b"] and row["error"] is None
        assert row["uri"].startswith(f"{lake.root}/_shards/hf/") and row["byte_size"] == len(data)
        assert read_bytes(row["uri"], row["byte_offset"], row["byte_size"]) == data
        assert read_bytes(row["uri"]) == data  # by scanning the shard, too
        extra = json.loads(row["extra_json"])
        assert extra["score"] == i / 10 and extra["image_path"] == f"img{i}.jpg"
        assert extra["source_table"].startswith(str(folder)) and extra["source_row"] >= 0
    shards = _shard_files(lake)
    again = ingest(lake, IngestConfig(source=str(folder), name="hf"))
    assert again.rows_out == 0 and again.notes["existing_ids_updated"] == 0
    assert _shard_files(lake) == shards and lake.versions("pool") == [0]


def test_saved_dataset_dict_records_split(ray_session, tmp_path):
    datasets = pytest.importorskip("datasets")
    split = {name: datasets.Dataset.from_dict({"image": [{"bytes": _jpeg(100 + 10 * k + i), "path": None}
                                                         for i in range(3)],
                                               "caption": [f"{name} {i}" for i in range(3)]})
             .cast_column("image", datasets.Image()) for k, name in enumerate(("train", "test"))}
    datasets.DatasetDict(split).save_to_disk(str(tmp_path / "dd"))
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(tmp_path / "dd")))
    assert s.rows_out == 6 and s.notes["embedded_tables"] == 2
    for row in _pool(lake).values():
        assert json.loads(row["extra_json"])["split"] == row["caption"].split()[0]


def test_hf_parquet_shards_struct_column(ray_session, tmp_path):
    """A Hub snapshot: data/*.parquet with an Image struct (the features in the schema
    metadata), a metadata table without images beside it, rows with a path and no bytes."""
    datasets = pytest.importorskip("datasets")
    (tmp_path / "files").mkdir()
    on_disk = _jpeg(7)
    (tmp_path / "files" / "seven.jpg").write_bytes(on_disk)
    images = [_jpeg(i) for i in range(5)]
    rows = [{"bytes": b, "path": None} for b in images] + [
        {"bytes": None, "path": "../files/seven.jpg"},   # relative to the table's folder
        {"bytes": None, "path": "missing.jpg"},          # cannot be read: an error row
        None]                                            # no image at all: an error row
    # The schema `datasets` writes (its features in the metadata); written by pyarrow because
    # `datasets` itself refuses paths that do not exist.
    schema = datasets.Features({"image": datasets.Image(), "prompt": datasets.Value("string")}).arrow_schema
    assert b"huggingface" in schema.metadata
    table = pa.Table.from_pylist([{"image": r, "prompt": f"p{i}"} for i, r in enumerate(rows)], schema=schema)
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(table.slice(0, 4), data / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(4), data / "train-00001-of-00002.parquet")
    pq.write_table(pa.table({"license": ["cc-by"], "n": [8]}), data / "metadata.parquet")
    kind, candidates = discover(str(data))
    assert kind == "embedded" and candidates.num_rows == 2
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(data), name="hub"))
    assert s.rows_in == 8 and s.rows_out == 8
    pool = _pool(lake)
    for i, b in enumerate(images):
        assert pool[_sha(b)]["caption"] == f"p{i}" and pool[_sha(b)]["error"] is None
    seven = pool[_sha(on_disk)]
    assert seven["uri"] == str(tmp_path / "files" / "seven.jpg") and seven["byte_offset"] is None  # not copied
    errors = sorted(r["error"] for r in pool.values() if r["error"])
    assert len(errors) == 2
    assert "row 2 of" in errors[0] and "path cannot be read" in errors[0] and "missing.jpg" in errors[0]
    assert "row 3 of" in errors[1] and "has no image (column 'image' is empty)" in errors[1]
    assert sum(s.errors.values()) == 2


def test_binary_column_chosen_by_option_and_pieces(ray_session, tmp_path, monkeypatch):
    """Two binary columns: the option names the image one; a table of several row groups is
    cut into pieces (one shard each) and every row keeps its row number."""
    monkeypatch.setattr(embedded, "PIECE_ROWS", 4)
    n = 11
    full = [_jpeg(200 + i, size=(40, 30)) for i in range(n)]
    thumbs = [_png(i) for i in range(n)]
    table = pa.table({"thumb": pa.array(thumbs, pa.binary()), "full": pa.array(full, pa.large_binary()),
                      "alt": [f"alt text {i}" for i in range(n)]})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path, row_group_size=3)
    # Without the option the table is ambiguous (two binary columns, neither a usual name).
    with pytest.raises(SourceError, match="no uri column"):
        discover(str(path))
    kind, candidates = discover(str(path), image_column="full")
    assert kind == "embedded" and candidates.num_rows == 4  # row groups of 3 -> pieces of <= 4 rows: 3+3+3+2
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(path), image_column="full", batch_size=1))
    assert s.rows_out == n and not s.errors
    pool = _pool(lake)
    for i, b in enumerate(full):
        row = pool[_sha(b)]
        assert row["caption"] == f"alt text {i}" and json.loads(row["extra_json"])["source_row"] == i
        assert row["uri"].endswith(".jpg") and "thumb" not in json.loads(row["extra_json"])
    assert len(_shard_files(lake)) == 4


def test_arrow_ipc_file_and_duplicates(ray_session, tmp_path):
    a, b = _jpeg(1), _jpeg(2)
    table = pa.table({"image": [a, b, a], "caption": ["one", "two", "one again"]})
    feather.write_feather(table, tmp_path / "t.feather", compression="uncompressed")
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(tmp_path / "t.feather")))
    assert s.rows_in == 3 and s.rows_out == 2 and s.notes["unique_ids"] == 2
    pool = _pool(lake)
    assert pool[_sha(a)]["caption"] == "one" and len(pool[_sha(a)]["uris"]) == 1  # stored once
    members = shard_index(pool[_sha(a)]["uri"].split("#")[0])
    assert sorted(members) == sorted([f"{_sha(a)}.jpg", f"{_sha(b)}.jpg"])


def test_unreadable_table_is_an_error_row_not_a_crash(ray_session, tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [_jpeg(1), _jpeg(2)], "caption": ["x", "y"]}), path)
    kind, candidates = discover(str(path))
    path.write_bytes(path.read_bytes()[:40])  # truncated after discovery
    from curation.steps.ingest.hashing import hash_batch

    rows = hash_batch(candidates, "src", root=str(tmp_path / "lake" / "_shards"))
    assert rows.num_rows == 1 and "cannot read embedded images" in rows["error"][0].as_py()


def test_changed_table_gets_new_shards(ray_session, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [_jpeg(1)], "caption": ["x"]}), path)
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(path)))
    pq.write_table(pa.table({"image": [_jpeg(1), _jpeg(3)], "caption": ["x", "z"]}), path)
    os.utime(path, ns=(1, 1))  # a different modification time, as any rewrite has
    s = ingest(lake, IngestConfig(source=str(path)))
    assert s.rows_out == 1 and lake.read("pool").num_rows == 2
    assert len(_shard_files(lake)) == 2
    for row in _pool(lake).values():
        assert read_bytes(row["uri"], row["byte_offset"], row["byte_size"]) == read_bytes(row["uri"])


def test_shard_writer_publishes_only_whole_shards(tmp_path):
    final = tmp_path / "s" / "x.tar"
    with pytest.raises(RuntimeError):
        with ShardWriter(str(final)) as w:
            w.add("a.jpg", b"abc")
            raise RuntimeError("killed midway")
    assert not final.exists() and os.listdir(tmp_path / "s") == []
    with ShardWriter(str(final)) as w:
        m = w.add("a.jpg", b"abc")
        assert w.add("a.jpg", b"other") == m  # a name is stored once
    assert shard_index(str(final)) == {"a.jpg": m} and read_bytes(m.uri, m.byte_offset, m.byte_size) == b"abc"
    assert shard_index(str(tmp_path / "none.tar")) is None


def test_image_column_checked_before_work(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [_jpeg(1)], "caption": ["x"]}), path)
    lake = tmp_path / "lake"
    assert curate(["ingest", str(lake), str(path), "--image-column", "nope"]) == 2
    err = capsys.readouterr().err
    assert "steps[0].image_column" in err and "'nope' is not in the table" in err and not lake.exists()
    assert curate(["ingest", str(lake), str(path), "--image-column", "caption"]) == 2
    assert "holds string, not image bytes" in capsys.readouterr().err and not lake.exists()


def test_directory_with_image_column_in_no_table(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    pq.write_table(pa.table({"image": [_jpeg(1)]}), folder / "a.parquet")
    with pytest.raises(SourceError, match="image column 'pixels' is in none of its tables"):
        discover(str(folder), image_column="pixels")


def test_vacuum_removes_orphan_shards_only(ray_session, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [_jpeg(1), _jpeg(2)], "caption": ["x", "y"]}), path)
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(path), name="src"))
    (used,) = _shard_files(lake)
    folder = os.path.dirname(used)
    old_orphan, tmp_left, young = (os.path.join(folder, n) for n in ("dead.tar", "x.tar.tmp-1234", "new.tar"))
    for f in (old_orphan, tmp_left, young):
        with open(f, "wb") as out:
            out.write(b"killed run")
    for f in (used, old_orphan, tmp_left):
        os.utime(f, (1, 1))  # written long ago
    dry = lake.vacuum(1, dry_run=True)
    assert dry["_shards"] == ["src/dead.tar", "src/x.tar.tmp-1234"] and os.path.exists(old_orphan)
    lake.vacuum(1)
    assert _shard_files(lake) == sorted([used, young])
    assert all(read_bytes(r["uri"], r["byte_offset"], r["byte_size"]) for r in lake.read("pool").to_pylist())
