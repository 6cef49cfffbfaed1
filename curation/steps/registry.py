"""The step registry: every step a job spec, `curate run`, the CLI and the Python API can run.

One `Step` record per step says, without importing the step's module (so `curate --help` and
`curate status` never load torch or Ray):

    name       the `step:` value in a spec ("profile", "kg-build")
    run        "package.module:function", imported on first use and called as
               ``fn(lake, *args, **kwargs)`` with what `bind(spec, step)` returns; by default
               ``fn(lake, config)``, config being the `section` with the step's own options
               (`source`, `name`, ... from the spec's `steps:` entry) set on the fields of the
               same name
    section    the JobSpec field it reads, dotted ("profile", "kg.build"); None: none
    needs_ray  False for steps that run in the driver (the knowledge-graph steps): a job made
               only of such steps starts no Ray
    reads / writes   lake tables, with patterns for families (`embeddings/<encoder>`,
               `manifests/<stage>`), for documentation, `curate` help and ordering checks
    options    the StepSpec fields the step accepts (`source`, `stage`, ...); any other one set
               on its `steps:` entry is an error
    validate   ``fn(spec, step, where)``: checks of the document only (names, required options,
               cross-section consistency), no I/O; runs in `JobSpec.validate` (so `load_spec`)
    preflight  ``fn(spec, step, where)``: checks of the world (input files exist, model weights
               are there), run by `run_job` before Ray starts and before the lake is created
    Hooks raise `ConfigError` naming the key (`where` is "steps[2]").

Adding a step is one module plus one registration:

1. write the step's module under `curation/steps/` with its config dataclass (field ranges as
   ``field(metadata={"min": 1})``) and ``def my_step(lake, cfg) -> StepSummary``;
2. add one ``register(Step(name="my-step", run="curation.steps.mine:my_step", section="mine",
   ...))`` call at the bottom of this file, and, when the step brings a new config section,
   the field ``mine: MyConfig = field(default_factory=MyConfig)`` on `JobSpec`.

The spec (`StepSpec.step`), `curate run`, the step subcommands, `run_job` and
`curation.run_step(lake, "my-step", ...)` then all know it.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from curation.config.typed import ConfigError, override

if TYPE_CHECKING:
    from curation.config.spec import JobSpec, StepSpec
    from curation.steps.summary import StepSummary
    from curation.storage.lake import Lake

Hook = Callable[["JobSpec", "StepSpec", str], None]
Binder = Callable[["JobSpec", "StepSpec"], "tuple[tuple, dict]"]

__all__ = ["Step", "get", "names", "register", "steps"]


@dataclass(frozen=True)
class Step:
    """One registered step (see the module docstring for the fields)."""

    name: str
    run: str
    help: str = ""
    section: str | None = None
    needs_ray: bool = True
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    validate: Hook | None = None
    preflight: Hook | None = None
    bind: Binder | None = None

    def function(self) -> Callable[..., "StepSummary"]:
        """The function that runs the step (imports its module)."""
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module), attr)

    def config(self, spec: "JobSpec", step: "StepSpec | None" = None) -> Any:
        """The step's config section of `spec`, with the step's own options applied."""
        if self.section is None:
            return None
        cfg: Any = spec
        for part in self.section.split("."):
            cfg = getattr(cfg, part)
        if step is None or not dataclasses.is_dataclass(cfg):
            return cfg
        fields = {f.name for f in dataclasses.fields(cfg)}
        changes = {o: getattr(step, o) for o in self.options if o in fields and getattr(step, o) is not None}
        return override(cfg, changes, self.section) if changes else cfg

    def arguments(self, spec: "JobSpec", step: "StepSpec") -> tuple[tuple, dict]:
        if self.bind is not None:
            return self.bind(spec, step)
        return ((self.config(spec, step),) if self.section else ()), {}

    def check(self, spec: "JobSpec", step: "StepSpec", where: str) -> None:
        """Document checks: the step's options, then its `validate` hook."""
        from curation.config.spec import STEP_OPTIONS

        for opt in STEP_OPTIONS:
            if getattr(step, opt) is not None and opt not in self.options:
                takes = f" (it takes: {', '.join(self.options)})" if self.options else ""
                raise ConfigError(f"{where}.{opt}: step {self.name!r} takes no {opt!r} option{takes}", f"{where}.{opt}")
        if self.validate is not None:
            self.validate(spec, step, where)

    def __call__(self, lake: "Lake", spec: "JobSpec", step: "StepSpec") -> "StepSummary":
        args, kwargs = self.arguments(spec, step)
        return self.function()(lake, *args, **kwargs)


_STEPS: dict[str, Step] = {}


def register(step: Step) -> Step:
    """Add a step; a name registered twice is an error (a typo would shadow a step)."""
    if step.name in _STEPS:
        raise ValueError(f"step {step.name!r} is already registered (by {_STEPS[step.name].run})")
    if ":" not in step.run:
        raise ValueError(f"step {step.name!r}: run must be 'package.module:function', got {step.run!r}")
    _STEPS[step.name] = step
    return step


def get(name: str, where: str = "step") -> Step:
    """The registered step `name`; ConfigError listing the known ones otherwise."""
    try:
        return _STEPS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown step {name!r}; known steps: {', '.join(_STEPS)}", where) from None


def names() -> list[str]:
    return list(_STEPS)


def steps() -> list[Step]:
    return list(_STEPS.values())


# --------------------------------------------------------------------------- hooks
# Small and import-light: modules are imported inside the hooks.


def _check_exists(uri: str | None, what: str, kind: str = "file") -> None:
    if uri:
        from curation.storage.location import check_input

        check_input(uri, what, kind)


def _check_encoder(enc: Any, what: str) -> None:
    """Model weights of an encoder config are there (no model is built)."""
    from operators.models.encoders import check_encoder_weights

    try:
        check_encoder_weights(enc)
    except (OSError, ImportError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}", what) from None


def _ingest_source(spec: "JobSpec", step: "StepSpec") -> "str | list[str]":
    return step.source or spec.ingest.source


def _validate_ingest(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if not _ingest_source(spec, step):
        raise ConfigError(f"{where}: ingest needs a source (`source:` on the step or `ingest.source`)", where)


def _preflight_ingest(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    """Every source (each pattern expanded: brace ranges, globs) exists, and table sources have
    their uri or image column; a pattern matching nothing or a bad brace range names the pattern."""
    from curation.steps.ingest import patterns
    from curation.steps.ingest.columns import check_table_columns

    given = patterns.as_list(_ingest_source(spec, step))
    what = f"{where}.source" if step.source else "ingest.source"
    uri_column = step.uri_column or spec.ingest.uri_column
    image_column = step.image_column or spec.ingest.image_column
    key = (f"{where}.uri_column" if step.uri_column else "ingest.uri_column") if uri_column or not image_column \
        else (f"{where}.image_column" if step.image_column else "ingest.image_column")
    for i, pattern in enumerate(given):
        at = f"{what}[{i}]" if len(given) > 1 else what
        try:
            expanded = patterns.expand(pattern)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{at}: {exc}", at) from None
        for source in expanded:
            try:
                _check_exists(source, at, "source")
            except ConfigError as exc:
                raise ConfigError(f"{exc} (from {pattern})" if source != pattern else str(exc), at) from None
            try:
                check_table_columns(source, uri_column, image_column)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{key}: {exc}", key) from None


def _validate_profile(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from operators.registry import DEFAULT_OCR_OPERATORS, OPERATORS

    ops = spec.profile.operators
    if not ops:
        raise ConfigError("profile.operators: give at least one operator "
                          f"(known: {', '.join(sorted(OPERATORS))})", "profile.operators")
    for i, name in enumerate(ops):
        if name not in OPERATORS:
            raise ConfigError(f"profile.operators[{i}]: unknown operator {name!r}; "
                              f"known: {', '.join(sorted(OPERATORS))}", f"profile.operators[{i}]")
    if len(set(ops)) != len(ops):
        raise ConfigError(f"profile.operators: an operator is listed twice: {ops}", "profile.operators")
    for i, name in enumerate(ops):
        if name in DEFAULT_OCR_OPERATORS:
            raise ConfigError(f"profile.operators[{i}]: {name!r} belongs to the OCR operator set: run it with the "
                              "`ocr` step (`- {step: ocr}`, `curate ocr LAKE`; table `ocr`), so that adding it "
                              "never re-profiles the pool", f"profile.operators[{i}]")


def _validate_ocr(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from operators.registry import OPERATORS

    ops = spec.ocr.operators
    if not ops:
        raise ConfigError("ocr.operators: give at least one operator (the default is [ocr])", "ocr.operators")
    for i, name in enumerate(ops):
        if name not in OPERATORS:
            raise ConfigError(f"ocr.operators[{i}]: unknown operator {name!r}; known: {', '.join(sorted(OPERATORS))}",
                              f"ocr.operators[{i}]")
    if len(set(ops)) != len(ops):
        raise ConfigError(f"ocr.operators: an operator is listed twice: {ops}", "ocr.operators")
    for i, name in enumerate(ops):
        if name in spec.profile.operators:
            raise ConfigError(f"ocr.operators[{i}]: {name!r} is in profile.operators already (its columns are in "
                              "`profiles`)", f"ocr.operators[{i}]")


def _preflight_ocr(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if "ocr" in spec.ocr.operators:
        from operators.ocr import OcrUnavailable, check_available

        try:
            check_available()  # packages and model files, no model loaded
        except OcrUnavailable as exc:
            raise ConfigError(f"ocr: {exc}", "ocr") from None


def _preflight_score(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from curation.steps.profiling.score import preflight

    try:
        preflight(spec.score)  # every encoder's and required head's weights, no model built
    except (OSError, ImportError, ValueError) as exc:
        raise ConfigError(f"score: {exc}", "score") from None


def _validate_dedup(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from graph.communities import BACKENDS as LEIDEN
    from graph.knn.registry import BACKENDS as KNN

    d = spec.dedup
    if d.backend != "auto" and d.backend not in KNN:
        raise ConfigError(f"dedup.backend: unknown k-NN backend {d.backend!r}; known: auto, {', '.join(KNN)}",
                          "dedup.backend")
    if d.leiden_backend not in LEIDEN:
        raise ConfigError(f"dedup.leiden_backend: unknown Leiden backend {d.leiden_backend!r}; "
                          f"known: {', '.join(LEIDEN)}", "dedup.leiden_backend")
    if d.mode not in ("full", "incremental"):
        raise ConfigError(f"dedup.mode: {d.mode!r}; choose full or incremental", "dedup.mode")


def _validate_export(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from curation.config.spec import check_name

    if not step.stage:
        raise ConfigError(f"{where}: {step.step} needs a stage (`stage:` on the step)", where)
    check_name(step.stage, f"{where}.stage", "stage")
    if step.stage not in spec.stages:
        raise ConfigError(f"{where}.stage: unknown stage {step.stage!r}; the spec defines {sorted(spec.stages)}",
                          f"{where}.stage")


def _preflight_export(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if step.out:
        from curation.storage.location import check_output_dir

        check_output_dir(step.out, f"{where}.out")
    stage = spec.stage(step.stage)
    _check_exists(stage.balance.prior, f"stages.{step.stage}.balance.prior", "prior file")
    tokens = stage.batches.text_tokens
    if tokens.mode == "tokenizer":
        _check_exists(tokens.tokenizer, f"stages.{step.stage}.batches.text_tokens.tokenizer", "tokenizer file")


def _bind_sample(spec: "JobSpec", step: "StepSpec") -> tuple[tuple, dict]:
    return (step.stage, spec.stage(step.stage)), {"out": step.out, "epoch": step.epoch or 0,
                                                  "size": step.size, "seed": step.seed}


def _bind_export(spec: "JobSpec", step: "StepSpec") -> tuple[tuple, dict]:
    args, kwargs = _bind_sample(spec, step)
    return args, {**kwargs, "skip_unchanged": bool(step.skip_unchanged)}


def _validate_kg_build(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    try:
        spec.kg.build.validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", "kg.build") from None


def _preflight_kg_build(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    b = spec.kg.build
    for key in ("xml", "page", "pagelinks", "linktarget", "redirect"):
        _check_exists(getattr(b, key), f"kg.build.{key}", "dump")
    _check_exists(b.prune.judgments_file, "kg.build.prune.judgments_file", "judgments file")
    judge = b.prune.encoder_judge
    if judge is not None and getattr(judge, "encoder", None) is not None:
        _check_encoder(judge.encoder, "kg.build.prune.encoder_judge.encoder")


def _validate_embedder(spec: "JobSpec") -> None:
    a = spec.kg.augment
    if a.embedder not in ("hashing", "encoder"):
        raise ConfigError(f"kg.augment.embedder: expected 'hashing' or 'encoder', got {a.embedder!r}",
                          "kg.augment.embedder")
    if a.embedder == "encoder" and a.encoder is None:
        raise ConfigError("kg.augment.encoder: embedder 'encoder' needs an encoder config", "kg.augment.encoder")


def _validate_kg_augment(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    _validate_embedder(spec)


def _preflight_kg_augment(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    a = spec.kg.augment
    _check_exists(a.prompts, "kg.augment.prompts", "prompt log")
    _check_exists(a.trending, "kg.augment.trending", "trending list")
    _check_exists(a.taxonomy.names_file, "kg.augment.taxonomy.names_file", "names file")
    if a.embedder == "encoder":
        _check_encoder(a.encoder, "kg.augment.encoder")


def _validate_kg_weights(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if spec.kg.weights.use_embeddings:
        _validate_embedder(spec)  # the weights map tags with kg.augment's embedder


def _preflight_kg_weights(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if spec.kg.weights.use_embeddings and spec.kg.augment.embedder == "encoder":
        _check_encoder(spec.kg.augment.encoder, "kg.augment.encoder")


def _bind_kg_weights(spec: "JobSpec", step: "StepSpec") -> tuple[tuple, dict]:
    return (spec.kg.weights,), {"augment": spec.kg.augment}


def _validate_caption(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    c = spec.caption
    if c.backend == "vllm" and not c.vllm.model_source:
        raise ConfigError("caption.vllm.model_source: the vllm backend needs a local weights directory",
                          "caption.vllm.model_source")


def _preflight_caption(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    """The endpoint is set and answers a TCP connect (a missing server fails here, in seconds,
    naming the setting), or the vLLM weights and package are there."""
    c = spec.caption
    if c.backend == "http":
        import socket
        import urllib.parse

        if not c.http.url:
            raise ConfigError("caption.http.url: no captioning endpoint set (an OpenAI-compatible "
                              "chat-completions URL, e.g. http://127.0.0.1:8000/v1/chat/completions; "
                              "jobs/caption.yaml reads CURATE_CAPTION_URL)", "caption.http.url")
        parts = urllib.parse.urlsplit(c.http.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"caption.http.url: not an http(s) URL: {c.http.url!r}", "caption.http.url")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as exc:
            raise ConfigError(f"caption.http.url: cannot reach {parts.hostname}:{port} ({exc.strerror or exc}); "
                              "start the server or fix the URL", "caption.http.url") from None
        return
    _check_exists(c.vllm.model_source, "caption.vllm.model_source", "VLM weights directory")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("caption.backend: 'vllm' needs the vllm package on the cluster's GPU nodes "
                          "(pip install vllm); use the http backend against a served model otherwise",
                          "caption.backend")


# --------------------------------------------------------------------------- the steps

register(Step(
    name="ingest", run="curation.steps.ingest.pool:ingest", section="ingest",
    help="add a source's images to the lake's pool",
    reads=(), writes=("pool",), options=("source", "name", "uri_column", "image_column"),
    validate=_validate_ingest, preflight=_preflight_ingest))
register(Step(
    name="profile", run="curation.steps.profiling.profile:profile", section="profile",
    help="profile features for pool items not yet profiled",
    reads=("pool",), writes=("profiles",), validate=_validate_profile))
register(Step(
    name="ocr", run="curation.steps.profiling.ocr:ocr", section="ocr",
    help="OCR (lines read, boxes, area share, script) for pool items not yet read: its own operator set and table",
    reads=("pool",), writes=("ocr",), validate=_validate_ocr, preflight=_preflight_ocr))
register(Step(
    name="score", run="curation.steps.profiling.score:score", section="score",
    help="embeddings, model heads and image-caption alignment",
    reads=("pool",), writes=("scores", "embeddings/<encoder>"), preflight=_preflight_score))
register(Step(
    name="dedup", run="curation.steps.vectors.dedup:dedup", section="dedup",
    help="semantic dedup: k-NN graph, Leiden communities, one decision per item",
    reads=("embeddings/<encoder>", "profiles", "scores"), writes=("dedup", "graph_edges/<encoder>"),
    validate=_validate_dedup))
register(Step(
    name="export", run="curation.steps.export.export:export", section="stages",
    help="apply a stage's rules and dedup, write its manifest, sample and batch plan",
    reads=("pool", "profiles", "scores", "dedup", "removals", "weights", "captions", "edit_pairs", "kg_nodes"),
    writes=("manifests/<stage>", "samples/<stage>", "batches/<stage>"),
    options=("stage", "out", "epoch", "size", "seed", "skip_unchanged"), validate=_validate_export,
    preflight=_preflight_export, bind=_bind_export))
register(Step(
    name="sample", run="curation.steps.sampling.sample:sample", section="stages",
    help="draw one epoch of a stage from its manifest (balanced, mixed) and plan its batches",
    reads=("manifests/<stage>", "kg_nodes"), writes=("samples/<stage>", "batches/<stage>"),
    options=("stage", "out", "epoch", "size", "seed"), validate=_validate_export, preflight=_preflight_export,
    bind=_bind_sample))
register(Step(
    name="caption", run="curation.steps.captions.caption:caption", section="caption",
    help="five caption levels, tags and NSFW per image from a VLM (OCR-first)",
    reads=("pool", "profiles", "weights", "kg_nodes"), writes=("captions",),
    validate=_validate_caption, preflight=_preflight_caption))
register(Step(
    name="kg-build", run="curation.steps.kg.steps:kg_build", section="kg.build", needs_ray=False,
    help="knowledge graph from Wikipedia dumps",
    reads=(), writes=("kg_nodes", "kg_edges"), validate=_validate_kg_build, preflight=_preflight_kg_build))
register(Step(
    name="kg-augment", run="curation.steps.kg.steps:kg_augment", section="kg.augment", needs_ray=False,
    help="taxonomy from the pool's tags, prompt-log boosts, trending concepts",
    reads=("kg_nodes", "kg_edges", "pool", "captions"), writes=("kg_nodes", "kg_edges"),
    validate=_validate_kg_augment, preflight=_preflight_kg_augment))
register(Step(
    name="kg-weights", run="curation.steps.kg.steps:kg_weights", section="kg.weights", needs_ray=False,
    help="one BM25 x hierarchy sampling weight per pool item",
    reads=("kg_nodes", "kg_edges", "pool", "captions"), writes=("weights",),
    validate=_validate_kg_weights, preflight=_preflight_kg_weights, bind=_bind_kg_weights))


# --------------------------------------------------------------------------- edit pairs


def _preflight_pairs_source(spec: "JobSpec", step: "StepSpec", where: str, section: str) -> None:
    from curation.steps.ingest import patterns

    cfg = getattr(spec.pairs, section)
    given = patterns.as_list(step.source or cfg.source)
    key = f"{where}.source" if step.source else f"pairs.{section}.source"
    if not given:
        raise ConfigError(f"{key}: no source given for pairs from {section}", key)
    for pattern in given:
        try:
            expanded = patterns.expand(pattern)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{key}: {exc}", key) from None
        for source in expanded:
            _check_exists(source, key, "source")


def _preflight_pairs_experts(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    _preflight_pairs_source(spec, step, where, "experts")


def _preflight_pairs_video(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from curation.steps.pairs.video_step import encoder_for

    _preflight_pairs_source(spec, step, where, "video")
    try:
        encoder = encoder_for(spec.score, spec.pairs.video)
    except ValueError as exc:
        raise ConfigError(str(exc), "pairs.video.encoder") from None
    _check_encoder(encoder, "pairs.video.encoder")


def _preflight_pairs_render(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    from curation.demo.fonts import FontNotFound, cjk_available, font_file

    r = spec.pairs.render
    if r.ocr_check:
        from operators.ocr import OcrUnavailable, check_available

        try:
            check_available()
        except OcrUnavailable as exc:
            raise ConfigError(f"pairs.render.ocr_check: {exc}", "pairs.render.ocr_check") from None
    if "zh" in r.languages and not cjk_available() and not r.font_dir:
        raise ConfigError("pairs.render.languages: Chinese text needs a CJK font: install this project's "
                          "dependencies (noto-cjk-sans-otc), `apt-get install fonts-noto-cjk`, set "
                          "CURATE_CJK_FONT, or give pairs.render.font_dir", "pairs.render.languages")
    for i, name in enumerate(r.fonts):
        if "/" in name or name.lower().endswith((".ttf", ".otf", ".ttc")):
            _check_exists(name, f"pairs.render.fonts[{i}]", "font file")
        elif not name.startswith("cjk"):
            try:
                font_file(name)
            except (FontNotFound, KeyError) as exc:
                raise ConfigError(f"pairs.render.fonts[{i}]: {exc}", f"pairs.render.fonts[{i}]") from None
    if r.font_dir:
        _check_exists(r.font_dir, "pairs.render.font_dir", "directory")


def _bind_pairs(name: str, *extra: str) -> Binder:
    """Arguments of a pairs step: its sub-config with the step's options applied, plus the
    spec sections it also reads (`caption`, `score`)."""
    def bind(spec: "JobSpec", step: "StepSpec") -> tuple[tuple, dict]:
        return (_STEPS[name].config(spec, step),), {k: getattr(spec, k) for k in extra}
    return bind


register(Step(
    name="pairs-experts", run="curation.steps.pairs.steps:pairs_experts", section="pairs.experts",
    help="edit pairs from expert edits: every ordered pair of each group (original + N edited versions)",
    reads=("pool", "edit_pairs", "ocr"), writes=("pool", "edit_pairs"), options=("source", "name"),
    preflight=_preflight_pairs_experts, bind=_bind_pairs("pairs-experts", "caption")))
register(Step(
    name="pairs-video", run="curation.steps.pairs.steps:pairs_video", section="pairs.video",
    help="edit pairs from video frames: shots, frames interval_s apart, a cosine similarity band",
    reads=("pool", "edit_pairs", "ocr"), writes=("pool", "edit_pairs"), options=("source", "name"),
    preflight=_preflight_pairs_video, bind=_bind_pairs("pairs-video", "score", "caption")))
register(Step(
    name="pairs-render", run="curation.steps.pairs.steps:pairs_render", section="pairs.render",
    help="rendered text-editing pairs on pool backgrounds, each checked by OCR",
    reads=("pool", "profiles", "edit_pairs"), writes=("pool", "edit_pairs"), options=("name", "seed"),
    preflight=_preflight_pairs_render))


# --------------------------------------------------------------------------- active curation


def _preflight_hardcases(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    h = spec.hardcases
    if not h.prompts and not h.images:
        raise ConfigError("hardcases.prompts: give failure prompts (a .txt or .jsonl file) and / or hardcases.images "
                          "(a directory of failure images)", "hardcases.prompts")
    _check_exists(h.prompts, "hardcases.prompts", "prompts file")
    _check_exists(h.images, "hardcases.images", "directory")
    encoders = {e.name: e for e in spec.score.encoders}
    name = h.encoder or spec.score.alignment_encoder
    if name is not None and name not in encoders:
        raise ConfigError(f"hardcases.encoder: {name!r} is not among score.encoders {sorted(encoders)}",
                          "hardcases.encoder")
    if name is not None:
        _check_encoder(encoders[name], "hardcases.encoder")


def _preflight_review_propose(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if spec.review.verifier.kind == "vlm":
        _preflight_caption(spec, step, where)


def _validate_review_export(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if not step.out:
        raise ConfigError(f"{where}.out: review-export needs the tasks file to write (out: tasks.json)", f"{where}.out")


def _validate_review_import(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    if not step.source:
        raise ConfigError(f"{where}.source: review-import needs the annotation export (source: export.json)",
                          f"{where}.source")


def _preflight_review_import(spec: "JobSpec", step: "StepSpec", where: str) -> None:
    _check_exists(step.source, f"{where}.source", "annotation export")


register(Step(
    name="hardcases", run="curation.steps.review.steps:hardcases", section="hardcases", needs_ray=False,
    help="failure prompts / images -> hit communities, concept coverage, decisions (prune, boost, fill)",
    reads=("embeddings/<encoder>", "dedup", "kg_nodes", "weights"),
    writes=("hardcases", "removals", "kg_nodes"), preflight=_preflight_hardcases,
    bind=lambda spec, step: ((spec.hardcases,), {"score": spec.score})))
register(Step(
    name="review-propose", run="curation.steps.review.steps:review_propose", section="review",
    help="propose a review batch (hard cases, low alignment, audit, balanced draw) checked by the AI verifier",
    reads=("pool", "profiles", "scores", "captions", "weights", "hardcases", "reviews"), writes=("reviews",),
    preflight=_preflight_review_propose, bind=lambda spec, step: ((spec.review,), {"caption": spec.caption})))
register(Step(
    name="review-export", run="curation.steps.review.steps:review_export", section="review", needs_ray=False,
    help="write Label Studio tasks and labelling config for the reviews waiting for a human",
    reads=("reviews", "pool"), writes=("reviews",), options=("out",), validate=_validate_review_export,
    bind=lambda spec, step: ((spec.review, step.out), {})))
register(Step(
    name="review-import", run="curation.steps.review.steps:review_import", section=None, needs_ray=False,
    help="read Label Studio's JSON export back: accepted / corrected / rejected",
    reads=("reviews",), writes=("reviews",), options=("source",), validate=_validate_review_import,
    preflight=_preflight_review_import, bind=lambda spec, step: ((step.source,), {})))
register(Step(
    name="review-apply", run="curation.steps.review.steps:review_apply", section=None, needs_ray=False,
    help="verdicts -> labels (over the pseudo-labels in export, sampler, kg) and removals (rejected)",
    reads=("reviews", "labels"), writes=("labels", "removals")))
