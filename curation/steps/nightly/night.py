"""`curate nightly LAKE --spec jobs/nightly.yaml [--run-id ID]`: the night's steps as one run.

A run has an id (default: the UTC date) and a row in the `runs` table, committed after every
step: which steps are done, their counts and the table versions they wrote.

- A rerun of a finished run id does nothing (exit 0, "already finished").
- A rerun of a failed or killed run skips the steps it recorded done and goes on from the first
  one that is not. Every step is incremental and idempotent on its own (ingest adds only new
  ids, profile / ocr / score / caption only rows without a current result, keyed appends
  write each key once), so a step cut short and run again ends where an uninterrupted one would.
- One run per lake at a time (`lock.NightLock`): a second waits `nightly.lock_wait_s`, then
  exits 3 naming the holder; a lock left by a killed process is taken over.

Exit status (for cron and schedulers): 0 finished (or nothing to do), 1 a step failed (the run
is recorded failed with the step and message), 2 configuration error before anything ran, 3 the
lock is held.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import pyarrow as pa
import pyarrow.fs as pafs

from curation.storage import schemas

if TYPE_CHECKING:
    from curation.config.spec import JobSpec
    from curation.storage.lake import Lake

__all__ = ["NightlyConfig", "Night", "nightly"]

EXIT_OK, EXIT_FAILED, EXIT_LOCKED = 0, 1, 3


@dataclass
class NightlyConfig:
    """`nightly:` section.

    run_id: the run's id (default: today's UTC date, YYYY-MM-DD).
    lock_wait_s: how long a second run waits for the lake's lock before exiting 3, seconds.
    lock_stale_s: a lock whose owner cannot be checked (another host) is taken over after this
        age, seconds.
    step_retries, retry_wait_s: a step that fails on storage (OSError, a lake read or commit
        error: storage briefly unavailable) is run again up to `step_retries` times after
        `retry_wait_s` seconds; every step is idempotent, so a retry ends where one clean run
        would. Other errors fail the run at once.
    retention_hours: what `curate vacuum LAKE --spec SPEC` keeps: files of versions replaced
        less than this long ago, hours (versions a run, an export or the weights' statistics
        reference are kept regardless). Vacuum is its own command, never part of a run.
    """

    run_id: str | None = None
    lock_wait_s: float = field(default=0.0, metadata={"min": 0.0})
    lock_stale_s: float = field(default=12 * 3600.0, metadata={"gt": 0.0})
    step_retries: int = field(default=2, metadata={"min": 0})
    retry_wait_s: float = field(default=30.0, metadata={"min": 0.0})
    retention_hours: float = field(default=168.0, metadata={"min": 1.0})


@dataclass
class Night:
    """What a run did: exit code, the `runs` row, and the lines of its report."""

    exit_code: int
    run: dict
    lines: list[str]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _step_key(i: int, step) -> str:
    """A step's identity inside a run: position and what it is (so a changed spec is noticed)."""
    opts = {k: v for k, v in vars(step).items() if k != "step" and v is not None}
    return f"{i}:{step.step}:{json.dumps(opts, sort_keys=True, default=str)}"


def read_run(lake: "Lake", run_id: str) -> dict | None:
    if not lake.exists(schemas.RUNS):
        return None
    t = lake.read(schemas.RUNS)
    rows = [r for r in t.to_pylist() if r["run_id"] == run_id]
    return rows[0] if rows else None


def write_run(lake: "Lake", run: dict) -> None:
    row = pa.Table.from_pylist([run], schema=schemas.RUNS_SCHEMA)
    lake.transact(schemas.RUNS, lambda snap: row, key="run_id",
                  update_columns=[c for c in schemas.RUNS_SCHEMA.names if c != "run_id"],
                  producer={"step": "nightly", "run_id": run["run_id"], "state": run["state"]})


def _versions(lake: "Lake") -> dict[str, int]:
    return {t: lake.version(t) for t in lake.tables() if t != schemas.RUNS}


def _transient(exc: BaseException) -> bool:
    """Storage briefly unavailable: I/O errors other than a missing path or a refused permission
    (those do not fix themselves), and the lake's read / commit errors."""
    from curation.storage.errors import LakeError

    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(exc, (OSError, LakeError))


def _record(lake, run: dict, cfg: NightlyConfig) -> None:
    """write_run, retried on storage errors like a step."""
    for attempt in range(cfg.step_retries + 1):
        try:
            return write_run(lake, run)
        except Exception as exc:
            if not _transient(exc) or attempt == cfg.step_retries:
                raise
            time.sleep(cfg.retry_wait_s)


def _attempt(entry, lake, spec, step, cfg: NightlyConfig, printer) -> tuple:
    """(summary, storage errors retried past) of one step, retried on storage errors."""
    retried: list[str] = []
    while True:
        try:
            return entry(lake, spec, step), retried
        except Exception as exc:
            if not _transient(exc) or len(retried) >= cfg.step_retries:
                raise
            retried.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            printer(f"  {entry.name}: storage error ({retried[-1]}); retry {len(retried)} of {cfg.step_retries} "
                    f"in {cfg.retry_wait_s:g}s")
            time.sleep(cfg.retry_wait_s)


# The notes a morning reader needs from each step (the full summaries are in each step's commit).
REPORT_NOTES = ("skipped", "new_ids", "existing_ids_updated", "index", "new_embedded", "edges_added", "components_touched",
                "items_redecided", "statistics")


def _report(summary) -> list[str]:
    """The step's report lines under its count line: key notes, then the decisions it changed
    (the full id lists are kept in the run's `steps_json`)."""
    out = [f"    {k}: {summary.notes[k]}" for k in REPORT_NOTES if k in summary.notes]
    for kind, ids in summary.changes.items():
        shown = ", ".join(i[:12] for i in ids[:5]) + (f", ... ({len(ids) - 5} more)" if len(ids) > 5 else "")
        out.append(f"    {kind.replace('_', ' ')}: {len(ids)}: {shown}")
    return out


def nightly(spec: "JobSpec", run_id: str | None = None, printer: Callable[[str], None] = print,
            lake: "Lake | None" = None) -> Night:
    """Run (or resume, or skip) the night `run_id` of `spec`'s steps; see the module."""
    from curation.runtime import init_ray
    from curation.steps.nightly.lock import LockHeld, NightLock
    from curation.steps.run import check_job
    from curation.storage.lake import Lake

    cfg: NightlyConfig = spec.nightly
    run_id = run_id or cfg.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    entries = check_job(spec, lake=lake)  # exit 2 on any configuration problem, before anything runs
    spec = _with_night_ids(spec, run_id)
    lake = lake if lake is not None else Lake(spec.lake)
    root = lake.root if isinstance(lake.fs, pafs.LocalFileSystem) else lake.uri
    try:
        with NightLock(root, run_id, wait_s=cfg.lock_wait_s, stale_s=cfg.lock_stale_s) as lock:
            return _run(lake, spec, entries, run_id, printer, lock.taken_over, init_ray)
    except LockHeld as exc:
        printer(f"nightly {run_id}: {exc}")
        return Night(EXIT_LOCKED, {"run_id": run_id, "state": "locked"}, [str(exc)])


def _with_night_ids(spec: "JobSpec", run_id: str) -> "JobSpec":
    """The spec with the night's id as the run id of the steps that record one (hard-case
    mining, review proposals) where the spec leaves it unset: their own default is the clock,
    so a resumed night would mine or propose a second time; with the night's id a rerun of the
    step finds its earlier result and adds nothing."""
    night = f"nightly-{run_id}"
    if spec.review.run_id is not None and spec.hardcases.run_id is not None:
        return spec
    spec = copy.deepcopy(spec)
    spec.review.run_id = spec.review.run_id or night
    spec.hardcases.run_id = spec.hardcases.run_id or night
    return spec


def _run(lake, spec, entries, run_id, printer, taken_over, init_ray) -> Night:
    keys = [_step_key(i, s) for i, s in enumerate(spec.steps)]
    run = read_run(lake, run_id)
    if run is not None and run["state"] == "finished":
        line = f"nightly {run_id}: already finished at {run['ended_at']} (attempts {run['attempts']}): nothing to do"
        printer(line)
        return Night(EXIT_OK, run, [line])
    done = {s["key"]: s for s in json.loads(run["steps_json"])} if run else {}
    run = {"run_id": run_id, "state": "running", "started_at": run["started_at"] if run else _now(), "ended_at": None,
           "attempts": (run["attempts"] if run else 0) + 1, "steps_json": json.dumps(list(done.values())),
           "versions_json": run["versions_json"] if run else "{}", "error": None,
           "host": f"{socket.gethostname()}:{os.getpid()}"}
    lines = [f"nightly {run_id}: attempt {run['attempts']}" + (", resuming" if done else "")
             + (f" (took over the stale lock of run {taken_over.get('run_id')})" if taken_over else "")]
    printer(lines[0])
    write_run(lake, run)
    if any(e.needs_ray for k, e in zip(keys, entries) if k not in done):
        init_ray(spec.runtime)
    cfg: NightlyConfig = spec.nightly
    versions = json.loads(run["versions_json"])
    for key, entry, step in zip(keys, entries, spec.steps):
        if key in done:
            lines.append(f"  {entry.name}: done in an earlier attempt")
            printer(lines[-1])
            continue
        before = _versions(lake)
        t0 = time.perf_counter()
        try:
            summary, retried = _attempt(entry, lake, spec, step, cfg, printer)
        except Exception as exc:  # noqa: BLE001 - the run records the failure and exits 1
            kind = "storage unavailable: " if _transient(exc) else ""
            run.update(state="failed", ended_at=_now(),
                       error=f"{entry.name}: {kind}{type(exc).__name__}: {str(exc)[:500]}")
            try:
                _record(lake, run, cfg)
            except Exception as again:  # noqa: BLE001 - the storage is gone: say so, the rerun resumes anyway
                printer(f"  (could not record the failure in `runs`: {type(again).__name__}: {again})")
            lines.append(f"  {entry.name}: FAILED: {run['error']}")
            lines.append(f"nightly {run_id}: failed; rerun the same command to resume from {entry.name}")
            for line in lines[-2:]:
                printer(line)
            return Night(EXIT_FAILED, run, lines)
        wrote = {t: v for t, v in _versions(lake).items() if before.get(t) != v}
        versions.update(wrote)
        done[key] = {"key": key, "step": entry.name, "done": True, "seconds": round(time.perf_counter() - t0, 2),
                     "rows_in": summary.rows_in, "rows_out": summary.rows_out, "errors": sum(summary.errors.values()),
                     "versions": wrote, "changes": summary.changes}
        run.update(steps_json=json.dumps(list(done.values())), versions_json=json.dumps(versions))
        _record(lake, run, cfg)  # committed per step: a kill after this point resumes after this step
        line = (f"  {entry.name}: {summary.rows_in} in -> {summary.rows_out} out in {summary.seconds:.1f}s"
                + (f" (after {len(retried)} storage error(s): {retried[-1]})" if retried else "")
                + (f", errors {sum(summary.errors.values())}" if summary.errors else "")
                + (f", wrote {', '.join(f'{t} v{v}' for t, v in sorted(wrote.items()))}" if wrote else ", no change"))
        for line in [line, *_report(summary)]:
            lines.append(line)
            printer(line)
    run.update(state="finished", ended_at=_now())
    _record(lake, run, cfg)
    lines.append(f"nightly {run_id}: finished ({len(keys)} steps, {len(versions)} tables written)")
    printer(lines[-1])
    return Night(EXIT_OK, run, lines)
