import hashlib
import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.steps.ingest.captions import normalize
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.steps.ingest.sources import SourceError, discover
from curation.storage.lake import Lake
from curation.storage.schemas import caption_field_map


def _jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _pool(lake):
    return {r["id"]: r for r in lake.read("pool").to_pylist()}


def test_directory_with_sidecars_and_odd_names(ray_session, tmp_path):
    src = tmp_path / "imgs"
    (src / "sub dir").mkdir(parents=True)
    a, b = _jpeg(1), _jpeg(2)
    (src / "a.jpg").write_bytes(a)
    (src / "a.txt").write_text("a red fox")
    (src / "sub dir" / "café 東京.jpg").write_bytes(b)
    (src / "sub dir" / "café 東京.json").write_text(json.dumps(
        {"caption": "a cat", "caption_zh": "一只猫", "tags": ["cat", "pet"], "license": "cc-by"}))
    (src / "copy.jpg").write_bytes(a)  # identical bytes under another name
    (src / "bad.txt").write_bytes(b"\xff\xfe orphan sidecar")  # no image: ignored
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(src), name="web"))
    assert s.rows_in == 3 and s.rows_out == 2
    pool = _pool(lake)
    ida, idb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    assert set(pool) == {ida, idb}
    assert pool[ida]["caption"] == "a red fox"  # the row with a caption represents the id
    assert sorted(pool[ida]["uris"]) == sorted([str(src / "a.jpg"), str(src / "copy.jpg")])
    assert pool[idb]["caption"] == "a cat"
    assert caption_field_map(pool[idb]["caption_fields"])["caption_zh"] == "一只猫"
    assert pool[idb]["tags"] == ["cat", "pet"]
    assert json.loads(pool[idb]["extra_json"]) == {"license": "cc-by"}
    assert pool[idb]["uri"].endswith("café 東京.jpg") and pool[idb]["sources"] == ["web"]


def test_reingest_adds_nothing_and_new_source_extends_uris(ray_session, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(3))
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(src), name="s1"))
    again = ingest(lake, IngestConfig(source=str(src), name="s1"))
    assert again.rows_out == 0 and lake.versions("pool") == [0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "same.jpg").write_bytes(_jpeg(3))
    (other / "new.jpg").write_bytes(_jpeg(4))
    s = ingest(lake, IngestConfig(source=str(other), name="s2"))
    assert s.rows_out == 1 and s.notes["existing_ids_updated"] == 1
    pool = _pool(lake)
    assert len(pool) == 2 and lake.read("pool").num_rows == 2
    row = pool[hashlib.sha256(_jpeg(3)).hexdigest()]
    assert row["sources"] == ["s1", "s2"] and len(row["uris"]) == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_table_source_keeps_extra_columns_missing_and_duplicates(ray_session, tmp_path, fmt):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(_jpeg(5))
    (imgs / "b.jpg").write_bytes(_jpeg(6))
    table = pa.table({"url": ["imgs/a.jpg", "imgs/b.jpg", "imgs/b.jpg", "imgs/missing.jpg"],
                      "caption": ["one", "two", "two", "gone"], "caption_zh": ["一", "二", "二", "无"],
                      "license": ["cc0", "cc-by", "cc-by", "x"]})
    path = tmp_path / f"src.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in table.to_pylist()))
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(path)))
    assert s.rows_in == 4 and s.rows_out == 3  # duplicate row collapsed; missing file kept
    rows = lake.read("pool").to_pylist()
    missing = [r for r in rows if r["error"]]
    assert len(missing) == 1 and "file not found" in missing[0]["error"] and missing[0]["caption"] == "gone"
    ok = [r for r in rows if not r["error"]]
    assert {json.loads(r["extra_json"])["license"] for r in ok} == {"cc0", "cc-by"}
    assert all(len(r["uris"]) == 1 for r in ok)
    assert s.errors == {"ingest: file not found": 1}
    # The missing file appears: the rerun reads it, and its error row goes.
    (imgs / "missing.jpg").write_bytes(_jpeg(7))
    again = ingest(lake, IngestConfig(source=str(path)))
    assert again.rows_out == 1 and again.notes["error_rows_superseded"] == 1
    rows = lake.read("pool").to_pylist()
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    assert next(r for r in rows if r["id"] == hashlib.sha256(_jpeg(7)).hexdigest())["caption"] == "gone"


def test_webdataset_shards(ray_session, tmp_path):
    shard = tmp_path / "shards" / "000000.tar"
    shard.parent.mkdir()
    blobs = {}
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            key = f"{i:09d}"
            blobs[key] = _jpeg(10 + i)
            for name, data in ((f"{key}.jpg", blobs[key]), (f"{key}.txt", f"caption {i}".encode()),
                               (f"{key}.json", json.dumps({"tags": ["t"], "w": 64}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(shard.parent)))
    assert s.notes["source_kind"] == "webdataset" and s.rows_out == 3
    from curation.storage.io import read_bytes

    for r in lake.read("pool").to_pylist():
        key = r["uri"].rsplit("#", 1)[1].split(".")[0]
        assert read_bytes(r["uri"], r["byte_offset"], r["byte_size"]) == blobs[key]
        assert r["caption"] == f"caption {int(key)}" and r["tags"] == ["t"]


def test_caption_normalisation():
    assert normalize(b"\xff\xfe bad \xc3\x28") [1] == "invalid_utf8"
    assert normalize("   ") == ("", "empty")
    text, issue = normalize("x" * 20000)
    assert issue == "truncated" and len(text) == 8192
    assert normalize(None) == (None, None)
    assert normalize("a\x00b ") == ("ab", None)


def test_bad_sources(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        discover(str(tmp_path / "nope"))
    (tmp_path / "t.csv").write_text("caption\nhello\n")
    with pytest.raises(SourceError, match="no uri column"):
        discover(str(tmp_path / "t.csv"))
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(SourceError, match="unknown source kind"):
        discover(str(tmp_path / "x.bin"))


def test_imagefolder_metadata_gives_captions(ray_session, tmp_path):
    """A Hugging Face ImageFolder: metadata.csv / metadata.jsonl name images by `file_name`
    (relative to the metadata file); their columns become captions, tags and extra."""
    root = tmp_path / "imagefolder"
    (root / "train" / "sub").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "train" / "a.jpg").write_bytes(_jpeg(31))
    (root / "train" / "sub" / "b.jpg").write_bytes(_jpeg(32))
    (root / "train" / "c.jpg").write_bytes(_jpeg(33))
    (root / "train" / "c.txt").write_text("from the sidecar")
    (root / "test" / "d.jpg").write_bytes(_jpeg(34))
    (root / "train" / "metadata.csv").write_text(
        "file_name,text,tags,license\na.jpg,a red fox,\"fox,animal\",cc0\nsub/b.jpg,a blue door,,cc-by\n"
        "missing.jpg,no such image,,cc0\n")
    (root / "test" / "metadata.jsonl").write_text(json.dumps({"file_name": "d.jpg", "caption": "a green hill"}) + "\n")
    kind, candidates = discover(str(root))
    assert kind == "directory" and candidates.num_rows == 4
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(root)))
    assert s.rows_out == 4 and not s.errors
    assert s.notes["imagefolder_rows"] == 3 and s.notes["imagefolder_rows_without_image"] == 1
    pool = _pool(lake)
    fox = pool[hashlib.sha256(_jpeg(31)).hexdigest()]
    assert fox["caption"] == "a red fox" and fox["tags"] == ["fox", "animal"]
    assert json.loads(fox["extra_json"])["license"] == "cc0"
    assert pool[hashlib.sha256(_jpeg(32)).hexdigest()]["caption"] == "a blue door"
    assert pool[hashlib.sha256(_jpeg(33)).hexdigest()]["caption"] == "from the sidecar"
    assert pool[hashlib.sha256(_jpeg(34)).hexdigest()]["caption"] == "a green hill"
