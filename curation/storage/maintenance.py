"""Looking after a lake: what must be kept (versions that exports read), vacuum, status.

Used through `Lake.vacuum`, `Lake.pinned_versions` and `Lake.status`.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa
import pyarrow.fs as pafs

from curation.storage.errors import LakeError

if TYPE_CHECKING:
    from curation.storage.lake import Lake


def pinned_versions(lake: "Lake") -> dict[str, set[int]]:
    """table -> versions some commit's `reads` references (never vacuumed away)."""
    pins: dict[str, set[int]] = {}
    for table in lake.tables():
        for rec in lake.history(table):
            for other, version in rec.reads.items():
                pins.setdefault(other, set()).add(int(version))
    return pins


def vacuum(lake: "Lake", retention_hours: float = 168, *, dry_run: bool = False,
           tables: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Delete data files no retained version needs: files removed from the table more
    than `retention_hours` ago, and orphans of killed writers older than that, keeping
    every file of a version some commit's `reads` references. Returns table -> files."""
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
    return out


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
