"""The previous lake layout, kept only as the baseline of `lake_bench.py`.

Versioned Parquet directories `<table>/data/vNNNNNNNN/part-*.parquet` and a JSON commit
record `<table>/_commits/vNNNNNNNN.json` listing the snapshot's files, written last through a
temp file + rename. The write and read paths are the ones the lake had before it moved to
Delta (append mode, zstd, row counts from each file's footer); `curation.storage.migrate`
converts lakes in this layout.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class LegacyLake:
    def __init__(self, root: str):
        self.fs = pafs.LocalFileSystem()
        self.root = os.path.abspath(root)
        self.fs.create_dir(self.root, recursive=True)

    def _versions(self, table: str) -> list[int]:
        sel = pafs.FileSelector(posixpath.join(self.root, table, "_commits"), allow_not_found=True)
        return sorted(int(posixpath.basename(i.path)[1:-5]) for i in self.fs.get_file_info(sel)
                      if i.path.endswith(".json"))

    def _record(self, table: str) -> dict:
        version = self._versions(table)[-1]
        with open(posixpath.join(self.root, table, "_commits", f"v{version:08d}.json")) as f:
            return json.load(f)

    def write(self, table: str, data: pa.Table, rows_per_file: int = 1_000_000) -> dict:
        versions = self._versions(table)
        version = versions[-1] + 1 if versions else 1
        out = posixpath.join(self.root, table, "data", f"v{version:08d}")
        self.fs.create_dir(out, recursive=True)
        base = posixpath.join(self.root, table)
        added = []
        for i, start in enumerate(range(0, max(data.num_rows, 1), rows_per_file)):
            path = posixpath.join(out, f"part-{i:05d}.parquet")
            pq.write_table(data.slice(start, rows_per_file), path, filesystem=self.fs, compression="zstd")
            added.append(posixpath.relpath(path, base))
        previous = self._record(table)["files"] if versions else []
        files = previous + added
        rows = sum(pq.ParquetFile(posixpath.join(base, f)).metadata.num_rows for f in files)
        record = {"table": table, "version": version, "files": files, "rows": rows, "mode": "append"}
        commits = posixpath.join(base, "_commits")
        self.fs.create_dir(commits, recursive=True)
        tmp = posixpath.join(commits, f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, posixpath.join(commits, f"v{version:08d}.json"))
        return record

    def read(self, table: str) -> pa.Table:
        base = posixpath.join(self.root, table)
        files = [posixpath.join(base, f) for f in self._record(table)["files"]]
        return pads.dataset(files, filesystem=self.fs, format="parquet").to_table()
