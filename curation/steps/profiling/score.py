"""The scoring step: encoders once per image, every head on that one forward, alignment.

Two Ray Data stages, so decoding never starves a model:

1. `prepare_batch` (CPU tasks): read the bytes once, decode once at the smallest size that
   serves every encoder (JPEG DCT scaling), run each encoder's resize/crop (`ImagePrep`) and
   ship uint8 pixels. A read/decode failure marks the row (`error`), it is never dropped.
2. `Scorer` (actor pool, one model set per actor, explicit batch size, `num_gpus` on GPU
   clusters, fp16 there): per encoder ONE forward over the batch, every head of that encoder
   reads its embedding, caption texts are embedded in one batched forward per caption field,
   alignment = cosine(image, caption) under `alignment_encoder`.

Outputs: `scores` (id, one column per head, `clip_alignment` / `clip_alignment_<field>`,
error, producer) and `embeddings/<encoder>` (id, vector: float16 packed as binary, see
`curation.steps.vectors.embeddings`), appended per run for pool rows not yet scored by the
same producer. Both stages are sized by the encoders' declared resources
(`Encoder.prepare_resources`, `Encoder.resources`, merged by `curation.runtime.ray_stage_args`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from curation.storage import schemas
from curation.storage.schemas import SCORES, embeddings_table
from curation.storage.lake import Lake
from curation.steps.summary import StepSummary, error_kinds
from curation.steps.items import ItemError, read_item
from operators.decode import DEFAULT_MAX_PIXELS, DecodePlan
from operators.models.encoders import (
    EncoderConfig, check_encoder_weights, encoder_class, encoder_dtype, encoder_identity, image_geometry, load_encoder,
)
from operators.models.head_config import HeadConfig

log = logging.getLogger(__name__)
POOL_COLUMNS = ["id", "uri", "byte_offset", "byte_size", "error", "caption", "caption_fields"]


@dataclass
class ScoreConfig:
    """score step options.

    encoders: the image/text models; each runs once per image.
    heads: scoring heads, each on one encoder's image embedding.
    alignment_encoder: encoder whose text tower scores image-caption alignment (the design
        names Chinese-CLIP); None = no alignment.
    caption_fields: caption fields to align: "caption" is the primary caption (column
        `clip_alignment`), others are keys of `caption_fields` (column `clip_alignment_<key>`).
    batch_size: images per model forward.
    actors: model actors; None = one per GPU, or max(1, CPUs - 1) on CPU-only clusters.
    actor_memory: memory reserved per model actor, bytes, at least (more when the encoders'
        declared `resources` add up to more; also keeps Ray from fusing the
        decode tasks into the actors).
    torch_threads: intra-op threads per CPU actor; None = 1.
    max_pixels: images whose header claims more pixels are not decoded (error row).
    write_embeddings: also write `embeddings/<encoder>` tables.
    """

    encoders: list[EncoderConfig] = field(default_factory=list)
    heads: list[HeadConfig] = field(default_factory=list)
    alignment_encoder: str | None = None
    caption_fields: list[str] = field(default_factory=lambda: ["caption"])
    batch_size: int = field(default=64, metadata={"min": 1})
    actors: int | None = field(default=None, metadata={"min": 1})
    actor_memory: int = field(default=1 << 30, metadata={"min": 0})
    torch_threads: int | None = field(default=None, metadata={"min": 1})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"min": 1})
    write_embeddings: bool = True

    def validate(self) -> None:
        names = [e.name for e in self.encoders]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder names must be unique, got {names}")
        heads = [h.name for h in self.heads]
        if len(set(heads)) != len(heads):
            raise ValueError(f"head names must be unique, got {heads}")
        for h in self.heads:
            if h.encoder not in names:
                raise ValueError(f"head {h.name!r} reads encoder {h.encoder!r}, not among {names}")
        if self.alignment_encoder is not None and self.alignment_encoder not in names:
            raise ValueError(f"alignment_encoder {self.alignment_encoder!r} is not among {names}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


def alignment_column(caption_field: str) -> str:
    return "clip_alignment" if caption_field == "caption" else f"clip_alignment_{caption_field}"


def preflight(cfg: ScoreConfig) -> tuple[list[HeadConfig], dict[str, str]]:
    """Check every weight file before any work starts. Returns (heads to run, skipped head ->
    reason). A missing required file raises WeightsError naming what to set."""
    from operators.models.heads import check_head_weights  # torch: only for a job that scores

    cfg.validate()
    for enc in cfg.encoders:
        check_encoder_weights(enc)
    active, skipped = [], {}
    for head in cfg.heads:
        reason = check_head_weights(head)
        if reason is None:
            active.append(head)
        else:
            skipped[head.name] = reason
    return active, skipped


def _pixel_column(encoder: str) -> str:
    return f"pixels__{encoder}"


def prepare_batch(batch: pa.Table, preps: dict[str, Callable[[Image.Image], np.ndarray]], caption_fields: list[str],
                  max_pixels: int) -> dict[str, np.ndarray]:
    """CPU stage: one read and one decode per row, each encoder's resize/crop, caption texts."""
    long_side = max((max(p.size) for p in preps.values()), default=0)
    # Squash/shortest resizes never need more than ~the target on the long side.
    plan = DecodePlan("rgb", min_long_side=long_side, max_reduction=8)
    rows = batch.to_pylist()
    n = len(rows)
    pixels = {name: np.zeros((n, *p.size, 3), np.uint8) for name, p in preps.items()}
    errors: list[str | None] = []
    for i, row in enumerate(rows):
        error = row.get("error")
        if not error:
            try:
                image = read_item(row, plan, max_pixels).pil("RGB")
                for name, prep in preps.items():
                    pixels[name][i] = prep(image)
            except ItemError as exc:
                error = str(exc)
        errors.append(error)
    out: dict[str, np.ndarray] = {"id": np.array([r["id"] for r in rows], dtype=object),
                                  "error": np.array(errors, dtype=object)}
    for f in caption_fields:
        out[f"text__{f}"] = np.array([_caption(r, f) for r in rows], dtype=object)
    for name, arr in pixels.items():
        out[_pixel_column(name)] = arr
    return out


def _caption(row: dict[str, Any], caption_field: str) -> str | None:
    if caption_field == "caption":
        text = row.get("caption")
    else:
        text = schemas.caption_field_map(row.get("caption_fields")).get(caption_field)
    return text if text and text.strip() else None


class Scorer:
    """Model actor body: loads encoders and heads on the worker's device, scores batches.

    Usable locally too (`Scorer(cfg)(prepare_batch(...))`): tests and benchmarks call it
    directly; Ray wraps it in an actor pool.
    """

    def __init__(self, cfg: ScoreConfig, heads: list[HeadConfig] | None = None):
        import torch

        from operators.models.heads import load_head

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.torch_threads or 1)
        self.cfg = cfg
        self.encoders = {}
        for enc_cfg in cfg.encoders:
            self.encoders[enc_cfg.name] = load_encoder(enc_cfg).to(self.device, encoder_dtype(enc_cfg, self.device))
        self.heads = []
        for head_cfg in heads if heads is not None else cfg.heads:
            head = load_head(head_cfg, in_dim=self.encoders[head_cfg.encoder].embed_dim)
            if head is not None:
                self.heads.append((head_cfg.encoder, head.to(self.device)))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import torch

        ids, errors = batch["id"], _strings(batch["error"])
        ok = np.array([e is None for e in errors], dtype=bool)
        n = len(ids)
        columns: dict[str, Any] = {"id": pa.array(list(ids), pa.string()), "error": pa.array(list(errors), pa.string())}
        embeddings: dict[str, np.ndarray] = {}
        if ok.any():
            with torch.inference_mode():
                for name, enc in self.encoders.items():
                    embeddings[name] = enc.encode_images(batch[_pixel_column(name)][ok])
                for enc_name, head in self.heads:
                    scores = np.full(n, np.nan, np.float32)
                    scores[ok] = head.score(embeddings[enc_name]).float().cpu().numpy()
                    columns[head.name] = pa.array(scores, pa.float32(), mask=~ok)
                if self.cfg.alignment_encoder:
                    enc = self.encoders[self.cfg.alignment_encoder]
                    image = embeddings[self.cfg.alignment_encoder].normalized
                    for f in self.cfg.caption_fields:
                        columns[alignment_column(f)] = self._align(enc, image, _strings(batch[f"text__{f}"]), ok)
        for enc_name, head in self.heads:
            columns.setdefault(head.name, pa.nulls(n, pa.float32()))
        if self.cfg.alignment_encoder:
            for f in self.cfg.caption_fields:
                columns.setdefault(alignment_column(f), pa.nulls(n, pa.float32()))
        for name, enc in self.encoders.items():
            vectors = np.zeros((n, enc.embed_dim), np.float16)
            if name in embeddings:
                vectors[ok] = embeddings[name].normalized.float().cpu().numpy().astype(np.float16)
            flat = pa.array(vectors.reshape(-1), pa.float16())
            columns[f"embedding__{name}"] = pa.FixedSizeListArray.from_arrays(flat, enc.embed_dim, mask=pa.array(~ok))
        return pa.table(columns)

    def _align(self, enc, image, texts: list[str | None], ok: np.ndarray) -> pa.Array:
        n = len(texts)
        have = np.array([t is not None for t in texts], dtype=bool) & ok
        out = np.full(n, np.nan, np.float32)
        if have.any():
            text = enc.encode_texts([t for t, h in zip(texts, have) if h])
            img = image[have[ok]]
            out[have] = (img * text).sum(-1).float().cpu().numpy()
        return pa.array(out, pa.float32(), mask=~have)


def _strings(values: np.ndarray) -> list[str | None]:
    """Ray turns an all-None object column into float NaN: read strings back, else None."""
    return [v if isinstance(v, str) and v else None for v in values]


def producer_of(cfg: ScoreConfig, heads: list[HeadConfig]) -> str:
    """Provenance without loading models: encoder and head identities (weight-file hashes)."""
    from operators.models.heads import head_identity

    parts = [encoder_identity(e) for e in cfg.encoders]
    parts += [f"{head_identity(h)}:{h.kind}<-{h.encoder}" for h in heads]
    if cfg.alignment_encoder:
        parts.append(f"align={cfg.alignment_encoder}:{'+'.join(cfg.caption_fields)}")
    return ",".join(parts)


def score(lake: Lake, cfg: ScoreConfig) -> StepSummary:
    """Score pool rows not yet scored by this configuration; append to `scores` and
    `embeddings/<encoder>` (overwrite when the configuration changed)."""
    import ray
    import ray.data

    from curation.runtime import cluster_cpus, ray_stage_args, split_blocks

    t0 = time.perf_counter()
    heads, skipped = preflight(cfg)  # before any work: a missing weight fails here
    if not cfg.encoders:
        return StepSummary("score", 0, 0, 0.0, notes={"skipped": "no encoders configured"})
    producer = producer_of(cfg, heads)
    # The check covers every table the step writes: a run killed between its commits is
    # completed by the rerun (keyed appends drop what already landed).
    also = [embeddings_table(e.name) for e in cfg.encoders] if cfg.write_embeddings else []
    todo, mode = lake.pending("pool", POOL_COLUMNS, SCORES, "score_producer", producer, also=also)
    random_models = [e.name for e in cfg.encoders if e.random and not e.pretrained] + \
                    [h.name for h in heads if h.random and not h.weights]
    notes: dict[str, Any] = {"mode": mode}
    if skipped:
        notes["skipped_heads"] = skipped
    if random_models:
        notes["WARNING"] = f"random weights (scores are meaningless): {', '.join(random_models)}"
    if todo.num_rows == 0:
        return StepSummary("score", 0, 0, time.perf_counter() - t0, notes={**notes, "up_to_date": True})

    preps = {e.name: image_geometry(e) for e in cfg.encoders}
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = cfg.actors or (gpus if gpus else max(1, cluster_cpus() - 1))
    blocks = split_blocks(todo, max_rows=cfg.batch_size * 4, parallelism=2 * cluster_cpus())
    classes = [encoder_class(e) for e in cfg.encoders]
    decode_args = ray_stage_args([c.prepare_resources for c in classes])
    actor_args = ray_stage_args([c.resources for c in classes], gpus=gpus, memory=cfg.actor_memory)
    ds = (ray.data.from_arrow(blocks)
          .map_batches(prepare_batch, batch_format="pyarrow", batch_size=None,
                       fn_kwargs={"preps": preps, "caption_fields": cfg.caption_fields, "max_pixels": cfg.max_pixels},
                       **decode_args)
          .map_batches(Scorer, fn_constructor_kwargs={"cfg": cfg, "heads": heads}, batch_format="numpy",
                       batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=actors), **actor_args)
          .materialize())
    score_cols = ["id", "error"] + [h.name for h in heads] + \
                 ([alignment_column(f) for f in cfg.caption_fields] if cfg.alignment_encoder else [])
    scores_ds = ds.select_columns(score_cols).map_batches(
        _with_producer, fn_kwargs={"producer": producer}, batch_format="pyarrow")
    if cfg.write_embeddings:  # before `scores`, whose rows say "done"
        for enc in cfg.encoders:
            column = f"embedding__{enc.name}"
            dim = ds.schema().base_schema.field(column).type.list_size
            emb = ds.select_columns(["id", column]).map_batches(
                _embedding_rows, fn_kwargs={"encoder": enc.name}, batch_format="pyarrow")
            lake.write_ray(embeddings_table(enc.name), emb, mode=mode, key="id", schema=schemas.embeddings_schema(dim),
                           producer={"step": "score", "encoder": enc.name, "models": producer})
    commit = lake.write_ray(SCORES, scores_ds, mode=mode, key="id", schema=schemas.scores_schema(score_cols[2:]),
                            producer={"step": "score", "models": producer})
    written = lake.read(SCORES, columns=["id", "error"], version=commit.version)
    written = written.filter(pc.is_in(written["id"], value_set=todo["id"]))
    return StepSummary("score", todo.num_rows, commit.added_rows, time.perf_counter() - t0,
                       errors=error_kinds(written["error"]),
                       notes={**notes, "version": commit.version, "actors": actors, "gpus": gpus,
                              "heads": [h.name for h in heads]})


def _with_producer(batch: pa.Table, producer: str) -> pa.Table:
    return batch.append_column("score_producer", pa.array([producer] * batch.num_rows, pa.string()))


def _embedding_rows(batch: pa.Table, encoder: str) -> pa.Table:
    """`embeddings/<encoder>` rows from the Scorer's float16 fixed-size-list column, for rows
    with a vector only (failed images have no embedding to search)."""
    from curation.steps.vectors.embeddings import embeddings_rows

    column = batch.column(f"embedding__{encoder}")
    batch = batch.filter(pc.is_valid(column))
    column = batch.column(f"embedding__{encoder}").combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return embeddings_rows(batch["id"].combine_chunks(), encoder, vectors)
