"""`curate`: the command line.

    curate demo [--workdir DIR] [--images N]
    curate ingest LAKE SOURCE [--source NAME] [--uri-column COL]
    curate profile LAKE [--spec SPEC] [--operators a,b,...] [--max-pixels N]
    curate score LAKE [--spec SPEC]
    curate export LAKE --stage NAME [--out DIR] [--spec SPEC]
    curate status LAKE [--json]
    curate run SPEC

Every command that computes takes --address (a Ray cluster; default: RAY_ADDRESS or an
embedded local Ray) and --num-cpus (embedded Ray only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

from curation.configtools import ConfigError


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: RAY_ADDRESS or embedded")
    p.add_argument("--num-cpus", type=int, help="CPUs for an embedded local Ray (default: all)")
    p.add_argument("--spec", help="job spec YAML for step options and stages (default: packaged jobs/profile.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Text-to-image data curation on Ray Data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate a small corpus offline and run ingest -> profile -> export")
    p.add_argument("--workdir", default="./curate-demo", help="where corpus/, lake/ and export/ go")
    p.add_argument("--images", type=int, default=120, help="generated images (plus planted bad files)")
    _runtime_args(p)

    p = sub.add_parser("ingest", help="add a source's images to the lake's pool")
    p.add_argument("lake", help="lake root: a path or pyarrow.fs URI (s3://bucket/lake)")
    p.add_argument("source", help="image directory, table (.parquet/.csv/.jsonl) or WebDataset .tar shard(s)")
    p.add_argument("--source", dest="name", help="source name recorded per item (default: the source's basename)")
    p.add_argument("--uri-column", help="table sources: the column with image uris (default: auto-detect)")
    _runtime_args(p)

    p = sub.add_parser("profile", help="compute profile features for pool items not yet profiled")
    p.add_argument("lake")
    p.add_argument("--operators", help="comma-separated operator names (default: the spec's)")
    p.add_argument("--max-pixels", type=int, help="reject headers above this many pixels before decoding")
    _runtime_args(p)

    p = sub.add_parser("score", help="embeddings, model heads and image-caption alignment (the spec's `score:` section)")
    p.add_argument("lake")
    _runtime_args(p)

    p = sub.add_parser("export", help="apply a stage's rules and dedup, write its Parquet manifest")
    p.add_argument("lake")
    p.add_argument("--stage", required=True, help="stage name defined in the spec")
    p.add_argument("--out", help="also write manifest.parquet and _manifest.json to this directory")
    _runtime_args(p)

    p = sub.add_parser("status", help="list the lake's tables, versions, row counts and producers")
    p.add_argument("lake")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("run", help="run a job spec's steps")
    p.add_argument("spec_path", metavar="SPEC", help="job spec YAML (e.g. jobs/profile.yaml)")
    p.add_argument("--address", help="Ray cluster address; overrides the spec's runtime.address")
    p.add_argument("--num-cpus", type=int, help="CPUs for an embedded local Ray")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from curation.lake import Lake

    if args.command == "status":
        return _status(Lake(args.lake), args.json)

    from curation.spec import JobSpec, StepSpec, load_spec

    if args.command == "demo":
        return _demo(args)
    spec: JobSpec = load_spec(args.spec_path if args.command == "run" else args.spec)
    spec.runtime = dataclasses.replace(spec.runtime, address=args.address or spec.runtime.address,
                                       num_cpus=args.num_cpus or spec.runtime.num_cpus)
    if args.command != "run":
        spec.lake = args.lake
        if args.command == "ingest":
            spec.steps = [StepSpec("ingest", source=args.source, name=args.name, uri_column=args.uri_column)]
        elif args.command == "profile":
            if args.operators:
                spec.profile.operators = [o.strip() for o in args.operators.split(",") if o.strip()]
            if args.max_pixels:
                spec.profile.max_pixels = args.max_pixels
            spec.steps = [StepSpec("profile")]
        elif args.command == "score":
            spec.steps = [StepSpec("score")]
        elif args.command == "export":
            spec.steps = [StepSpec("export", stage=args.stage, out=args.out)]
    from curation.pipeline import run_job

    run_job(spec)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from curation.pipeline import run_job
    from curation.spec import load_spec, packaged_spec_path
    from curation.synth import make_demo_corpus

    workdir = os.path.abspath(args.workdir)
    corpus_dir = os.path.join(workdir, "corpus")
    if os.path.isdir(corpus_dir):
        print(f"demo corpus exists: {corpus_dir} (reusing it)")
    else:
        t0 = time.perf_counter()
        info = make_demo_corpus(corpus_dir, n_images=args.images, seed=0)
        print(f"demo corpus: {len(info.files)} files in {corpus_dir} ({time.perf_counter() - t0:.1f}s), "
              f"planted: " + ", ".join(f"{k}={len(v)}" for k, v in info.planted.items()))
    os.environ["CURATE_DEMO_DIR"] = workdir
    spec = load_spec(packaged_spec_path("demo.yaml"))
    spec.runtime = dataclasses.replace(spec.runtime, address=args.address, num_cpus=args.num_cpus)
    summaries = run_job(spec)
    manifest = summaries[-1].notes.get("manifest")
    print(f"\nlake: {spec.lake}\nmanifest: {manifest}\ninspect: curate status {spec.lake}")
    return 0


def _status(lake, as_json: bool) -> int:
    rows = lake.status()
    if as_json:
        print(json.dumps({"lake": lake.uri, "tables": rows}, indent=1, default=str))
        return 0
    if not rows:
        print(f"{lake.uri}: no tables")
        return 0
    print(f"{'table':<24} {'versions':>8} {'latest':>6} {'rows':>10}  {'committed':<25} producer")
    for r in rows:
        producer = ", ".join(f"{k}={v}" for k, v in r["producer"].items() if not isinstance(v, dict))
        print(f"{r['table']:<24} {r['versions']:>8} {r['latest']:>6} {r['rows']:>10}  {r['created_at']:<25} {producer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
