"""Looking after a lake: what must be kept (versions that exports read, versions nightly runs
wrote), vacuum, status.

Used through `Lake.vacuum`, `Lake.pinned_versions` and `Lake.status`.
"""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from curation.storage import io
from curation.storage.errors import LakeError
from curation.storage.shards import SHARDS_DIR

if TYPE_CHECKING:
    from curation.storage.lake import Lake


def pinned_versions(lake: "Lake") -> dict[str, set[int]]:
    """table -> versions some commit's `reads` references, a recorded nightly run wrote
    (`runs.versions_json`), or the latest `weights` names as its statistics (`tag_stats`, which
    the next incremental weights run builds on): never vacuumed away."""
    import json

    from curation.storage.schemas import RUNS, TAG_STATS, WEIGHTS

    pins: dict[str, set[int]] = {}
    for table in lake.tables():
        for rec in lake.history(table):
            for other, version in rec.reads.items():
                pins.setdefault(other, set()).add(int(version))
    if lake.exists(RUNS):
        for text in lake.read(RUNS, columns=["versions_json"])["versions_json"].to_pylist():
            for other, version in json.loads(text or "{}").items():
                pins.setdefault(other, set()).add(int(version))
    if lake.exists(WEIGHTS):
        named = (lake.commit_record(WEIGHTS).producer.get("tag_stats") or {}).get("version")
        if named is not None:
            pins.setdefault(TAG_STATS, set()).add(int(named))
    return pins


def vacuum(lake: "Lake", retention_hours: float = 168, *, dry_run: bool = False,
           tables: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Delete data files no retained version needs: files removed from the table more
    than `retention_hours` ago, and orphans of killed writers older than that, keeping
    every file of a version some commit's `reads` references; with `tables` None, also the
    orphan shards (`orphan_shards`). Returns table (or "_shards") -> files."""
    if retention_hours < lake.min_vacuum_hours:
        raise ValueError(f"retention_hours must be >= {lake.min_vacuum_hours}: younger orphan files "
                         "may belong to a writer that has not committed yet")
    pins = pinned_versions(lake)
    out = {}
    for table in tables or lake.tables():
        dtable = lake.delta(table)
        keep = sorted(pins.get(table, set()) & set(lake.versions(table)))
        out[table] = list(dtable.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                                        enforce_retention_duration=False, full=True,
                                        keep_versions=keep or None))
    if tables is None:
        orphans = orphan_shards(lake, retention_hours)
        if orphans:
            if not dry_run:
                for path in orphans:
                    lake.fs.delete_file(posixpath.join(lake.root, SHARDS_DIR, path))
            out[SHARDS_DIR] = orphans
    return out


def orphan_shards(lake: "Lake", retention_hours: float) -> list[str]:
    """Files under `<lake>/_shards` (paths relative to it) that no pool row points at and that
    were last written more than `retention_hours` ago: shards of runs killed before their
    commit, and their `.tmp-*` leftovers. Pool rows are never deleted once they point at a
    shard (only error rows are superseded) and `uris` only grow, so the latest pool version
    references every shard any version does. Younger files may belong to a running ingest."""
    from curation.storage.shards import shard_root

    base = posixpath.join(lake.root, SHARDS_DIR)
    written = {posixpath.relpath(i.path, base): (i.mtime.timestamp() if i.mtime is not None else 0.0)
               for i in io.list_dir(lake.fs, base, recursive=True)
               if i.type == pafs.FileType.File}
    if not written:
        return []
    root = shard_root(lake).rstrip("/") + "/"
    used: set[str] = set()
    if lake.exists("pool"):
        pool = lake.read("pool", columns=["uri", "uris"])
        for uri in pc.unique(pa.concat_arrays([pool["uri"].combine_chunks(),
                                               pc.list_flatten(pool["uris"]).combine_chunks()])).to_pylist():
            if uri and uri.startswith(root):
                used.add(io.split_member(uri)[0][len(root):])
    cutoff = time.time() - retention_hours * 3600
    return sorted(rel for rel, mtime in written.items() if rel not in used and mtime < cutoff)


def status(lake: "Lake", check_files: bool = True) -> list[dict[str, Any]]:
    """One entry per table: versions, latest version, rows, producer, commit time, and
    problems found (`error`: unreadable log; `missing_files`: listed but absent)."""
    out = []
    for table in lake._walk()[0]:
        entry: dict[str, Any] = {"table": table, "versions": len(lake.versions(table))}
        try:
            rec = lake.commit_record(table)
            entry.update(latest=rec.version, rows=rec.rows, files=rec.files, mode=rec.mode,
                         producer=rec.producer, created_at=rec.created_at, error=None)
            if check_files:
                missing = missing_files(lake, table)
                entry["missing_files"] = len(missing)
                if missing:
                    entry["error"] = (f"{len(missing)} data file(s) of the latest version are missing "
                                      f"(e.g. {missing[0]}); rows cannot be trusted")
        except LakeError as exc:
            entry.update(latest=None, rows=None, files=None, mode="", producer={}, created_at="",
                         error=str(exc))
        out.append(entry)
    return out


def missing_files(lake: "Lake", table: str) -> list[str]:
    base = lake.table_dir(table)
    present = {posixpath.relpath(i.path, base) for i in
               lake.fs.get_file_info(pafs.FileSelector(base, recursive=True)) if i.type == pafs.FileType.File}
    listed = pa.table(lake.delta(table).get_add_actions(flatten=True))["path"].to_pylist()
    return [p for p in listed if p not in present]
