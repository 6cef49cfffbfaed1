"""A lake: versioned Parquet tables under one root URI on any `pyarrow.fs` filesystem.

Layout under the root (local path, `file://`, `s3://`, `gs://`, ...)::

    <table>/data/v00000003/part-*.parquet     files written by version 3
    <table>/_commits/v00000003.json           commit record, written last

A table name may contain '/' (`manifests/sft`). A commit record lists the *whole* snapshot
(every file of the table at that version, relative to the table directory), the producer and
row counts. A version becomes visible only when its record exists; the record is written in
one atomic step (temp file + rename locally; a single PUT on object stores), so a crash leaves
an invisible orphan directory, never a half-written table. Readers resolve a snapshot from one
record, so they never see files of an uncommitted write. One writer per table at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

COMMITS = "_commits"
DATA = "data"


class LakeError(Exception):
    """A table or version that does not exist, or a conflicting write."""


@dataclass
class Commit:
    """One committed version of a table."""

    table: str
    version: int
    files: list[str]
    rows: int
    added_rows: int
    mode: str
    producer: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True, default=str)


def _vname(version: int) -> str:
    return f"v{version:08d}"


class Lake:
    """Versioned tables under `root`. `Lake("path")`, `Lake("s3://bucket/lake")`.

    `filesystem` may be passed to use an already configured pyarrow filesystem (credentials,
    endpoint); otherwise it is inferred from the URI.
    """

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None, *, create: bool = True):
        if filesystem is None:
            filesystem, path = pafs.FileSystem.from_uri(_as_uri(root))
        else:
            path = root
        self.uri = root
        self.fs = filesystem
        self.root = path.rstrip("/") or "/"
        if create:
            self.fs.create_dir(self.root, recursive=True)
        elif self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            raise LakeError(f"no lake at {root}")

    # ---- paths -------------------------------------------------------------------------
    def table_dir(self, table: str) -> str:
        if not table or table.startswith("/") or ".." in table.split("/") or table.startswith("_"):
            raise LakeError(f"invalid table name {table!r}")
        return posixpath.join(self.root, table)

    def _commit_path(self, table: str, version: int) -> str:
        return posixpath.join(self.table_dir(table), COMMITS, _vname(version) + ".json")

    # ---- reading -----------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Names of tables with at least one committed version."""
        found = []
        sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.Directory and posixpath.basename(info.path) == COMMITS:
                rel = posixpath.relpath(posixpath.dirname(info.path), self.root)
                if self.versions(rel):
                    found.append(rel)
        return sorted(found)

    def versions(self, table: str) -> list[int]:
        sel = pafs.FileSelector(posixpath.join(self.table_dir(table), COMMITS), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            name = posixpath.basename(info.path)
            if name.startswith("v") and name.endswith(".json"):
                out.append(int(name[1:-5]))
        return sorted(out)

    def exists(self, table: str) -> bool:
        return bool(self.versions(table))

    def commit_record(self, table: str, version: int | None = None) -> Commit:
        versions = self.versions(table)
        if not versions:
            raise LakeError(f"table {table!r} has no committed version in lake {self.uri}")
        version = versions[-1] if version is None else version
        if version not in versions:
            raise LakeError(f"table {table!r} has no committed version {version} (have {versions})")
        with self.fs.open_input_stream(self._commit_path(table, version)) as f:
            return Commit(**json.loads(f.read()))

    def files(self, table: str, version: int | None = None) -> list[str]:
        """Full filesystem paths of the snapshot's Parquet files."""
        rec = self.commit_record(table, version)
        base = self.table_dir(table)
        return [posixpath.join(base, f) for f in rec.files]

    def dataset(self, table: str, version: int | None = None) -> pads.Dataset:
        return pads.dataset(self.files(table, version), filesystem=self.fs, format="parquet")

    def read(self, table: str, columns: list[str] | None = None, version: int | None = None,
             filter: pads.Expression | None = None) -> pa.Table:
        """Read a committed snapshot (latest by default) into memory."""
        files = self.files(table, version)
        if not files:  # e.g. a Ray write of an empty dataset: the schema is in the record
            empty = self._empty_schema(table, version).empty_table()
            return empty.select(columns) if columns is not None else empty
        return self.dataset(table, version).to_table(columns=columns, filter=filter)

    def _empty_schema(self, table: str, version: int | None) -> pa.Schema:
        schema = self.commit_record(table, version).stats.get("schema")
        return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(schema))) if schema else pa.schema([])

    def read_ray(self, table: str, columns: list[str] | None = None, version: int | None = None):
        """The snapshot as a Ray Dataset (distributed read of the committed files only)."""
        import ray.data

        return ray.data.read_parquet(self.files(table, version), filesystem=self.fs, columns=columns)

    def pending(self, source: str, columns: list[str], target: str, producer_column: str,
                producer: str) -> tuple[pa.Table, str]:
        """(rows of `source` still to process into `target`, write mode) for incremental steps.

        Rows whose id `target` already holds from the same `producer` are skipped ("append"); if
        `target` holds rows of another producer, everything is redone ("overwrite") so a
        table never mixes producers.
        """
        rows = self.read(source, columns=columns)
        if not self.exists(target):
            return rows, "append"
        done = self.read(target, columns=["id", producer_column])
        same = done.filter(pc.equal(done[producer_column], producer))
        if same.num_rows != done.num_rows:
            return rows, "overwrite"
        return rows.filter(pc.invert(pc.is_in(rows["id"], value_set=same["id"]))), "append"

    # ---- writing -----------------------------------------------------------------------
    def next_version(self, table: str) -> int:
        versions = self.versions(table)
        return versions[-1] + 1 if versions else 1

    def staging_dir(self, table: str, version: int) -> str:
        """Directory a writer fills before `commit`; invisible to readers until then."""
        path = posixpath.join(self.table_dir(table), DATA, _vname(version))
        self.fs.create_dir(path, recursive=True)
        return path

    def commit(self, table: str, version: int, add: Iterable[str], *, remove: Iterable[str] = (),
               mode: str = "append", producer: dict[str, Any] | None = None,
               stats: dict[str, Any] | None = None, schema: pa.Schema | None = None) -> Commit:
        """Make `version` visible: snapshot = previous files - remove + add (mode "append") or
        exactly `add` (mode "overwrite"). `add`/`remove` are full paths or table-relative."""
        if mode not in ("append", "overwrite"):
            raise ValueError(f"mode must be append or overwrite, not {mode!r}")
        base = self.table_dir(table)
        rel = lambda p: posixpath.relpath(p, base) if p.startswith(base + "/") else p  # noqa: E731
        add = [rel(p) for p in add]
        existing = self.versions(table)
        if version in existing:
            raise LakeError(f"{table} version {version} is already committed")
        if existing and version < existing[-1]:
            raise LakeError(f"{table}: version {version} is older than committed {existing[-1]}")
        previous: list[str] = []
        if existing and mode == "append":
            previous = self.commit_record(table).files
        drop = {rel(p) for p in remove}
        files = [f for f in previous if f not in drop] + add
        added_rows = sum(self._rows(posixpath.join(base, f)) for f in add)
        rows = added_rows + sum(self._rows(posixpath.join(base, f)) for f in previous if f not in drop)
        stats = dict(stats or {})
        if schema is not None:
            stats["schema"] = schema.serialize().to_pybytes().hex()
        rec = Commit(table=table, version=version, files=files, rows=rows, added_rows=added_rows,
                     mode=mode, producer=producer or {}, stats=stats,
                     created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self._write_atomic(self._commit_path(table, version), rec.to_json().encode())
        return rec

    def write(self, table: str, data: pa.Table, *, mode: str = "append",
              producer: dict[str, Any] | None = None, stats: dict[str, Any] | None = None,
              remove: Iterable[str] = (), rows_per_file: int = 1_000_000) -> Commit:
        """Write an in-memory table as a new version (driver-side writes of small tables)."""
        version = self.next_version(table)
        out = self.staging_dir(table, version)
        paths = []
        for i, start in enumerate(range(0, max(data.num_rows, 1), rows_per_file)):
            path = posixpath.join(out, f"part-{i:05d}.parquet")
            pq.write_table(data.slice(start, rows_per_file), path, filesystem=self.fs, compression="zstd")
            paths.append(path)
        return self.commit(table, version, paths, remove=remove, mode=mode, producer=producer,
                           stats=stats, schema=data.schema)

    def write_ray(self, table: str, ds, *, mode: str = "append", producer: dict[str, Any] | None = None,
                  stats: dict[str, Any] | None = None, schema: pa.Schema | None = None) -> Commit:
        """Write a Ray Dataset as a new version: distributed write into the staging directory,
        then one commit from the driver."""
        version = self.next_version(table)
        out = self.staging_dir(table, version)
        ds.write_parquet(out, filesystem=self.fs, compression="zstd")
        sel = pafs.FileSelector(out, recursive=True)
        paths = sorted(i.path for i in self.fs.get_file_info(sel)
                       if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        return self.commit(table, version, paths, mode=mode, producer=producer, stats=stats, schema=schema)

    def write_text(self, table: str, version: int, name: str, text: str) -> str:
        """A side file (e.g. `_manifest.json`) inside a version's data directory."""
        path = posixpath.join(self.staging_dir(table, version), name)
        self._write_atomic(path, text.encode())
        return path

    # ---- status ------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """One entry per table: versions, latest row count, producer, commit time."""
        out = []
        for table in self.tables():
            rec = self.commit_record(table)
            out.append({"table": table, "versions": len(self.versions(table)), "latest": rec.version,
                        "rows": rec.rows, "files": len(rec.files), "mode": rec.mode,
                        "producer": rec.producer, "created_at": rec.created_at})
        return out

    # ---- helpers -----------------------------------------------------------------------
    def _rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows

    def _write_atomic(self, path: str, payload: bytes) -> None:
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(tmp) as f:
                f.write(payload)
            self.fs.move(tmp, path)  # rename(2): atomic on POSIX
        else:
            # Object stores make a single PUT visible all at once.
            with self.fs.open_output_stream(path) as f:
                f.write(payload)


def _as_uri(root: str) -> str:
    if "://" in root:
        return root
    import os

    return "file://" + os.path.abspath(os.path.expanduser(root))
