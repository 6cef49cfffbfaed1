"""Trainer feed: a training stage's exported batches as PyTorch datasets, without Ray.

An export directory (any `pyarrow.fs` uri) holds `manifest.parquet` (one row per item: where
its bytes are) and one batch plan per epoch, `batches-e{epoch:05d}.parquet` (one row per
planned item: global `batch`, `position`, caption, bucket size), rows in consumption order.
`StagePlan` joins the two and checks they belong together; `StageBatches` (iterable, one
whole batch per step) and `StageImages` + `PlanBatchSampler` + `collate_batch` (map-style)
decode and yield them.

Sharding (deterministic): with B global batches and world_size ranks, every rank runs
S = ceil(B / world_size) steps and rank r at step s trains on global batch
(s·world_size + r) mod B. The last round wraps to the start of the plan, so when B is not a
multiple of world_size, (S·world_size − B) batches are trained twice per epoch and every rank
takes the same number of steps (no rank waits at a collective for one that ran out).

Bad items never stop training: an item whose bytes cannot be read or decoded (missing file,
truncated or garbage bytes; for an edit pair, either image) is dropped from its batch,
counted in `skipped` and logged once with its id and reason; a batch with no item left is
not yielded and counted in `skipped_batches`. Counters are per process: with DataLoader
workers each worker counts its own, so every batch also lists `skipped_ids`.

Nothing here imports Ray: training nodes need only torch, pyarrow and Pillow.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from curation.feed.images import RESAMPLE, decode_cover, to_tensor
from curation.storage import io

__all__ = [
    "PlanBatchSampler", "Step", "StageBatches", "StageImages", "StagePlan",
    "collate_batch", "plan_name", "rank_schedule", "steps_per_rank",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
_META = "curation."
_MANIFEST_COLUMNS = ["id", "uri", "byte_offset", "byte_size",
                     "source_uri", "source_byte_offset", "source_byte_size"]
_PLAN_COLUMNS = ["batch", "position", "id", "kind", "caption", "caption_level",
                 "bucket_height", "bucket_width", "seq_len"]


def plan_name(epoch: int) -> str:
    """File name of one epoch's batch plan inside an export directory."""
    return f"batches-e{epoch:05d}.parquet"


def steps_per_rank(num_batches: int, world_size: int = 1) -> int:
    """S = ceil(num_batches / world_size): steps every rank runs in one epoch."""
    return math.ceil(num_batches / world_size)


def rank_schedule(num_batches: int, rank: int = 0, world_size: int = 1,
                  start_step: int = 0) -> list[tuple[int, int]]:
    """(step, global batch) for each step of `rank` from `start_step` (0-based) to the end.

    Rank r at step s gets batch (s·world_size + r) mod num_batches; see the module docstring.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    steps = steps_per_rank(num_batches, world_size)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, {steps}] (steps per rank), got {start_step}")
    return [(s, (s * world_size + rank) % num_batches) for s in range(start_step, steps)]


class Step(list):
    """A list (row indices, or the items loaded from them) that belongs to one rank step.

    `PlanBatchSampler` yields these so that `StageImages` and `collate_batch` can stamp the
    step on the batch; DataLoader passes the object through (and pickles it to workers) as is.
    """

    def __init__(self, values=(), step: int | None = None):
        super().__init__(values)
        self.step = step


class StagePlan:
    """One epoch's batch plan joined with its manifest.

    rows: one row per planned item in consumption order (batch, position): the plan's columns
        plus `uri`, `byte_offset`, `byte_size` (bytes; null = whole file) and `source_uri`,
        `source_byte_offset`, `source_byte_size` (the edit pair's input image; null for t2i).
    metadata: the plan's `curation.*` schema metadata, prefix stripped, as text
        (`manifest_version`, `stage`, `epoch`, `token_budget`, `same_shape`).
    num_batches: B, the number of global batches (indices 0..B-1).
    """

    def __init__(self, rows: pa.Table, metadata: dict[str, str]):
        # The exporter writes this order already; sorting keeps batch bounds right for any plan.
        self.rows = rows.sort_by([("batch", "ascending"), ("position", "ascending")])
        self.metadata = metadata
        batch = self.rows["batch"].to_numpy()
        starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]]) if len(batch) else np.array([], int)
        if not np.array_equal(batch[starts], np.arange(len(starts))):
            raise ValueError(f"batch plan's batch indices must be 0..B-1 without gaps, "
                             f"found {len(starts)} batches numbered {batch[starts][:5].tolist()}...")
        self._bounds = np.r_[starts, len(batch)]
        self.num_batches = len(starts)

    @classmethod
    def load(cls, export_dir: str | os.PathLike | None = None, *, epoch: int = 0,
             manifest: str | None = None, plan: str | None = None) -> StagePlan:
        """Read and join `manifest` and `plan` (uris; default: the files of `export_dir`).

        Raises ValueError when the plan was built from another manifest version than this
        manifest's, or names ids the manifest does not hold.
        """
        if export_dir is None and (manifest is None or plan is None):
            raise ValueError("give export_dir, or both manifest and plan uris")
        manifest = manifest or io.join(os.fspath(export_dir), MANIFEST)
        plan = plan or io.join(os.fspath(export_dir), plan_name(epoch))
        man_table, man_meta = _read_parquet(manifest, _MANIFEST_COLUMNS)
        plan_table, plan_meta = _read_parquet(plan, _PLAN_COLUMNS)
        for uri, meta in ((manifest, man_meta), (plan, plan_meta)):
            if "manifest_version" not in meta:
                raise ValueError(f"{uri} has no {_META}manifest_version schema metadata: not an export of `curate`")
        if plan_meta["manifest_version"] != man_meta["manifest_version"]:
            raise ValueError(
                f"batch plan {plan} was built from manifest version {plan_meta['manifest_version']}, "
                f"but manifest {manifest} is version {man_meta['manifest_version']}: re-run `curate sample`")
        where = pc.index_in(plan_table["id"], value_set=man_table["id"])
        missing = pc.unique(plan_table["id"].filter(pc.is_null(where)))
        if len(missing):
            raise ValueError(f"batch plan {plan} names {len(missing)} ids missing from manifest {manifest} "
                             f"(first: {missing[:3].to_pylist()}): re-run `curate sample`")
        found = man_table.take(where)
        for name in _MANIFEST_COLUMNS[1:]:
            plan_table = plan_table.append_column(name, found[name])
        return cls(plan_table, plan_meta)

    def batch_rows(self, batch: int) -> list[int]:
        """Row indices (into `rows`) of global batch `batch`, in position order."""
        return list(range(int(self._bounds[batch]), int(self._bounds[batch + 1])))


def _read_parquet(uri: str, columns: list[str]) -> tuple[pa.Table, dict[str, str]]:
    fs, path = io.resolve(uri)
    with io.open_input(fs, path) as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        absent = [c for c in columns if c not in schema.names]
        if absent:
            raise ValueError(f"{uri} lacks columns {absent}")
        table = pf.read(columns=columns)
    meta = {k.decode()[len(_META):]: v.decode() for k, v in (schema.metadata or {}).items()
            if k.startswith(_META.encode())}
    return table, meta


class StageImages(Dataset):
    """Map-style dataset over the plan's rows: index (0..len-1, consumption order) -> item.

    An item is a dict: `id`, `kind` ('t2i' / 'i2i'), `caption`, `caption_level`, `batch`,
    `position`, `pixel_values` (CHW at the row's bucket: float32 in [-1, 1] when normalize,
    else uint8), `source_pixel_values` (the i2i input image, same layout; None for t2i) and
    `error` (None; for an item that could not be loaded, the reason, with both pixel entries
    None). Batch it with `PlanBatchSampler` and `collate_batch`.

    plan: a `StagePlan` (shared with a sampler) or a plan uri; see `StagePlan.load`.
    resample: Pillow filter name for the resize ("bicubic", "lanczos", "bilinear", ...).
    skipped: items this process failed to load.
    """

    def __init__(self, export_dir: str | os.PathLike | None = None, *, epoch: int = 0, manifest: str | None = None,
                 plan: str | StagePlan | None = None, normalize: bool = True, resample: str = "bicubic"):
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        self.plan = plan if isinstance(plan, StagePlan) else StagePlan.load(
            export_dir, epoch=epoch, manifest=manifest, plan=plan)
        self.normalize = normalize
        self.resample = resample
        self.skipped = 0

    def __len__(self) -> int:
        return self.plan.rows.num_rows

    def __getitem__(self, index: int) -> dict:
        return self.items([index])[0]

    def items(self, indices: list[int]) -> Step:
        """The items of `indices`, as a `Step` carrying `indices.step` when it has one."""
        rows = self.plan.rows.take(pa.array(indices, pa.int64())).to_pylist()
        return Step((self._load(row) for row in rows), getattr(indices, "step", None))

    # DataLoader fetches a whole batch through __getitems__ when a dataset has one.
    __getitems__ = items

    def _load(self, row: dict) -> dict:
        item = {k: row[k] for k in ("id", "kind", "caption", "caption_level", "batch", "position")}
        item.update(pixel_values=None, source_pixel_values=None, error=None)
        size = (row["bucket_height"], row["bucket_width"])
        part = "image"
        try:
            item["pixel_values"] = self._pixels(row["uri"], row["byte_offset"], row["byte_size"], size)
            if row["kind"] == "i2i":
                part = "source image"
                if row["source_uri"] is None:
                    raise ValueError("i2i item has no source_uri in the manifest")
                item["source_pixel_values"] = self._pixels(
                    row["source_uri"], row["source_byte_offset"], row["source_byte_size"], size)
        except Exception as e:  # any unreadable item: drop it, never the training run
            self.skipped += 1
            # Messages are short and never hold the bytes (Pillow names the stream, not its content).
            item.update(pixel_values=None, source_pixel_values=None,
                        error=f"{part}: {type(e).__name__}: {str(e)[:200]}")
            log.warning("feed: skipped item %s: %s", row["id"], item["error"])
        return item

    def _pixels(self, uri: str, offset: int | None, size: int | None, bucket: tuple[int, int]) -> torch.Tensor:
        im = decode_cover(io.read_bytes(uri, offset, size), *bucket, self.resample)
        return to_tensor(im, self.normalize)


def collate_batch(items: list[dict]) -> dict | None:
    """One batch dict from `StageImages` items; None when no item could be loaded.

    pixel_values: Tensor [n, 3, H, W] when every item has the same bucket, else a list of
        [3, h, w] tensors. source_pixel_values: None when no item is i2i; else the same layout
        when every item is i2i, and a list with None at t2i items otherwise.
    captions, ids, caption_levels, kinds: lists in position order. batch: global batch index.
    step: the rank's step (from a `Step`; None for a plain list). skipped_ids: dropped items.
    """
    kept = [it for it in items if it["error"] is None]
    if not kept:
        return None
    sources = [it["source_pixel_values"] for it in kept]
    return {
        "pixel_values": _stack([it["pixel_values"] for it in kept]),
        "source_pixel_values": _stack(sources) if any(s is not None for s in sources) else None,
        "captions": [it["caption"] for it in kept],
        "ids": [it["id"] for it in kept],
        "caption_levels": [it["caption_level"] for it in kept],
        "kinds": [it["kind"] for it in kept],
        "step": getattr(items, "step", None),
        "batch": kept[0]["batch"],
        "skipped_ids": [it["id"] for it in items if it["error"] is not None],
    }


def _stack(tensors: list) -> torch.Tensor | list:
    if all(t is not None for t in tensors) and len({tuple(t.shape) for t in tensors}) == 1:
        return torch.stack(tensors)
    return tensors


class PlanBatchSampler(Sampler[list[int]]):
    """Row indices of each of a rank's steps (a `Step` per batch), same sharding as `StageBatches`.

    `DataLoader(StageImages(...), batch_sampler=PlanBatchSampler(...), collate_fn=collate_batch)`
    yields what `StageBatches` does, except that a batch with no loadable item comes out as None.
    """

    def __init__(self, plan_or_dataset: StagePlan | StageImages, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        self.plan = plan_or_dataset.plan if isinstance(plan_or_dataset, StageImages) else plan_or_dataset
        self.steps_per_rank = steps_per_rank(self.plan.num_batches, world_size)
        self.schedule = rank_schedule(self.plan.num_batches, rank, world_size, start_step)

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self):
        for step, batch in self.schedule:
            yield Step(self.plan.batch_rows(batch), step)


class StageBatches(IterableDataset):
    """Whole batches of one rank, in step order: `DataLoader(ds, batch_size=None, num_workers=k)`.

    Arguments as `StageImages`, plus rank / world_size (see the module docstring) and
    start_step, the first step (0-based) to yield, to resume mid-epoch: steps before it are
    skipped without reading anything. Each batch is `collate_batch`'s dict.

    DataLoader worker w of n takes steps s with (s − start_step) mod n == w, and DataLoader
    collects from its workers round-robin, so batches arrive in step order. A batch with no
    loadable item is not yielded, which moves that worker's later batches one round earlier:
    after such a batch the order is no longer exactly by step (`batch["step"]` says which).
    For object-store exports, prefer DataLoader's multiprocessing_context="spawn" or
    "forkserver": pyarrow's S3 / GCS clients are not safe to use across fork().

    steps_per_rank: S, steps each rank runs per epoch. len(): steps left from start_step.
    """

    def __init__(self, export_dir: str | os.PathLike | None = None, *, epoch: int = 0, manifest: str | None = None,
                 plan: str | StagePlan | None = None, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, normalize: bool = True, resample: str = "bicubic"):
        self.images = StageImages(export_dir, epoch=epoch, manifest=manifest, plan=plan,
                                  normalize=normalize, resample=resample)
        self.plan = self.images.plan
        self.steps_per_rank = steps_per_rank(self.plan.num_batches, world_size)
        self.schedule = rank_schedule(self.plan.num_batches, rank, world_size, start_step)
        self.skipped_batches = 0

    @property
    def skipped(self) -> int:
        """Items this process failed to load."""
        return self.images.skipped

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step, batch in self.schedule[worker::workers]:
            out = collate_batch(self.images.items(Step(self.plan.batch_rows(batch), step)))
            if out is None:
                self.skipped_batches += 1
                log.warning("feed: skipped batch %d (step %d): no item could be loaded", batch, step)
                continue
            yield out
