"""`curate` commands that look after the lake itself: status, history, show, vacuum, migrate.

    curate status LAKE [--json] [--history TABLE [--limit N]]
    curate show LAKE TABLE [--version N] [--limit N] [--columns a,b] [--json]
    curate vacuum LAKE [--retention-hours H | --spec SPEC] [--dry-run] [--json]
    curate migrate LAKE

None of them starts Ray. `status`, `show` and `vacuum --dry-run` never write anything.
"""

from __future__ import annotations

import argparse
import json


def _lake(p: argparse.ArgumentParser) -> None:
    p.add_argument("lake", help="lake root: a path or pyarrow.fs URI (s3://bucket/lake)")


def _open(uri: str, *, create: bool = False, allow_legacy: bool = False):
    from curation.storage.lake import Lake
    from curation.storage.location import check_lake

    check_lake(uri, create=create)  # read-only commands create nothing
    return Lake(uri, create=create, allow_legacy=allow_legacy)


# ---- status -------------------------------------------------------------------------------

def _add_status(sub) -> None:
    p = sub.add_parser("status", help="tables, versions, row counts, producers and damage; --history TABLE for its versions")
    _lake(p)
    p.add_argument("--history", metavar="TABLE", help="list every retained version of TABLE (newest first)")
    p.add_argument("--limit", type=int, help="with --history: at most this many versions")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    lake = _open(args.lake)
    if args.history:
        return _history(lake, args.history, args.limit, args.json)
    rows = lake.status()
    if args.json:
        print(json.dumps({"lake": lake.uri, "tables": rows}, indent=1, default=str))
        return 0
    if not rows:
        print(f"{lake.uri}: no tables")
        return 0
    print(f"{'table':<24} {'versions':>8} {'latest':>6} {'rows':>10}  {'committed':<25} producer")
    for r in rows:
        producer = ", ".join(f"{k}={v}" for k, v in r["producer"].items() if not isinstance(v, (dict, list)))
        print(f"{r['table']:<24} {r['versions']:>8} {_s(r['latest']):>6} {_s(r['rows']):>10}  "
              f"{r['created_at']:<25} {producer}")
        if r.get("error"):
            print(f"{'':<24} DAMAGED: {r['error']}")
    return 1 if any(r.get("error") for r in rows) else 0


def _history(lake, table: str, limit: int | None, as_json: bool) -> int:
    records = lake.history(table, limit=limit)
    if as_json:
        print(json.dumps([r.__dict__ for r in records], indent=1, default=str))
        return 0
    print(f"{'version':>7} {'committed':<25} {'operation':<13} {'mode':<9} {'rows':>10} {'added':>8}  producer / reads")
    for r in records:
        producer = ", ".join(f"{k}={v}" for k, v in r.producer.items() if not isinstance(v, (dict, list)))
        reads = (" reads " + ", ".join(f"{k}@v{v}" for k, v in r.reads.items())) if r.reads else ""
        print(f"{r.version:>7} {r.created_at:<25} {r.operation:<13} {r.mode:<9} {r.rows:>10} {r.added_rows:>8}  "
              f"{producer}{reads}")
    return 0


def _s(value) -> str:
    return "?" if value is None else str(value)


# ---- show: read a table at a version -----------------------------------------------------

def _add_show(sub) -> None:
    p = sub.add_parser("show", help="print rows of a table, at its latest or any retained version (time travel)")
    _lake(p)
    p.add_argument("table", help="table name, e.g. pool, profiles, manifests/lowres")
    p.add_argument("--version", type=int, help="the version to read (see `curate status LAKE --history TABLE`)")
    p.add_argument("--limit", type=int, default=10, help="rows to print (default 10)")
    p.add_argument("--columns", help="comma-separated columns (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    lake = _open(args.lake)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    known = lake.dataset(args.table, args.version).schema.names
    unknown = [c for c in columns or [] if c not in known]
    if unknown:
        raise ValueError(f"--columns: {unknown} not in {args.table!r} (columns: {known})")
    rows = lake.read(args.table, columns=columns, version=args.version).slice(0, args.limit).to_pylist()
    for row in rows:
        if args.json:
            print(json.dumps(row, default=str, ensure_ascii=False))
        else:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


# ---- vacuum ---------------------------------------------------------------------------------

def _add_vacuum(sub) -> None:
    p = sub.add_parser("vacuum", help="delete data files no retained version needs (keeps every version an export read) "
                                        "and lake shards no pool row points at")
    _lake(p)
    p.add_argument("--retention-hours", type=float, default=None,
                   help="keep files removed (or orphaned by a killed run) less than this long ago (default: the "
                        "spec's nightly.retention_hours, else 168 = 7 days; >= 1)")
    p.add_argument("--spec", help="a job spec whose `nightly.retention_hours` sets the retention (jobs/nightly.yaml)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_vacuum)


def _vacuum(args: argparse.Namespace) -> int:
    retention = args.retention_hours
    if retention is None and args.spec:
        from curation.config.spec import load_spec

        retention = load_spec(args.spec).nightly.retention_hours
    lake = _open(args.lake)
    pins = lake.pinned_versions()
    removed = lake.vacuum(168.0 if retention is None else retention, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "files": removed,
                          "kept_versions": {k: sorted(v) for k, v in pins.items()}}, indent=1))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for table, files in removed.items():
        kept = f" (kept versions read by exports: {sorted(pins[table])})" if table in pins else ""
        print(f"{table}: {verb} {len(files)} file(s){kept}")
    return 0


# ---- migrate --------------------------------------------------------------------------------

def _add_migrate(sub) -> None:
    p = sub.add_parser("migrate", help="convert a lake in the pre-Delta layout to Delta tables (old files moved to _legacy/)")
    _lake(p)
    p.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from curation.storage.migrate import migrate

    _open(args.lake, allow_legacy=True)
    outcome = migrate(args.lake)
    if not outcome:
        print(f"{args.lake}: nothing to migrate (already Delta tables)")
    for table, result in outcome.items():
        if "error" in result:
            print(f"{table}: NOT migrated: {result['error']}")
        else:
            print(f"{table}: {result['rows']} rows from legacy version {result['legacy_version']}; "
                  f"old files in {result['moved_to']}")
    return 1 if any("error" in r for r in outcome.values()) else 0


LAKE_COMMANDS = [_add_status, _add_show, _add_vacuum, _add_migrate]
