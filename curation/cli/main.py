"""`curate`: the command line.

    curate demo [--workdir DIR] [--images N]
    curate ingest LAKE SOURCE [--source NAME] [--uri-column COL]
    curate profile LAKE [--spec SPEC] [--operators a,b,...] [--max-pixels N]
    curate score LAKE [--spec SPEC]
    curate dedup LAKE [--spec SPEC]
    curate search LAKE (--text T | --image PATH) [-k N] [--encoder NAME] [--json]
    curate prune LAKE (--text T | --image PATH)... --reason R [--min-similarity S] [--apply]
    curate export LAKE --stage NAME [--out DIR] [--spec SPEC]
    curate kg build LAKE (--xml DUMP | --page DUMP --pagelinks DUMP [--linktarget DUMP] [--redirect DUMP])
                         [--pagerank-percentile P] [--min-pagerank S] [--judgments FILE] [--no-rules]
    curate kg augment LAKE [--prompts FILE] [--trending FILE] [--levels K1,K2,...]
    curate kg weights LAKE
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

from curation.config.typed import ConfigError


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

    p = sub.add_parser("dedup", help="semantic dedup: k-NN graph, Leiden communities, one decision per item")
    p.add_argument("lake")
    _runtime_args(p)

    for name, text in (("search", "cross-modal search: items nearest to a text or an image"),
                       ("prune", "list (and with --apply record the removal of) communities hit by failure queries")):
        p = sub.add_parser(name, help=text)
        p.add_argument("lake")
        p.add_argument("--text", action="append", default=[], help="a text query (repeatable for prune)")
        p.add_argument("--image", action="append", default=[], help="an image path/uri query (repeatable for prune)")
        p.add_argument("-k", type=int, default=10 if name == "search" else 50, help="neighbours per query")
        p.add_argument("--encoder", help="embeddings/<encoder> to search (default: the only one)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        _runtime_args(p)
        if name == "prune":
            p.add_argument("--reason", required=True, help="recorded with every removal")
            p.add_argument("--min-similarity", type=float, default=0.3, help="hits below this are ignored")
            p.add_argument("--level", type=int, default=0, help="community level (community_l<level>)")
            p.add_argument("--apply", action="store_true", help="record the removals (default: only list them)")

    p = sub.add_parser("export", help="apply a stage's rules and dedup, write its Parquet manifest")
    p.add_argument("lake")
    p.add_argument("--stage", required=True, help="stage name defined in the spec")
    p.add_argument("--out", help="also write manifest.parquet and _manifest.json to this directory")
    _runtime_args(p)

    kg = sub.add_parser("kg", help="world knowledge graph: build from Wikipedia dumps, augment, sample weights")
    kg_sub = kg.add_subparsers(dest="kg_command", required=True)
    p = kg_sub.add_parser("build", help="Wikipedia dumps -> articles, links, aliases, PageRank, pruning -> kg_nodes/kg_edges")
    p.add_argument("lake")
    p.add_argument("--xml", help="pages-articles XML export (.xml, .xml.gz, .xml.bz2)")
    for table in ("page", "pagelinks", "linktarget", "redirect"):
        p.add_argument(f"--{table}", help=f"the `{table}` SQL dump (.sql, .sql.gz, .sql.bz2)")
    p.add_argument("--pagerank-percentile", type=float, help="drop articles below this PageRank percentile (e.g. 10)")
    p.add_argument("--min-pagerank", type=float, help="drop articles with PageRank below this (scores sum to 1)")
    p.add_argument("--judgments", help="generatability judgments file (CSV / JSONL / Parquet: title, generatable[, reason])")
    p.add_argument("--no-rules", action="store_true", help="skip the title rules (disambiguation, lists, years, dates)")
    p.add_argument("--spec", help="job spec YAML with a `kg:` section (command-line options override it)")
    p = kg_sub.add_parser("augment", help="taxonomy from the pool's tags, prompt-log boosts, trending concepts")
    p.add_argument("lake")
    p.add_argument("--prompts", help="prompt log: text (one per line) or Parquet/CSV/JSONL with a `prompt` column")
    p.add_argument("--trending", help="trending concepts: one per line, optional tab + boost factor")
    p.add_argument("--levels", help="taxonomy clusters per level, bottom-up, e.g. 64,8")
    p.add_argument("--spec", help="job spec YAML with a `kg:` section")
    p = kg_sub.add_parser("weights", help="one BM25 x hierarchy sampling weight per pool item -> `weights`")
    p.add_argument("lake")
    p.add_argument("--spec", help="job spec YAML with a `kg:` section")

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
    from curation.storage.lake import Lake

    if args.command == "status":
        return _status(Lake(args.lake), args.json)

    from curation.config.spec import JobSpec, StepSpec, load_spec

    if args.command == "demo":
        return _demo(args)
    if args.command in ("search", "prune"):
        return _search(args, load_spec(args.spec))
    if args.command == "kg":
        return _kg(args, load_spec(args.spec))
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
        elif args.command in ("score", "dedup"):
            spec.steps = [StepSpec(args.command)]
        elif args.command == "export":
            spec.steps = [StepSpec("export", stage=args.stage, out=args.out)]
    from curation.steps.run import run_job

    run_job(spec)
    return 0


def _kg(args: argparse.Namespace, spec) -> int:
    from curation.steps.run import run_job
    from curation.config.spec import StepSpec

    spec.lake = args.lake
    if args.kg_command == "build":
        b = spec.kg.build
        if args.xml or args.page or args.pagelinks:
            b.xml, b.page, b.pagelinks = args.xml, args.page, args.pagelinks
            b.linktarget, b.redirect = args.linktarget, args.redirect
        overrides = {key: value for key, value in (("pagerank_percentile", args.pagerank_percentile),
                                                   ("min_pagerank", args.min_pagerank),
                                                   ("judgments_file", args.judgments)) if value is not None}
        if args.no_rules:
            overrides["rules"] = False
        b.prune = dataclasses.replace(b.prune, **overrides)  # replace() validates the new values
    elif args.kg_command == "augment":
        a = spec.kg.augment
        a.prompts = args.prompts or a.prompts
        a.trending = args.trending or a.trending
        if args.levels:
            a.taxonomy = dataclasses.replace(a.taxonomy, levels=[int(k) for k in args.levels.split(",") if k.strip()])
    spec.steps = [StepSpec(f"kg-{args.kg_command}")]
    spec.validate()
    run_job(spec)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from curation.steps.run import run_job
    from curation.config.spec import load_spec, packaged_spec_path
    from curation.demo import make_demo_corpus
    from curation.demo.wiki import write_demo_wiki

    workdir = os.path.abspath(args.workdir)
    corpus_dir = os.path.join(workdir, "corpus")
    if os.path.isdir(corpus_dir):
        print(f"demo corpus exists: {corpus_dir} (reusing it)")
    else:
        t0 = time.perf_counter()
        info = make_demo_corpus(corpus_dir, n_images=args.images, seed=0)
        print(f"demo corpus: {len(info.files)} files in {corpus_dir} ({time.perf_counter() - t0:.1f}s), "
              f"planted: " + ", ".join(f"{k}={len(v)}" for k, v in info.planted.items()))
    write_demo_wiki(os.path.join(workdir, "wiki"))
    os.environ["CURATE_DEMO_DIR"] = workdir
    spec = load_spec(packaged_spec_path("demo.yaml"))
    spec.runtime = dataclasses.replace(spec.runtime, address=args.address, num_cpus=args.num_cpus)
    summaries = run_job(spec)
    manifest = summaries[-1].notes.get("manifest")
    print(f"\nlake: {spec.lake}\nmanifest: {manifest}\ninspect: curate status {spec.lake}")
    return 0


def _search(args: argparse.Namespace, spec) -> int:
    from curation.storage.lake import Lake
    from curation.steps.vectors.search import VectorSearch, prune

    queries = [("text", t) for t in args.text] + [("image", p) for p in args.image]
    if not queries or (args.command == "search" and len(queries) != 1):
        raise ValueError("give one --text or --image" if args.command == "search" else "give --text and/or --image queries")
    search = VectorSearch.open(Lake(args.lake), spec.score.encoders, name=args.encoder)
    if args.command == "search":
        kind, value = queries[0]
        table = search.text(value, args.k) if kind == "text" else search.image(value, args.k)
    else:
        table = prune(search, queries, k=args.k, min_similarity=args.min_similarity, level=args.level,
                      reason=args.reason, apply=args.apply)
    rows = table.to_pylist()
    if args.json:
        print(json.dumps(rows, indent=1, default=str, ensure_ascii=False))
        return 0
    for r in rows:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if args.command == "prune":
        communities = sorted({r["community"] for r in rows})
        verb = "recorded as removals" if args.apply else "would be removed (add --apply to record)"
        print(f"{len(rows)} items in {len(communities)} communities {verb}; reason: {args.reason!r}")
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
