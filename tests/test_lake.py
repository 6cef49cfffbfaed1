import json

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from curation.storage.lake import Lake, LakeError


def _t(ids):
    return pa.table({"id": ids, "x": list(range(len(ids)))})


def test_append_overwrite_and_versions(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert lake.tables() == []
    c1 = lake.write("pool", _t(["a", "b"]), producer={"step": "t"})
    c2 = lake.write("pool", _t(["c"]))
    assert (c1.version, c2.version) == (1, 2)
    assert lake.versions("pool") == [1, 2]
    assert sorted(lake.read("pool")["id"].to_pylist()) == ["a", "b", "c"]
    assert lake.read("pool", version=1)["id"].to_pylist() == ["a", "b"]
    c3 = lake.write("pool", _t(["z"]), mode="overwrite")
    assert lake.read("pool")["id"].to_pylist() == ["z"] and c3.rows == 1
    assert lake.commit_record("pool", 2).rows == 3 and c2.added_rows == 1


def test_uncommitted_version_is_invisible(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a"]))
    # a crashed writer: files staged for version 2, no commit record
    staged = lake.staging_dir("t", 2)
    import pyarrow.parquet as pq

    pq.write_table(_t(["ghost"]), staged + "/part-0.parquet")
    assert lake.read("t")["id"].to_pylist() == ["a"]
    assert lake.versions("t") == [1]
    # the rerun takes the same version number and commits it
    assert lake.next_version("t") == 2
    lake.commit("t", 2, [staged + "/part-0.parquet"])
    assert sorted(lake.read("t")["id"].to_pylist()) == ["a", "ghost"]


def test_commit_conflicts_and_bad_names(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a"]))
    with pytest.raises(LakeError):
        lake.commit("t", 1, [])
    with pytest.raises(LakeError):
        lake.read("missing")
    with pytest.raises(LakeError):
        lake.table_dir("../escape")
    with pytest.raises(LakeError):
        lake.read("t", version=9)


def test_nested_table_names_and_status(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("manifests/sft", _t(["a", "b"]), producer={"step": "export"})
    lake.write("pool", _t(["a"]))
    status = {s["table"]: s for s in lake.status()}
    assert set(status) == {"manifests/sft", "pool"}
    assert status["manifests/sft"]["rows"] == 2 and status["manifests/sft"]["producer"] == {"step": "export"}
    record = json.loads((tmp_path / "manifests/sft/_commits/v00000001.json").read_text())
    assert record["files"] == ["data/v00000001/part-00000.parquet"]


def test_remove_files_in_append_commit(tmp_path):
    lake = Lake(str(tmp_path))
    c1 = lake.write("t", _t(["a", "b"]))
    old = lake.files("t")[0]
    lake.write("t", _t(["a2", "b"]), remove=[old])
    assert sorted(lake.read("t")["id"].to_pylist()) == ["a2", "b"]
    assert lake.read("t", version=c1.version)["id"].to_pylist() == ["a", "b"]


def test_any_pyarrow_filesystem(tmp_path):
    # a SubTreeFileSystem stands in for an object store: the lake only uses the fs interface
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    lake = Lake("lake", filesystem=fs)
    lake.write("pool", _t(["a"]))
    assert lake.read("pool")["id"].to_pylist() == ["a"]
    assert (tmp_path / "lake/pool/_commits/v00000001.json").exists()


def test_file_uri_root(tmp_path):
    lake = Lake("file://" + str(tmp_path / "l"))
    lake.write("t", _t(["a"]))
    assert Lake(str(tmp_path / "l")).read("t").num_rows == 1


def test_ray_write_and_read(ray_session, tmp_path):
    import ray.data

    lake = Lake(str(tmp_path))
    schema = pa.schema([("id", pa.string()), ("x", pa.int64())])
    c = lake.write_ray("t", ray.data.from_arrow(_t(["a", "b", "c"])), producer={"step": "t"}, schema=schema)
    assert c.rows == 3 and sorted(r["id"] for r in lake.read_ray("t").take_all()) == ["a", "b", "c"]
    # an empty write still commits a readable, typed (empty) snapshot
    empty = ray.data.from_arrow(_t(["a"])).filter(lambda r: False)
    lake.write_ray("e", empty, schema=schema)
    assert lake.read("e").schema == schema and lake.read("e").num_rows == 0
