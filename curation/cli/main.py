"""`curate`: the command line.

    curate demo [--workdir DIR] [--images N]
    curate ingest LAKE SOURCE... [--source NAME] [--uri-column COL] [--image-column COL] [--follow-symlinks]
    curate profile LAKE [--spec SPEC] [--operators a,b,...] [--max-pixels N]
    curate score LAKE [--spec SPEC]
    curate dedup LAKE [--spec SPEC]
    curate search LAKE (--text T | --image PATH) [-k N] [--encoder NAME] [--json]
    curate prune LAKE (--text T | --image PATH)... --reason R [--min-similarity S] [--apply]
    curate export LAKE --stage NAME [--out DIR] [--epoch E] [--size N] [--seed K] [--spec SPEC]
    curate sample LAKE --stage NAME [--out DIR] [--epoch E] [--size N] [--seed K] [--spec SPEC]
    curate kg build LAKE (--xml DUMP | --page DUMP --pagelinks DUMP [--linktarget DUMP] [--redirect DUMP])
                         [--pagerank-percentile P] [--min-pagerank S] [--judgments FILE] [--no-rules]
    curate kg augment LAKE [--prompts FILE] [--trending FILE] [--levels K1,K2,...]
    curate kg weights LAKE
    curate status LAKE [--json]
    curate run SPEC

Commands whose steps run on Ray take --address (a Ray cluster; default: RAY_ADDRESS or an
embedded local Ray) and --num-cpus (embedded Ray only); the knowledge-graph commands, search and
prune run in this process and take neither. Every step command takes --spec (stages and step
options; default: the packaged jobs/profile.yaml) and --set KEY=VALUE (any spec key, e.g.
`--set profile.batch_size=8`). A step registered in `curation.steps.registry` without a command
of its own below gets a generic one: `curate <step> LAKE [--spec SPEC] [--set KEY=VALUE]`.

Configuration problems (YAML syntax, duplicate keys, unknown keys, values out of range, unknown
steps / operators / stages, missing inputs or model files, a lake path that cannot be used) are
found before Ray starts and before anything is written; they print one line naming the file,
line or key and exit with status 2 (-v also prints the traceback). An embedded Ray that does not
start (Ray's fixed 30 s wait for its node ran out `runtime.start_attempts` times on a busy
machine; each half-started instance is stopped first) prints one line and exits 1.

Adding a subcommand: write `_add_<name>(sub)` that adds its parser and sets `handler=` (a
function of the parsed args returning the exit status), and append it to COMMANDS. Step
commands build their overrides as dotted keys and go through `curation.steps.run.run_step`
(`dataclasses.replace` with the same checks as the YAML; nothing is mutated in place).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from curation.cli.lake import LAKE_COMMANDS
from curation.config.typed import ConfigError
from curation.runtime import RayStartError

log = logging.getLogger("curate")


# --------------------------------------------------------------------------- shared arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. profile.batch_size=8), got {text!r}")
    from curation.config.yamlfile import load_yaml

    try:
        parsed, _ = load_yaml(value, f"--set {key}")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return key.strip(), parsed


def _lake_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("lake", help="lake root: a path or pyarrow.fs URI (s3://bucket/lake)")


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: RAY_ADDRESS or embedded")
    p.add_argument("--num-cpus", type=int, help="CPUs for an embedded local Ray (default: all)")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="job spec YAML for step options and stages (default: packaged jobs/profile.yaml)")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", type=_key_value, default=[],
                   help="set a spec key (dotted path, YAML value), e.g. profile.batch_size=8; repeatable")


def _runtime_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--address / --num-cpus as spec overrides (given ones only: 0 is checked, not ignored)."""
    out = {}
    if getattr(args, "address", None) is not None:
        out["runtime.address"] = args.address
    if getattr(args, "num_cpus", None) is not None:
        out["runtime.num_cpus"] = args.num_cpus
    return out


def _step_parser(sub, command: str, step: str, help: str | None = None) -> argparse.ArgumentParser:
    """A parser for a command that runs registered step `step` on a LAKE: --spec, --set, and
    the Ray options when the step needs Ray."""
    from curation.steps import registry

    entry = registry.get(step)
    p = sub.add_parser(command, help=help or entry.help)
    _lake_arg(p)
    _spec_args(p)
    if entry.needs_ray:
        _ray_args(p)
    p.set_defaults(step=step)
    return p


def _run_step_command(args: argparse.Namespace, options: dict[str, Any] | None = None,
                      overrides: dict[str, Any] | None = None) -> int:
    from curation.config.spec import load_spec
    from curation.steps.run import run_step

    spec = load_spec(args.spec)
    changes = {**dict(args.sets), **_runtime_overrides(args), **(overrides or {})}
    run_step(args.lake, args.step, spec, overrides=changes, printer=print, **(options or {}))
    return 0


# --------------------------------------------------------------------------- commands


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate a small corpus offline and run the demo job (jobs/demo.yaml)")
    p.add_argument("--workdir", default="./curate-demo", help="where corpus/, lake/ and export/ go")
    p.add_argument("--images", type=int, default=120, help="generated images (plus planted bad files)")
    _ray_args(p)
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from curation.demo.run import Demo

    Demo(args.workdir, images=args.images, overrides=_runtime_overrides(args)).run()
    return 0


def _add_ingest(sub) -> None:
    p = _step_parser(sub, "ingest", "ingest")
    p.add_argument("source", nargs="+", metavar="SOURCE",
                   help="image directory, table (.parquet/.arrow/.csv/.jsonl: of uris or URLs, or with the images "
                        "inside), Hugging Face dataset folder or WebDataset .tar shard(s); several "
                        "may be given, and each may be a pattern: 'shards/{00000..00099}.tar', "
                        "'shards/*.tar', 'imgs/**/*.jpg', local or on a URI (s3://...)")
    p.add_argument("--source", dest="name", help="source name recorded per item (default: the source's basename)")
    p.add_argument("--uri-column", help="table sources: the column with image uris (default: auto-detect)")
    p.add_argument("--image-column", help="Parquet / Arrow sources: the column with the image bytes, binary or a "
                                          "Hugging Face Image struct (default: auto-detect)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="directory sources: also follow links that resolve outside the source directory "
                        "(default: such links become rows with an error)")
    p.set_defaults(handler=lambda a: _run_step_command(
        a, options={"source": a.source[0] if len(a.source) == 1 else a.source, "name": a.name,
                    "uri_column": a.uri_column, "image_column": a.image_column},
        overrides={"ingest.follow_symlinks": True} if a.follow_symlinks else None))


def _add_profile(sub) -> None:
    p = _step_parser(sub, "profile", "profile")
    p.add_argument("--operators", help="comma-separated operator names (default: the spec's)")
    p.add_argument("--max-pixels", type=int, help="reject headers above this many pixels before decoding")

    def run(a: argparse.Namespace) -> int:
        overrides: dict[str, Any] = {}
        if a.operators is not None:
            overrides["profile.operators"] = [o.strip() for o in a.operators.split(",") if o.strip()]
        if a.max_pixels is not None:
            overrides["profile.max_pixels"] = a.max_pixels
        return _run_step_command(a, overrides=overrides)

    p.set_defaults(handler=run)


def _add_score(sub) -> None:
    _step_parser(sub, "score", "score", "embeddings, model heads and image-caption alignment "
                 "(the spec's `score:` section)").set_defaults(handler=_run_step_command)


def _add_dedup(sub) -> None:
    _step_parser(sub, "dedup", "dedup").set_defaults(handler=_run_step_command)


def _add_search_prune(sub) -> None:
    for name, text in (("search", "cross-modal search: items nearest to a text or an image"),
                       ("prune", "list (and with --apply record the removal of) communities hit by failure queries")):
        p = sub.add_parser(name, help=text)
        _lake_arg(p)
        p.add_argument("--text", action="append", default=[], help="a text query (repeatable for prune)")
        p.add_argument("--image", action="append", default=[], help="an image path/uri query (repeatable for prune)")
        p.add_argument("-k", type=_positive_int, default=10 if name == "search" else 50, help="neighbours per query")
        p.add_argument("--encoder", help="embeddings/<encoder> to search (default: the only one)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--spec", help="job spec YAML whose `score.encoders` embed the queries")
        if name == "prune":
            p.add_argument("--reason", required=True, help="recorded with every removal")
            p.add_argument("--min-similarity", type=float, default=0.3, help="hits below this are ignored")
            p.add_argument("--level", type=int, default=0, help="community level (community_l<level>)")
            p.add_argument("--apply", action="store_true", help="record the removals (default: only list them)")
        p.set_defaults(handler=_search)


def _search(args: argparse.Namespace) -> int:
    from curation.config.spec import check_name, load_spec
    from curation.storage.location import check_input, check_lake

    queries = [("text", t) for t in args.text] + [("image", p) for p in args.image]
    if not queries or (args.command == "search" and len(queries) != 1):
        raise ConfigError("give one --text or --image" if args.command == "search" else "give --text and/or --image queries")
    if args.encoder is not None:
        check_name(args.encoder, "--encoder", "encoder")
    for _, path in (q for q in queries if q[0] == "image"):
        check_input(path, "--image")
    spec = load_spec(args.spec)
    check_lake(args.lake, create=False)  # the lake must be there (with embeddings)
    if getattr(args, "apply", False):
        check_lake(args.lake, create=True)  # prune --apply writes `removals`: writable too

    from curation.steps.vectors.search import VectorSearch, prune
    from curation.storage.lake import Lake

    search = VectorSearch.open(Lake(args.lake, create=False), spec.score.encoders, name=args.encoder)
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


def _stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", required=True, help="stage name defined in the spec")
    p.add_argument("--epoch", type=int, default=None, help="epoch to draw (default 0); with the seed it fixes the draw")
    p.add_argument("--size", type=_positive_int, help="items to draw (default: the stage's sample.size, else "
                                                      "as many as the mixture allows without repeats)")
    p.add_argument("--seed", type=int, help="seed (default: the stage's sample.seed)")


def _stage_options(a: argparse.Namespace) -> dict[str, Any]:
    return {"stage": a.stage, "out": a.out, "epoch": a.epoch, "size": a.size, "seed": a.seed}


def _add_export(sub) -> None:
    p = _step_parser(sub, "export", "export")
    _stage_args(p)
    p.add_argument("--out", help="also write manifest.parquet, the sample, the batch plan and _manifest.json here")
    p.set_defaults(handler=lambda a: _run_step_command(a, options=_stage_options(a)))


def _add_sample(sub) -> None:
    p = _step_parser(sub, "sample", "sample")
    _stage_args(p)
    p.add_argument("--out", help="write samples-e<epoch>.parquet and batches-e<epoch>.parquet here "
                                 "(default: the manifest's export directory in the lake)")
    p.set_defaults(handler=lambda a: _run_step_command(a, options=_stage_options(a)))


def _add_kg(sub) -> None:
    kg = sub.add_parser("kg", help="world knowledge graph: build from Wikipedia dumps, augment, sample weights")
    kg_sub = kg.add_subparsers(dest="kg_command", required=True)

    p = _step_parser(kg_sub, "build", "kg-build",
                     "Wikipedia dumps -> articles, links, aliases, PageRank, pruning -> kg_nodes/kg_edges")
    p.add_argument("--xml", help="pages-articles XML export (.xml, .xml.gz, .xml.bz2)")
    for table in ("page", "pagelinks", "linktarget", "redirect"):
        p.add_argument(f"--{table}", help=f"the `{table}` SQL dump (.sql, .sql.gz, .sql.bz2)")
    p.add_argument("--pagerank-percentile", type=float, help="drop articles below this PageRank percentile (e.g. 10)")
    p.add_argument("--min-pagerank", type=float, help="drop articles with PageRank below this (scores sum to 1)")
    p.add_argument("--judgments", help="generatability judgments file (CSV / JSONL / Parquet: title, generatable[, reason])")
    p.add_argument("--no-rules", action="store_true", help="skip the title rules (disambiguation, lists, years, dates)")
    p.set_defaults(handler=_kg_build)

    p = _step_parser(kg_sub, "augment", "kg-augment")
    p.add_argument("--prompts", help="prompt log: text (one per line) or Parquet/CSV/JSONL with a `prompt` column")
    p.add_argument("--trending", help="trending concepts: one per line, optional tab + boost factor")
    p.add_argument("--levels", type=_int_list, help="taxonomy clusters per level, bottom-up, e.g. 64,8")

    def augment(a: argparse.Namespace) -> int:
        overrides = {key: value for key, value in (("kg.augment.prompts", a.prompts), ("kg.augment.trending", a.trending),
                                                   ("kg.augment.taxonomy.levels", a.levels)) if value is not None}
        return _run_step_command(a, overrides=overrides)

    p.set_defaults(handler=augment)

    _step_parser(kg_sub, "weights", "kg-weights").set_defaults(handler=_run_step_command)


def _kg_build(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.xml or args.page or args.pagelinks:  # dumps on the command line replace the spec's
        overrides.update({f"kg.build.{k}": getattr(args, k) for k in ("xml", "page", "pagelinks", "linktarget", "redirect")})
    for key, value in (("pagerank_percentile", args.pagerank_percentile), ("min_pagerank", args.min_pagerank),
                       ("judgments_file", args.judgments)):
        if value is not None:
            overrides[f"kg.build.prune.{key}"] = value
    if args.no_rules:
        overrides["kg.build.prune.rules"] = False
    return _run_step_command(args, overrides=overrides)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a job spec's steps")
    p.add_argument("spec_path", metavar="SPEC", help="job spec YAML (e.g. jobs/profile.yaml)")
    p.add_argument("--address", help="Ray cluster address; overrides the spec's runtime.address")
    p.add_argument("--num-cpus", type=int, help="CPUs for an embedded local Ray")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", type=_key_value, default=[],
                   help="set a spec key (dotted path, YAML value), e.g. lake=/data/lake; repeatable")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from curation.config.spec import load_spec
    from curation.config.typed import override
    from curation.steps.run import run_job

    spec = override(load_spec(args.spec_path), {**dict(args.sets), **_runtime_overrides(args)})
    run_job(spec)
    return 0


def _add_pairs(sub) -> None:
    p = sub.add_parser("pairs", help="edit pairs: from expert edits, from video frames, or rendered text edits")
    _lake_arg(p)
    p.add_argument("--from", dest="origin", nargs="+", required=True, metavar="KIND",
                   help="'experts DIR' (group folders or a table), 'video SRC' (video files, a folder or a "
                        "pattern) or 'render' (text drawn on pool images); several sources may follow")
    p.add_argument("--n", type=_positive_int, help="render: pairs 0..N-1 of the seed (default pairs.render.n)")
    p.add_argument("--seed", type=int, help="render: seed of every choice (default pairs.render.seed)")
    p.add_argument("--name", help="source name recorded in the pool for the pair images")
    _spec_args(p)
    _ray_args(p)

    def run(a: argparse.Namespace) -> int:
        kind, sources = a.origin[0], a.origin[1:]
        if kind not in ("experts", "video", "render"):
            raise ConfigError(f"--from: unknown kind {kind!r}; use experts DIR, video SRC or render", "--from")
        if kind == "render" and sources:
            raise ConfigError("--from render takes no source (backgrounds come from the pool)", "--from")
        if kind != "render" and (a.n is not None or a.seed is not None):
            raise ConfigError("--n and --seed apply to --from render only", "--n")
        a.step = f"pairs-{kind}"
        options = {"name": a.name}
        if sources:
            options["source"] = sources[0] if len(sources) == 1 else sources
        overrides = {"pairs.render.n": a.n} if a.n is not None else {}
        if a.seed is not None:
            options["seed"] = a.seed
        return _run_step_command(a, options=options, overrides=overrides)

    p.set_defaults(handler=run)


def _add_hardcases(sub) -> None:
    p = _step_parser(sub, "hardcases", "hardcases")
    p.add_argument("--prompts", help="failure prompts: .txt (one per line) or .jsonl ({prompt | image, action: "
                                     "report | prune | boost | fill, reason, tags})")
    p.add_argument("--images", help="a directory of failure images (each a query)")
    p.add_argument("--run-id", help="the mining run's id (default: the UTC time); a rerun of an id changes nothing")

    def run(a: argparse.Namespace) -> int:
        overrides = {f"hardcases.{k}": v for k, v in (("prompts", a.prompts), ("images", a.images),
                                                      ("run_id", a.run_id)) if v is not None}
        return _run_step_command(a, overrides=overrides)

    p.set_defaults(handler=run)


def _add_review(sub) -> None:
    review = sub.add_parser("review", help="the review queue: propose, export / import (Label Studio), apply, dataset")
    rsub = review.add_subparsers(dest="review_command", required=True)

    def run_id_arg(p):
        p.add_argument("--run-id", help="the review run (default for propose: the UTC time; export: every run)")

    p = _step_parser(rsub, "propose", "review-propose")
    run_id_arg(p)
    p.set_defaults(handler=lambda a: _run_step_command(
        a, overrides={"review.run_id": a.run_id} if a.run_id else None))
    p = _step_parser(rsub, "export", "review-export")
    p.add_argument("--to", choices=["labelstudio"], default="labelstudio", help="the annotation tool's format")
    p.add_argument("out", metavar="OUT.json", help="tasks file; the labelling config goes to OUT.xml, images to images/")
    run_id_arg(p)
    p.set_defaults(handler=lambda a: _run_step_command(
        a, options={"out": a.out}, overrides={"review.run_id": a.run_id} if a.run_id else None))
    p = _step_parser(rsub, "import", "review-import")
    p.add_argument("export", metavar="EXPORT.json", help="Label Studio's JSON export of the project")
    p.set_defaults(handler=lambda a: _run_step_command(a, options={"source": a.export}))
    _step_parser(rsub, "apply", "review-apply").set_defaults(handler=_run_step_command)
    p = rsub.add_parser("dataset", help="the human-approved items as a Parquet training set (captioner / reward model)")
    _lake_arg(p)
    p.add_argument("out", metavar="OUT.parquet")
    p.set_defaults(handler=_review_dataset)


def _review_dataset(args: argparse.Namespace) -> int:
    from curation.steps.review.apply import training_set
    from curation.storage.lake import Lake
    from curation.storage.location import check_lake

    check_lake(args.lake, create=False)
    notes = training_set(Lake(args.lake), args.out)
    print(f"{notes['rows']} labelled items -> {notes['out']}")
    return 0


def _add_nightly(sub) -> None:
    p = sub.add_parser("nightly", help="the night's steps as one run: recorded in `runs`, a finished run id is a "
                                       "no-op, a failed or killed one resumes; exit 0 / 1 failed / 3 locked")
    _lake_arg(p)
    p.add_argument("--spec", required=True, help="the night's job spec (its steps, in order): e.g. jobs/nightly.yaml")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", type=_key_value, default=[],
                   help="set a spec key (dotted path, YAML value); repeatable")
    p.add_argument("--run-id", help="the run's id (default: nightly.run_id, else the UTC date YYYY-MM-DD)")
    _ray_args(p)
    p.set_defaults(handler=_nightly)


def _nightly(args: argparse.Namespace) -> int:
    from curation.config.spec import load_spec
    from curation.config.typed import override
    from curation.steps.nightly.night import nightly

    spec = override(load_spec(args.spec), {**dict(args.sets), **_runtime_overrides(args), "lake": args.lake})
    return nightly(spec, args.run_id).exit_code


def _add_generic_steps(sub) -> None:
    """A command for every registered step that has none of its own above."""
    from curation.steps import registry

    for entry in registry.steps():
        if entry.name not in _STEPS_WITH_COMMANDS:
            _step_parser(sub, entry.name, entry.name).set_defaults(handler=_run_step_command)


_STEPS_WITH_COMMANDS = {"ingest", "profile", "score", "dedup", "export", "sample", "kg-build", "kg-augment",
                        "kg-weights", "pairs-experts", "pairs-video", "pairs-render", "hardcases", "review-propose",
                        "review-export", "review-import", "review-apply"}

COMMANDS: list[Callable[[Any], None]] = [
    _add_demo, _add_ingest, _add_profile, _add_score, _add_dedup, _add_search_prune, _add_export, _add_sample,
    _add_kg, _add_pairs, _add_hardcases, _add_review, _add_nightly, *LAKE_COMMANDS, _add_run, _add_generic_steps,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Text-to-image data curation on Ray Data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


# --------------------------------------------------------------------------- entry point


def _is_user_error(exc: BaseException) -> bool:
    """Problems with what the user gave (spec, options, paths, lake): one line, exit 2."""
    if isinstance(exc, (ConfigError, ValueError, FileNotFoundError)):
        return True
    lake_module = sys.modules.get("curation.storage.lake")
    return lake_module is not None and isinstance(exc, getattr(lake_module, "LakeError", ()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = " ".join(filter(None, (args.command, getattr(args, "kg_command", None),
                                  getattr(args, "review_command", None))))
    try:
        return args.handler(args)
    except RayStartError as exc:  # the machine, not the input: one line, exit 1 (a rerun may work)
        print(f"curate {name}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - user errors become one line; the rest propagate
        if not _is_user_error(exc):
            raise
        if args.verbose:
            log.exception("curate %s failed", name)
        print(f"curate {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
