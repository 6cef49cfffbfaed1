"""A lake: Delta Lake tables under one root URI (local path, `file://`, `s3://`, `gs://`, ...).

Every table is a Delta table (Parquet data files plus a `_delta_log/` transaction log) in the
directory `<root>/<table>`; a table name may contain one '/' (`embeddings/clip_b32`,
`manifests/sft`). Anything that reads Delta reads the lake: `deltalake.DeltaTable`, Ray Data
`read_delta`, Spark, DuckDB, Polars, pandas (through `DeltaTable(...).to_pyarrow_dataset()`).

What the lake promises, and how:
- **Invisible until committed.** Data files are written first (by the driver, or by Ray
  workers in `write_ray`), then one commit lands in the log from the driver. A killed writer
  leaves orphan files no snapshot lists; `vacuum` deletes them once older than its retention.
- **One writer wins at a time, nobody loses rows.** Every commit carries the Delta
  application transaction `curate-writer`; delta-rs rejects a commit whose table moved on
  since the writer's snapshot and carries the same application id, so two writers of one table
  can never both commit against the same snapshot. The loser re-reads and tries again (up to
  `max_attempts`): an append re-checks its keys against the new snapshot, a MERGE is
  recomputed by its caller (`transact`). Creating a table is the same race: the create
  commits version 0 or fails (delta-rs is told not to retry it as version 1), and the loser
  writes against the winner's table.
- **Idempotent reruns.** Appends may name a key (`key="id"`): rows whose key the table
  already holds are dropped before the commit, so a rerun after a crash, or a racing writer,
  never duplicates a row.
- **Provenance.** Each commit's `curate` metadata holds the producer (step, versions,
  parameters), row counts, free-form stats and `reads`: the versions of other tables the
  write was computed from (export records what it exported). `history()` shows them.
- **Time travel.** `read(table, version=N)`; `versions(table)`; `history(table)`.
- **Keyed upserts** through Delta MERGE (`merge`).
- **Vacuum** with a retention that never drops a version a commit's `reads` references, nor
  the latest one (`vacuum`).

Object stores: credentials come from the environment (AWS_*, GOOGLE_*, AZURE_*) or
`storage_options` (delta-rs keys). S3 needs a commit coordinator for concurrent writers
(delta-rs: `AWS_S3_LOCKING_PROVIDER=dynamodb`, or a store with conditional PUT); local disks,
GCS and Azure commit atomically by themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.storage import delta, io, maintenance
from curation.storage.errors import LakeConflict, LakeError
from curation.storage.faults import fault_point

__all__ = ["Commit", "Lake", "LakeConflict", "LakeError", "Snapshot", "StagedFile"]

LOG_DIR = "_delta_log"
LEGACY_COMMITS = "_commits"  # the pre-Delta layout (see curation.storage.migrate)
_LOG_FILE = re.compile(r"^(\d{20})\.json$")
_TABLE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Commit:
    """One committed version of a table, as recorded in its log."""

    table: str
    version: int
    rows: int
    added_rows: int
    mode: str
    files: int = 0
    operation: str = ""
    producer: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    created_at: str = ""


@dataclass
class StagedFile:
    """A data file written but not committed: path relative to the table directory."""

    path: str
    size: int
    rows: int
    mtime_ms: int


@dataclass
class Snapshot:
    """One committed version of a table, readable like `Lake.read` (what `transact` computes from)."""

    lake: "Lake"
    table: str
    version: int

    def to_table(self, columns: list[str] | None = None, filter: pads.Expression | None = None) -> pa.Table:
        return self.lake.read(self.table, columns=columns, version=self.version, filter=filter)


class Lake:
    """Delta tables under `root`: `Lake("path")`, `Lake("s3://bucket/lake")`.

    create: make the root directory if missing (writers); False for read-only commands, which
        then raise LakeError for a missing root instead of creating it.
    storage_options: delta-rs storage options for object stores (endpoint, credentials).
    allow_legacy: open a lake still in the pre-Delta layout (only `curate migrate` does).
    """

    max_attempts = 8
    min_vacuum_hours = 1  # orphan files younger than this may belong to a writer still running

    def __init__(self, root: str, *, create: bool = True, storage_options: dict[str, str] | None = None,
                 allow_legacy: bool = False):
        self.uri = root
        self.fs, path = pafs.FileSystem.from_uri(delta.as_uri(root))
        self.root = path.rstrip("/") or "/"
        self.storage_options = storage_options
        self._schemas: dict[str, pa.Schema] = {}
        self._scheme = delta.as_uri(root).split("://", 1)[0]
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise LakeError(f"lake path {root} is a file, not a directory")
        if info.type == pafs.FileType.NotFound:
            if not create:
                raise LakeError(f"no lake at {root}")
            self.fs.create_dir(self.root, recursive=True)
        if not allow_legacy:
            legacy = self.legacy_tables()
            if legacy:
                raise LakeError(f"lake {root} is in the pre-Delta layout (tables {', '.join(legacy)}): "
                                f"run `curate migrate {root}` to convert it")

    # ---- names and paths ---------------------------------------------------------------
    def table_dir(self, table: str) -> str:
        parts = table.split("/") if isinstance(table, str) else []
        if not 1 <= len(parts) <= 2 or not all(_TABLE_PART.match(p) and ".." not in p for p in parts):
            raise LakeError(f"invalid table name {table!r}: one or two '/'-separated parts of "
                            "letters, digits, '_', '-', '.' (no '..', not starting with '_' or '.')")
        return posixpath.join(self.root, table)

    def table_uri(self, table: str) -> str:
        """The table's location as delta-rs and Ray take it."""
        path = self.table_dir(table)
        return path if self._scheme == "file" else f"{self._scheme}://{path.lstrip('/')}"

    # ---- discovery ---------------------------------------------------------------------
    def _walk(self) -> tuple[list[str], list[str]]:
        """(Delta tables, legacy tables) among the root's directories, two levels deep."""
        tables, legacy = [], []

        def children(path: str) -> list[pafs.FileInfo]:
            return [i for i in io.list_dir(self.fs, path) if i.type == pafs.FileType.Directory]

        for top in children(self.root):
            name = posixpath.basename(top.path)
            if name.startswith(("_", ".")):
                continue
            inner = {posixpath.basename(i.path): i for i in children(top.path)}
            if LOG_DIR in inner:
                tables.append(name)
                continue
            if LEGACY_COMMITS in inner:
                legacy.append(name)
                continue
            for sub, info in inner.items():
                if sub.startswith(("_", ".")):
                    continue
                kinds = {posixpath.basename(i.path) for i in children(info.path)}
                if LOG_DIR in kinds:
                    tables.append(f"{name}/{sub}")
                elif LEGACY_COMMITS in kinds:
                    legacy.append(f"{name}/{sub}")
        return sorted(tables), sorted(legacy)

    def tables(self) -> list[str]:
        """Names of tables with at least one committed version."""
        return [t for t in self._walk()[0] if self.versions(t)]

    def legacy_tables(self) -> list[str]:
        """Tables still in the pre-Delta layout (`<table>/_commits/vN.json`)."""
        return self._walk()[1]

    def versions(self, table: str) -> list[int]:
        """Committed versions whose log entry is still present (Delta numbers from 0)."""
        out = []
        # a writer may be creating the table right now: see io.list_dir
        for info in io.list_dir(self.fs, posixpath.join(self.table_dir(table), LOG_DIR)):
            m = _LOG_FILE.match(posixpath.basename(info.path))
            if m:  # anything else in the log directory (a stray file) is not a commit
                out.append(int(m.group(1)))
        return sorted(out)

    def exists(self, table: str) -> bool:
        return bool(self.versions(table))

    def version(self, table: str) -> int:
        """The latest committed version."""
        return self.delta(table).version()

    # ---- reading -----------------------------------------------------------------------
    def delta(self, table: str, version: int | None = None):
        """The `deltalake.DeltaTable` at `version` (latest by default)."""
        from deltalake import DeltaTable

        if not self.exists(table):
            raise LakeError(f"table {table!r} has no committed version in lake {self.uri}")
        try:
            return DeltaTable(self.table_uri(table), version=version, storage_options=self.storage_options)
        except Exception as exc:  # delta-rs raises its own error types for damaged or missing logs
            which = f"version {version} of " if version is not None else ""
            raise LakeError(f"cannot open {which}table {table!r} in {self.uri}: {delta.first_line(exc)}") from None

    def commit_record(self, table: str, version: int | None = None) -> Commit:
        """What the log says about `version` (latest by default): producer, counts, reads."""
        dtable = self.delta(table, version)
        version = dtable.version()
        info = self._commit_info(table, version)
        meta = delta.parse_meta(info.get(delta.META_KEY))
        adds = pa.table(dtable.get_add_actions(flatten=True))
        rows = int(pc.sum(adds["num_records"]).as_py() or 0) if adds.num_rows else 0
        mode = meta.get("mode") or str(info.get("operationParameters", {}).get("mode", "")).lower()
        ts = info.get("timestamp")
        created = (dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).isoformat(timespec="seconds")
                   if ts else "")
        return Commit(table=table, version=version, rows=rows, added_rows=int(meta.get("added_rows", 0)),
                      mode=mode, files=adds.num_rows,
                      operation=str(info.get("operation", "")), producer=meta.get("producer", {}),
                      stats=meta.get("stats", {}), reads=meta.get("reads", {}), created_at=created)

    def _commit_info(self, table: str, version: int) -> dict[str, Any]:
        path = posixpath.join(self.table_dir(table), LOG_DIR, f"{version:020d}.json")
        try:
            with self.fs.open_input_stream(path) as f:
                lines = f.read().decode("utf-8").splitlines()
        except (FileNotFoundError, OSError):
            return {}  # cleaned up behind a checkpoint: the snapshot still reads
        for line in lines:
            try:
                action = json.loads(line)
            except ValueError:
                raise LakeError(f"table {table!r}: log entry {version} is not valid JSON") from None
            if isinstance(action, dict) and "commitInfo" in action:
                return action["commitInfo"] or {}
        return {}

    def history(self, table: str, limit: int | None = None) -> list[Commit]:
        """Every retained version, newest first."""
        versions = self.versions(table)[::-1]
        return [self.commit_record(table, v) for v in versions[:limit]]

    def files(self, table: str, version: int | None = None) -> list[str]:
        """URIs of the snapshot's data files."""
        return list(self.delta(table, version).file_uris())

    def dataset(self, table: str, version: int | None = None) -> pads.Dataset:
        """The snapshot as a pyarrow Dataset (physical columns: see `read` for unsigned types)."""
        return self._arrow_dataset(self.delta(table, version))

    def added_since(self, table: str, version: int, columns: list[str] | None = None,
                    until: int | None = None) -> pa.Table | None:
        """The rows of the data files snapshot `until` (latest: None) holds and `version` did not:
        for a history of appends since then (keyed appends included), exactly the rows added
        since, read without touching the older files. None when a file of `version` has left
        the snapshot since (an overwrite, MERGE or delete rewrote rows) or the table uses
        deletion vectors: the caller must read the whole table then."""
        now = self.delta(table, until)
        try:
            then = self.delta(table, version)
        except Exception:  # noqa: BLE001 - an unloadable old version: read everything instead
            return None
        if "deletionVectors" in (now.protocol().reader_features or []):
            return None
        old = set(then.file_uris())
        current = list(now.file_uris())
        if not old <= set(current):
            return None
        fresh = [u for u in current if u not in old]
        schema = pa.schema(now.schema().to_arrow())
        if not fresh:
            empty = schema.empty_table()
            return delta.from_delta(empty.select(columns) if columns is not None else empty)
        try:
            return delta.from_delta(self._arrow_dataset(now, fresh).to_table(columns=columns))
        except (FileNotFoundError, OSError) as exc:
            raise LakeError(f"table {table!r} in {self.uri} lists a data file that cannot be read "
                            f"(deleted by hand?): {delta.first_line(exc)}") from None

    def _arrow_dataset(self, dtable, uris: list[str] | None = None) -> pads.Dataset:
        # Built from the snapshot's file list on pyarrow's own filesystem, not through
        # delta-rs's `to_pyarrow_dataset`: its filesystem handler keeps scan threads that abort
        # the interpreter at exit (delta-rs #2184), and the Delta schema as the dataset schema
        # reads files written by other writers (string_view columns) as the table's types.
        if "deletionVectors" in (dtable.protocol().reader_features or []):
            return dtable.to_pyarrow_dataset()  # only delta-rs applies deletion vectors
        schema = pa.schema(dtable.schema().to_arrow())
        paths = [pafs.FileSystem.from_uri(delta.as_uri(u))[1] if self._scheme != "file" else u
                 for u in (dtable.file_uris() if uris is None else uris)]
        # Our own files are written in the table's types. A declared dataset schema costs ~15% of
        # a read (pyarrow projects every batch), so it is declared only when a file written by
        # another writer (delta-rs MERGE, another tool) has other physical types.
        own = [p for p in paths if delta.OWN_FILE.match(posixpath.basename(p))]
        foreign = [p for p in paths if p not in set(own)]
        if paths and all(self._file_schema(p).equals(schema, check_metadata=False) for p in foreign + own[:1]):
            return pads.dataset(paths, format="parquet", filesystem=self.fs)
        return pads.dataset(paths, schema=schema, format="parquet", filesystem=self.fs)

    def _file_schema(self, path: str) -> pa.Schema:
        """A data file's Arrow schema from its footer (files never change: cached)."""
        if path not in self._schemas:
            self._schemas[path] = pq.read_schema(path, filesystem=self.fs)
        return self._schemas[path]

    def read(self, table: str, columns: list[str] | None = None, version: int | None = None,
             filter: pads.Expression | None = None) -> pa.Table:
        """A committed snapshot (latest by default) in memory."""
        dtable = self.delta(table, version)
        try:
            dataset = self._arrow_dataset(dtable)
            try:
                return delta.from_delta(dataset.to_table(columns=columns, filter=filter))
            except pa.ArrowNotImplementedError:
                if filter is None:
                    raise
                # Statistics of files written by another writer (delta-rs MERGE: string_view)
                # do not compare with the filter's types: filter after reading instead.
                rows = dataset.to_table().filter(filter)
                return delta.from_delta(rows.select(columns) if columns is not None else rows)
        except (FileNotFoundError, OSError) as exc:
            raise LakeError(f"table {table!r} in {self.uri} lists a data file that cannot be read "
                            f"(deleted by hand?): {delta.first_line(exc)}") from None

    def read_ray(self, table: str, columns: list[str] | None = None, version: int | None = None):
        """The snapshot as a Ray Dataset: a distributed read of exactly the committed files."""
        import ray.data

        dtable = self.delta(table, version)
        files = list(dtable.file_uris())
        if not files:
            empty = pa.schema(dtable.schema().to_arrow()).empty_table()
            return ray.data.from_arrow(empty.select(columns) if columns else empty)
        fs = None if self._scheme != "file" else self.fs
        schema = pa.schema(dtable.schema().to_arrow())
        # Files written by other Delta writers may use other physical types (string_view): they
        # are read in the table's schema, then unsigned columns are restored.
        selected = pa.schema([schema.field(c) for c in columns]) if columns else schema
        ds = ray.data.read_parquet(files, filesystem=fs, schema=schema)
        if columns:
            ds = ds.select_columns(columns)  # Ray pushes the projection into the read
        return ds.map_batches(delta.as_table_types, fn_kwargs={"schema": selected}, batch_format="pyarrow",
                              batch_size=None)

    def pending(self, source: str, columns: list[str], target: str, producer_column: str,
                producer: str, also: Iterable[str] = ()) -> tuple[pa.Table, str]:
        """(rows of `source` still to process into `target`, write mode) for incremental steps.

        Rows whose id `target` already holds from the same `producer`, and every table in
        `also` holds too (unless the target row has an `error`: a failed row writes only the
        target), are skipped ("append"): a step that writes several tables redoes a row until
        all of them have it, so a crash between its commits is repaired by a rerun.
        If `target` holds rows of another producer, everything is redone ("overwrite") so a
        table never mixes producers.
        """
        rows = self.read(source, columns=columns)
        if not self.exists(target):
            return rows, "append"
        done = self.read(target, columns=["id", producer_column])
        same = done.filter(pc.equal(done[producer_column], producer))
        if same.num_rows != done.num_rows:
            return rows, "overwrite"
        complete = rows.filter(pc.is_in(rows["id"], value_set=same["id"]))
        also = list(also)
        if also and "error" in self.dataset(target).schema.names:
            # a row that failed in `target` has nothing to write to the other tables
            failed = self.read(target, columns=["id"], filter=pads.field("error").is_valid())["id"]
            needed = complete.filter(pc.invert(pc.is_in(complete["id"], value_set=failed)))
        else:
            needed = complete
        for other in also:
            have = self.read(other, columns=["id"])["id"] if self.exists(other) else pa.array([], pa.string())
            missing = needed.filter(pc.invert(pc.is_in(needed["id"], value_set=have)))
            complete = complete.filter(pc.invert(pc.is_in(complete["id"], value_set=missing["id"])))
        return rows.filter(pc.invert(pc.is_in(rows["id"], value_set=complete["id"]))), "append"

    # ---- writing -----------------------------------------------------------------------
    def write(self, table: str, data: pa.Table, *, mode: str = "append", key: str | list[str] | None = None,
              producer: dict[str, Any] | None = None, stats: dict[str, Any] | None = None,
              reads: dict[str, int] | None = None, rows_per_file: int = 1_000_000) -> Commit:
        """Write an in-memory table as one new version (driver-side writes).

        mode: "append" or "overwrite" (the new version holds exactly `data`).
        key: for appends, the key column(s): rows whose key the table already holds, or that
            repeat within `data`, are dropped, so reruns and racing writers add each key once.
        """
        staged = [self._write_file(table, data.slice(i, rows_per_file))
                  for i in range(0, data.num_rows, rows_per_file)]
        return self.commit(table, staged, schema=data.schema, mode=mode, key=key, producer=producer,
                           stats=stats, reads=reads)

    def write_ray(self, table: str, ds, *, schema: pa.Schema | None = None, mode: str = "append",
                  key: str | list[str] | None = None, producer: dict[str, Any] | None = None,
                  stats: dict[str, Any] | None = None, reads: dict[str, int] | None = None,
                  rows_per_file: int = 250_000) -> Commit:
        """Write a Ray Dataset as one new version: Ray workers write the Parquet files straight
        into the table directory (invisible), then the driver commits them in one step.

        schema: the table's Arrow schema; None takes the first written file's (an empty
            dataset then needs the table to exist already, or writes nothing).
        """
        dir_path = self.table_dir(table)
        listing = ds.map_batches(delta.write_block, batch_format="pyarrow", batch_size=rows_per_file,
                                 fn_kwargs={"fs": self.fs, "dir_path": dir_path, "schema": schema})
        staged = []
        for block in listing.iter_batches(batch_format="pyarrow", batch_size=None):
            staged += [StagedFile(**r) for r in block.to_pylist()]
        if schema is None:
            if not staged:
                if not self.exists(table):
                    raise LakeError(f"{table!r}: nothing written and no schema to create the table with")
                schema = pa.schema(self.delta(table).schema().to_arrow())
            else:
                schema = pq.read_schema(posixpath.join(dir_path, staged[0].path), filesystem=self.fs)
        return self.commit(table, staged, schema=schema, mode=mode, key=key, producer=producer,
                           stats=stats, reads=reads)

    def commit(self, table: str, staged: list[StagedFile], *, schema: pa.Schema, mode: str = "append",
               key: str | list[str] | None = None, producer: dict[str, Any] | None = None,
               stats: dict[str, Any] | None = None, reads: dict[str, int] | None = None,
               must_create: bool = False) -> Commit:
        """Make written files one new version, retrying when another writer got in first.

        must_create: the caller computed the rows for a table that did not exist; if another
            writer created it meanwhile, raise LakeConflict instead of appending.
        """
        from deltalake import Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, create_table_with_add_actions

        if mode not in ("append", "overwrite"):
            raise ValueError(f"mode must be append or overwrite, not {mode!r}")
        keys = [key] if isinstance(key, str) else list(key or [])
        delta.check_catalogue(table, schema)
        for attempt in range(self.max_attempts):
            snapshot = self.delta(table) if self.exists(table) else None
            if snapshot is not None and must_create:
                raise LakeConflict(f"{table!r} was created by another writer meanwhile")
            if keys and mode == "append":
                staged = self._drop_known(table, staged, keys, snapshot)
            added = sum(f.rows for f in staged)
            meta = {"producer": producer or {}, "stats": stats or {}, "reads": reads or {},
                    "mode": mode, "added_rows": added}
            actions = [AddAction(path=f.path, size=f.size, partition_values={}, modification_time=f.mtime_ms,
                                 data_change=True, stats=json.dumps({"numRecords": f.rows})) for f in staged]
            if snapshot is not None and keys and mode == "append" and not actions:
                return self.commit_record(table)  # nothing new: no version is written
            props = delta.commit_properties(meta, create=snapshot is None)
            delta_schema = delta.delta_schema(schema)
            if attempt == 0:
                fault_point(f"before_commit:{table}")
            try:
                if snapshot is None:
                    create_table_with_add_actions(self.table_uri(table), Schema.from_arrow(delta_schema), actions,
                                                  mode="error", storage_options=self.storage_options,
                                                  commit_properties=props)
                else:
                    snapshot.create_write_transaction(actions, mode=mode, schema=delta_schema, commit_properties=props)
            except Exception as exc:
                if isinstance(exc, CommitFailedError) or (snapshot is None and self.exists(table)):
                    # another writer committed (or created the table) first: the next attempt
                    # re-checks against its version (must_create then raises LakeConflict)
                    delta.backoff(attempt)
                    continue
                raise LakeError(f"commit to {table!r} failed: {delta.first_line(exc)}") from None
            fault_point(f"after_commit:{table}")
            return self.commit_record(table)
        raise LakeConflict(f"{table!r}: gave up after {self.max_attempts} attempts; other writers kept "
                           "committing first (the written files stay invisible; rerun the step)")

    def transact(self, table: str, make: Callable[[Any], pa.Table | None], *, key: str,
                 update_columns: list[str], producer: dict[str, Any] | None = None,
                 stats: dict[str, Any] | None = None, delete_column: str | None = None) -> Commit | None:
        """A keyed upsert (Delta MERGE) recomputed against the latest snapshot until it commits.

        make(snapshot) -> the source rows (unique `key`), computed from `snapshot` (the latest
        version as a `Snapshot`: `snapshot.to_table(columns, filter)` reads it like `read`; None
        when the table does not exist yet), or None for "nothing to do".
        Matched rows get `update_columns` from the source; unmatched rows are inserted whole.
        delete_column: a boolean source column (not stored; make() may leave it out); a source
            row where it is true deletes the target row with its key (and is never inserted).
        """
        from deltalake.exceptions import CommitFailedError

        for attempt in range(self.max_attempts):
            snapshot = self.delta(table) if self.exists(table) else None
            rows = make(Snapshot(self, table, snapshot.version()) if snapshot is not None else None)
            if rows is None or rows.num_rows == 0:
                return None
            meta = {"producer": producer or {}, "stats": stats or {}, "mode": "merge"}
            deleting = bool(delete_column) and delete_column in rows.schema.names
            if snapshot is None:
                if deleting:  # nothing to delete in a table not yet created
                    rows = rows.filter(pc.invert(pc.fill_null(rows[delete_column], False))).drop_columns([delete_column])
                    if not rows.num_rows:
                        return None
                try:
                    staged = [self._write_file(table, rows)]
                    return self.commit(table, staged, schema=rows.schema, producer=producer, stats=stats,
                                       must_create=True)
                except LakeConflict:
                    delta.backoff(attempt)
                    continue
            if attempt == 0:
                fault_point(f"before_commit:{table}")
            try:
                merge = snapshot.merge(delta.to_delta(rows), predicate=f"t.{key} = s.{key}", source_alias="s",
                                       target_alias="t", commit_properties=delta.commit_properties(meta))
                updates = {c: f"s.{c}" for c in update_columns}
                if deleting:
                    stored = [n for n in rows.schema.names if n != delete_column]
                    merge = (merge.when_matched_delete(predicate=f"s.{delete_column}")
                             .when_matched_update(updates=updates, predicate=f"NOT s.{delete_column}")
                             .when_not_matched_insert(updates={c: f"s.{c}" for c in stored},
                                                      predicate=f"NOT s.{delete_column}"))
                else:
                    merge = merge.when_matched_update(updates=updates).when_not_matched_insert_all()
                merge.execute()
            except CommitFailedError:
                delta.backoff(attempt)
                continue
            fault_point(f"after_commit:{table}")
            return self.commit_record(table)
        raise LakeConflict(f"{table!r}: MERGE gave up after {self.max_attempts} attempts to concurrent writers")

    def _write_file(self, table: str, data: pa.Table) -> StagedFile:
        return StagedFile(**delta.write_block(data, self.fs, self.table_dir(table), data.schema).to_pylist()[0])

    def _drop_known(self, table: str, staged: list[StagedFile], keys: list[str], snapshot) -> list[StagedFile]:
        """Staged files without the rows whose key the snapshot (or an earlier file) holds;
        only files that hold such rows are rewritten."""
        base = self.table_dir(table)
        known = (delta.key_array(self._arrow_dataset(snapshot).to_table(columns=keys), keys)
                 if snapshot is not None else pa.array([], pa.string()))
        out = []
        for f in staged:
            path = posixpath.join(base, f.path)
            ids = delta.key_array(pq.read_table(path, columns=keys, filesystem=self.fs), keys)
            dup = pc.is_in(ids, value_set=known)
            first = delta.first_occurrence(ids)
            keep = pc.and_(pc.invert(dup), first)
            if pc.all(keep).as_py() is not False:
                out.append(f)
            else:
                kept = pq.read_table(path, filesystem=self.fs).filter(keep)
                self.fs.delete_file(path)
                if kept.num_rows:
                    out.append(self._write_file(table, kept))
            known = pa.concat_arrays([known, ids.filter(keep)])
        return out

    # ---- maintenance (curation.storage.maintenance) ------------------------------------
    def pinned_versions(self) -> dict[str, set[int]]:
        """table -> versions some commit's `reads` references (never vacuumed away)."""
        return maintenance.pinned_versions(self)

    def vacuum(self, retention_hours: float = 168, *, dry_run: bool = False,
               tables: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Delete data files no retained version needs; see `maintenance.vacuum`."""
        return maintenance.vacuum(self, retention_hours, dry_run=dry_run, tables=tables)

    def status(self, check_files: bool = True) -> list[dict[str, Any]]:
        """One entry per table with its problems; see `maintenance.status`."""
        return maintenance.status(self, check_files)
