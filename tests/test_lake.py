import json
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.storage.lake import Lake, LakeConflict, LakeError
from curation.storage.migrate import migrate


def _t(ids, x=None):
    return pa.table({"id": ids, "x": x if x is not None else list(range(len(ids)))})


def test_append_overwrite_versions_and_time_travel(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert lake.tables() == []
    c1 = lake.write("items", _t(["a", "b"]), producer={"step": "t"})
    c2 = lake.write("items", _t(["c"]))
    assert (c1.version, c2.version) == (0, 1)
    assert lake.versions("items") == [0, 1]
    assert sorted(lake.read("items")["id"].to_pylist()) == ["a", "b", "c"]
    assert lake.read("items", version=0)["id"].to_pylist() == ["a", "b"]
    c3 = lake.write("items", _t(["z"]), mode="overwrite")
    assert lake.read("items")["id"].to_pylist() == ["z"] and c3.rows == 1 and c3.mode == "overwrite"
    assert lake.commit_record("items", 1).rows == 3 and c2.added_rows == 1
    history = lake.history("items")
    assert [h.version for h in history] == [2, 1, 0] and history[-1].producer == {"step": "t"}


def test_keyed_append_is_idempotent(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]), key="id")
    c = lake.write("t", _t(["b", "c", "c"], [9, 9, 9]), key="id")
    rows = lake.read("t").sort_by("id")
    assert rows["id"].to_pylist() == ["a", "b", "c"] and rows["x"].to_pylist() == [0, 1, 9]
    assert c.added_rows == 1
    again = lake.write("t", _t(["a", "c"]), key="id")  # nothing new: no version written
    assert again.version == c.version and lake.versions("t") == [0, 1]


def test_rows_added_since_a_version(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]))
    lake.write("t", _t(["c"], [5]), key="id")
    lake.write("t", _t(["d", "a"], [6, 6]), key="id")  # "a" is known: only "d" lands
    added = lake.added_since("t", 0)
    assert sorted(added["id"].to_pylist()) == ["c", "d"] and added.column_names == ["id", "x"]
    assert lake.added_since("t", 1, columns=["id"]).to_pylist() == [{"id": "d"}]
    assert lake.added_since("t", 0, until=1)["id"].to_pylist() == ["c"]
    assert lake.added_since("t", 2).num_rows == 0
    lake.transact("t", lambda snap: _t(["b"], [7]), key="id", update_columns=["x"])  # rewrites a file
    assert lake.added_since("t", 2) is None
    lake.write("t", _t(["z"]), mode="overwrite")
    assert lake.added_since("t", 3) is None


def test_uncommitted_files_are_invisible_and_vacuumed(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a"]))
    # a killed writer: a data file in the table directory, no log entry
    ghost = tmp_path / "t" / "part-ghost.parquet"
    pq.write_table(_t(["ghost"]), ghost)
    assert lake.read("t")["id"].to_pylist() == ["a"] and lake.versions("t") == [0]
    old = time.time() - 3 * 3600
    os.utime(ghost, (old, old))
    assert lake.vacuum(retention_hours=1)["t"] and not ghost.exists()
    assert lake.read("t")["id"].to_pylist() == ["a"]
    with pytest.raises(ValueError):
        lake.vacuum(retention_hours=0)


def test_vacuum_keeps_versions_that_commits_read(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    monkeypatch.setattr(Lake, "min_vacuum_hours", 0)  # removals are stamped now: vacuum them at once
    lake.write("items", _t(["a"]))
    lake.write("items", _t(["b"]), mode="overwrite")  # v1 removes v0's file
    lake.write("views/s", _t(["a"]), reads={"items": 0})  # an export of items v0
    lake.write("items", _t(["c"]), mode="overwrite")  # v2 removes v1's file
    assert lake.pinned_versions() == {"items": {0}}
    removed = lake.vacuum(retention_hours=0)["items"]
    assert len(removed) == 1  # v1's file only
    assert lake.read("items", version=0)["id"].to_pylist() == ["a"]
    with pytest.raises(LakeError):
        lake.read("items", version=1)


def test_catalogued_tables_are_checked_on_write(tmp_path):
    from curation.storage.schemas import POOL_SCHEMA, SchemaError

    lake = Lake(str(tmp_path))
    with pytest.raises(SchemaError, match="'pool'.*missing"):
        lake.write("pool", _t(["a"]))
    assert not lake.exists("pool")
    lake.write("pool", POOL_SCHEMA.empty_table())
    lake.write("my_notes", _t(["a"]))  # a table outside the catalogue is the user's own


def test_errors_and_bad_names(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a"]))
    with pytest.raises(LakeError):
        lake.read("missing")
    for bad in ("../escape", "_private", "a/b/c", "", "a/../b", ".hidden"):
        with pytest.raises(LakeError):
            lake.table_dir(bad)
    with pytest.raises(LakeError):
        lake.read("t", version=9)
    with pytest.raises(LakeError):
        Lake(str(tmp_path / "nope"), create=False)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LakeError, match="is a file"):
        Lake(str(tmp_path / "file"))


def test_damaged_tables_are_reported_not_misread(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]))
    lake.write("u", _t(["a"]))
    (tmp_path / "t" / "_delta_log" / "vXYZ.json").write_text("{}")  # a stray file is not a commit
    assert lake.versions("t") == [0]
    os.remove(next((tmp_path / "u").glob("*.parquet")))  # a data file deleted by hand
    status = {s["table"]: s for s in lake.status()}
    assert status["t"]["error"] is None and status["t"]["rows"] == 2
    assert status["u"]["missing_files"] == 1 and "missing" in status["u"]["error"]
    with pytest.raises(LakeError, match="cannot be read"):
        lake.read("u")
    # a log entry that is not JSON: reported per table, other tables still listed
    (tmp_path / "t" / "_delta_log" / f"{1:020d}.json").write_text("not json\n")
    status = {s["table"]: s for s in lake.status()}
    assert status["t"]["error"] and set(status) == {"t", "u"}


def test_nested_table_names_and_status(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("views/sft", _t(["a", "b"]), producer={"step": "export"})
    lake.write("items", _t(["a"]))
    status = {s["table"]: s for s in lake.status()}
    assert set(status) == {"views/sft", "items"}
    assert status["views/sft"]["rows"] == 2 and status["views/sft"]["producer"] == {"step": "export"}
    assert (tmp_path / "views/sft/_delta_log" / f"{0:020d}.json").exists()


def test_filtered_reads_after_a_merge(tmp_path):
    import pyarrow.dataset as pads

    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]))
    lake.transact("t", lambda snap: _t(["c", "a"], [3, 9]), key="id", update_columns=["x"])
    got = lake.read("t", columns=["x"], filter=pads.field("id").isin(pa.array(["a", "c"])))
    assert sorted(got["x"].to_pylist()) == [3, 9]


def test_merge_upserts_by_key(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]))
    lake.transact("t", lambda snap: _t(["b", "c"], [7, 8]), key="id", update_columns=["x"])
    rows = lake.read("t").sort_by("id")
    assert rows["id"].to_pylist() == ["a", "b", "c"] and rows["x"].to_pylist() == [0, 7, 8]
    assert lake.commit_record("t").operation == "MERGE"
    assert lake.transact("t", lambda snap: None, key="id", update_columns=["x"]) is None


def test_concurrent_keyed_writers_keep_every_row_once(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["seed"]))
    ids = [f"{i:03d}" for i in range(200)]

    def writer(part):
        # overlapping key ranges from four writers at once
        Lake(str(tmp_path)).write("t", _t(ids[part * 40: part * 40 + 80]), key="id")

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = lake.read("t")["id"].to_pylist()
    assert sorted(got) == sorted(["seed"] + ids)


def _racing(n: int, work) -> None:
    """Run work(i) for i < n in threads released together, re-raising the first failure."""
    gate, errors = threading.Barrier(n), []

    def run(i):
        gate.wait()
        try:
            work(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def test_a_table_created_while_it_is_listed_is_not_an_error(tmp_path):
    # pyarrow's allow_not_found listing checks existence after a failed opendir: a table whose
    # `_delta_log` another writer creates in between raised FileNotFoundError (CI's failure of
    # the racing-writers test below). Hit the window many times with real directories.
    lake = Lake(str(tmp_path))
    for i in range(200):
        log = tmp_path / f"t{i}" / "_delta_log"

        def create(log=log):
            log.mkdir(parents=True)
            (log / f"{0:020d}.json").write_text("{}")

        th = threading.Thread(target=create)
        th.start()
        while not lake.versions(f"t{i}"):  # [] until the commit file is there, never an error
            pass
        th.join()
        assert lake.versions(f"t{i}") == [0]


def test_listing_retries_only_the_directory_that_appeared(monkeypatch):
    import pyarrow.fs as pafs

    from curation.storage import io

    class Racy:
        """A filesystem whose first listings fail as pyarrow's does when the directory appears."""

        def __init__(self, failures):
            self.failures, self.calls = failures, 0

        def get_file_info(self, selector):
            self.calls += 1
            if self.calls <= self.failures:
                raise FileNotFoundError(f"Cannot list directory '{selector.base_dir}'")
            return [pafs.FileInfo(selector.base_dir + "/x", pafs.FileType.File)]

    fs = Racy(1)
    assert [i.path for i in io.list_dir(fs, "/t")] == ["/t/x"] and fs.calls == 2
    with pytest.raises(FileNotFoundError, match="Cannot list directory"):
        io.list_dir(Racy(10), "/t")  # a directory that keeps vanishing is still an error


@pytest.mark.parametrize("how", ["keyed append", "merge"])
def test_writers_racing_to_create_a_table_keep_every_row_once(tmp_path, how):
    # delta-rs lets a create that lost the race land as the next version: both writers'
    # rows would then be in the table, each believing it created it
    for round_ in range(6):
        root = str(tmp_path / f"r{round_}")
        parts = [["a", "b", "shared"], ["c", "shared"], ["shared", "d"]]

        def write(i):
            lake = Lake(root)
            if how == "keyed append":
                lake.write("t", _t(parts[i]), key="id")
            else:
                def make(snap):
                    have = set(snap.to_table(columns=["id"])["id"].to_pylist()) if snap else set()
                    new = [k for k in parts[i] if k not in have]
                    return _t(new) if new else None

                lake.transact("t", make, key="id", update_columns=["x"])

        _racing(len(parts), write)
        got = Lake(root).read("t")["id"].to_pylist()
        assert sorted(got) == ["a", "b", "c", "d", "shared"], (round_, got)


def test_concurrent_merges_all_land(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write("t", pa.table({"id": ["a"], "n": [0]}))

    def bump(_):
        def make(snap):
            current = snap.to_table(columns=["id", "n"]).to_pylist()
            n = max(r["n"] for r in current)
            return pa.table({"id": ["a"], "n": [n + 1]})

        Lake(str(tmp_path)).transact("t", make, key="id", update_columns=["n"])

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert lake.read("t").to_pylist() == [{"id": "a", "n": 4}]  # no lost update


def test_conflict_gives_up_cleanly(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a"]))
    monkeypatch.setattr(Lake, "max_attempts", 2)
    from deltalake.exceptions import CommitFailedError

    def always_conflicts(*a, **k):
        raise CommitFailedError("Concurrent transaction failed")

    monkeypatch.setattr("deltalake.DeltaTable.create_write_transaction", always_conflicts)
    with pytest.raises(LakeConflict, match="gave up"):
        lake.write("t", _t(["b"]))


def test_file_uri_root(tmp_path):
    lake = Lake("file://" + str(tmp_path / "l"))
    lake.write("t", _t(["a"]))
    assert Lake(str(tmp_path / "l")).read("t").num_rows == 1


def test_tables_open_in_other_readers(tmp_path):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    lake = Lake(str(tmp_path))
    lake.write("t", _t(["a", "b"]))
    lake.write("t", _t(["c"]))
    path = str(tmp_path / "t")
    assert DeltaTable(path).to_pandas().shape == (3, 2)
    assert pl.read_delta(path).height == 3
    ds = DeltaTable(path).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads the local by name)
    assert duckdb.sql("select count(*) from ds").fetchall() == [(3,)]
    assert DeltaTable(path, version=0).to_pyarrow_table().num_rows == 2


def test_migrate_old_layout(tmp_path):
    root = tmp_path / "old"
    data = root / "items" / "data" / "v00000002"
    data.mkdir(parents=True)
    pq.write_table(_t(["a", "b"]), data / "part-00000.parquet")
    (root / "items" / "_commits").mkdir()
    record = {"table": "items", "version": 2, "files": ["data/v00000002/part-00000.parquet"], "rows": 2,
              "added_rows": 2, "mode": "append", "producer": {"step": "ingest"}, "created_at": "", "stats": {}}
    (root / "items" / "_commits" / "v00000002.json").write_text(json.dumps(record))
    with pytest.raises(LakeError, match="curate migrate"):
        Lake(str(root))
    out = migrate(str(root))
    assert out["items"]["rows"] == 2
    lake = Lake(str(root))
    assert sorted(lake.read("items")["id"].to_pylist()) == ["a", "b"]
    assert lake.commit_record("items").producer["step"] == "ingest"
    assert (root / "_legacy" / "items" / "_commits").exists()
    assert migrate(str(root)) == {}


def test_migrate_packs_old_float16_embeddings(tmp_path):
    import numpy as np

    from curation.steps.vectors.embeddings import read_embeddings

    root = tmp_path / "old"
    data = root / "embeddings" / "clip" / "data" / "v00000001"
    data.mkdir(parents=True)
    vectors = np.arange(6, dtype=np.float16).reshape(2, 3)
    old = pa.table({"id": ["a", "b"], "encoder": ["clip", "clip"],
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 3)})
    pq.write_table(old, data / "part-00000.parquet")
    (root / "embeddings" / "clip" / "_commits").mkdir()
    (root / "embeddings" / "clip" / "_commits" / "v00000001.json").write_text(json.dumps(
        {"version": 1, "files": ["data/v00000001/part-00000.parquet"], "producer": {"step": "score"}}))
    assert migrate(str(root))["embeddings/clip"]["rows"] == 2
    got = read_embeddings(Lake(str(root)), "clip")
    assert got.ids.to_pylist() == ["a", "b"] and np.array_equal(got.vectors, vectors)


def test_ray_write_and_read(ray_session, tmp_path):
    import ray.data

    lake = Lake(str(tmp_path))
    schema = pa.schema([("id", pa.string()), ("x", pa.int64())])
    c = lake.write_ray("t", ray.data.from_arrow(_t(["a", "b", "c"])), producer={"step": "t"}, schema=schema)
    assert c.rows == 3 and sorted(r["id"] for r in lake.read_ray("t").take_all()) == ["a", "b", "c"]
    again = lake.write_ray("t", ray.data.from_arrow(_t(["c", "d"])), schema=schema, key="id")
    assert sorted(lake.read("t")["id"].to_pylist()) == ["a", "b", "c", "d"] and again.added_rows == 1
    # an empty write still commits a readable, typed (empty) snapshot
    empty = ray.data.from_arrow(_t(["a"])).filter(lambda r: False)
    lake.write_ray("e", empty, schema=schema)
    assert lake.read("e").schema == schema and lake.read("e").num_rows == 0
    assert lake.read_ray("e").count() == 0
    # a MERGE (delta-rs writes string_view) and an unsigned column read back in the table's types
    lake.transact("t", lambda snap: _t(["e"]), key="id", update_columns=["x"])
    assert sorted(r["id"] for r in lake.read_ray("t").take_all()) == ["a", "b", "c", "d", "e"]
    lake.write("h", pa.table({"id": ["a"], "h": pa.array([2**64 - 1], pa.uint64())}))
    assert lake.read_ray("h", columns=["h"]).take_all() == [{"h": 2**64 - 1}]


def test_migrate_turns_old_caption_maps_into_key_value_lists(tmp_path):
    from curation.storage.schemas import CAPTION_FIELDS_TYPE, caption_field_map

    root = tmp_path / "old"
    data = root / "pool" / "data" / "v00000001"
    data.mkdir(parents=True)
    from curation.storage.schemas import POOL_SCHEMA

    old_map = pa.map_(pa.string(), pa.string())
    old_schema = pa.schema([pa.field(f.name, old_map) if f.name == "caption_fields" else f for f in POOL_SCHEMA])
    old = pa.table({f.name: pa.nulls(2, f.type) for f in old_schema}, schema=old_schema)
    old = old.set_column(0, "id", pa.array(["a", "b"]))
    old = old.set_column(old.schema.get_field_index("caption_fields"), pa.field("caption_fields", old_map),
                         pa.array([[("caption", "x"), ("caption_zh", "y")], None], old_map))
    pq.write_table(old, data / "part-00000.parquet")
    (root / "pool" / "_commits").mkdir()
    (root / "pool" / "_commits" / "v00000001.json").write_text(json.dumps(
        {"version": 1, "files": ["data/v00000001/part-00000.parquet"], "producer": {"step": "ingest"}}))
    migrate(str(root))
    got = Lake(str(root)).read("pool", columns=["id", "caption_fields"]).sort_by("id")
    assert got.schema.field("caption_fields").type == CAPTION_FIELDS_TYPE
    values = got["caption_fields"].to_pylist()
    assert caption_field_map(values[0]) == {"caption": "x", "caption_zh": "y"} and values[1] is None



def test_vacuum_retention_from_a_spec(tmp_path, capsys):
    from curation.cli.main import main

    lake = Lake(str(tmp_path / "lake"))
    lake.write("items", _t(["a"]))
    lake.write("items", _t(["b"]), mode="overwrite")
    spec = tmp_path / "night.yaml"
    spec.write_text(f"lake: {tmp_path / 'lake'}\nnightly: {{retention_hours: 0.5}}\n")
    assert main(["vacuum", str(tmp_path / "lake"), "--spec", str(spec), "--dry-run"]) == 2
    assert "nightly.retention_hours" in capsys.readouterr().err
    spec.write_text(f"lake: {tmp_path / 'lake'}\nnightly: {{retention_hours: 1}}\n")
    assert main(["vacuum", str(tmp_path / "lake"), "--spec", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"]["items"] == []  # v0's file was replaced just now
    assert lake.read("items", version=0)["id"].to_pylist() == ["a"]
