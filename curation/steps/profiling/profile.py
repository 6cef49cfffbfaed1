"""The profiling step: every pool row -> exactly one `profiles` row.

`ProfileRunner` is the fused stage: per item it reads the bytes once, parses the header once,
decodes once at the plan's size (`curation.steps.items.read_item`, shared with scoring and
search), and runs every operator on that one decode. It works on a plain pyarrow Table (notebooks, tests, benchmarks) and is the body of the
Ray `map_batches` tasks in `profile()`. Failures are data: a read or decode failure is the row's
`error` and header-only operators still fill their columns; an operator that raises records
`<operator>: <message>` and leaves only its own columns null.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.storage import schemas
from curation.storage.schemas import PROFILES
from curation.storage.lake import Lake
from curation.steps.summary import StepSummary, error_kinds
from curation.steps.items import ItemError, read_item
from operators.decode import DEFAULT_MAX_PIXELS, plan_for
from operators.registry import DEFAULT_PROFILE_OPERATORS, get_operator

POOL_COLUMNS = ["id", "uri", "byte_offset", "byte_size", "error"]


@dataclass
class ProfileConfig:
    """profile step options.

    operators: operator names (see operators.registry), all run on one decode per image.
    max_pixels: images whose header claims more pixels are not decoded (error row), pixels.
    batch_size: images per Ray task batch.
    """

    operators: list[str] = field(default_factory=lambda: list(DEFAULT_PROFILE_OPERATORS))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"min": 1})
    batch_size: int = field(default=32, metadata={"min": 1})


class ProfileRunner:
    """All operators of a stage over one read and one decode per item."""

    def __init__(self, operator_names: list[str], max_pixels: int = DEFAULT_MAX_PIXELS):
        if max_pixels <= 0:
            raise ValueError("max_pixels must be positive")
        self.operators = [get_operator(n)() for n in operator_names]
        self.schema = schemas.profile_schema(type(op) for op in self.operators)
        self.plan = plan_for(op.need for op in self.operators)
        self.max_pixels = max_pixels
        self.producer = ",".join(type(op).identity() for op in self.operators)
        self._pixel_ops = [op for op in self.operators if op.need.kind != "header"]

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        for row in batch.select([c for c in POOL_COLUMNS if c in batch.column_names]).to_pylist():
            out = self.profile_one(row)
            for name in cols:
                cols[name].append(out.get(name))
        return pa.table(cols, schema=self.schema)

    def profile_one(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"], "profile_producer": self.producer}
        errors: list[str] = []
        if row.get("error"):
            out["error"] = row["error"]  # the ingest error (e.g. missing file) carries over
            return out
        runnable = self.operators
        try:
            item = read_item(row, self.plan, self.max_pixels)
        except ItemError as exc:
            if exc.item is None:  # unreadable, or not an image: nothing to describe
                out["error"] = str(exc)
                return out
            # The header parsed but the pixels were refused or failed: header operators still run.
            item = exc.item
            errors.append(str(exc))
            runnable = [op for op in self.operators if op.need.kind == "header"]
        for op in runnable:
            try:
                out.update(op.compute(item))
            except Exception as exc:  # one operator's failure must not lose the row
                errors.append(f"{op.name}: {type(exc).__name__}: {exc}")
        out["error"] = "; ".join(errors) or None
        return out


def _profile_batch(batch: pa.Table, operator_names: list[str], max_pixels: int) -> pa.Table:
    return ProfileRunner(operator_names, max_pixels)(batch)


def profile(lake: Lake, cfg: ProfileConfig) -> StepSummary:
    """Profile every pool row not yet profiled by this operator set; append to `profiles`.

    A different operator set (names or versions) re-profiles the whole pool into a new
    overwrite version, so a table never mixes producers. Slow operators that should not be
    tied to this set run as their own set into their own table (`ocr`: `run_operator_set`).
    """
    return run_operator_set(lake, cfg, PROFILES, "profile")[0]


def run_operator_set(lake: Lake, cfg: Any, table: str, step: str,
                     columns: tuple[str, ...] = ()) -> tuple[StepSummary, pa.Table | None]:
    """Run the operator set `cfg.operators` (with `cfg.max_pixels`, `cfg.batch_size`) over
    every pool row that `table` does not hold from this set yet, one read and one decode per
    item, and write the rows to `table` (schema `profile_schema(operators)`, producer column
    `profile_producer`). Each set has its own table, so sets are incremental independently: a
    change to one (an operator added, a version bumped) re-runs that set alone.

    Returns the step summary and the rows written by this run (`id`, `error` and `columns`),
    None when nothing was to do.
    """
    import ray
    import ray.data

    from curation.runtime import cluster_cpus, ray_stage_args, split_blocks

    t0 = time.perf_counter()
    runner = ProfileRunner(cfg.operators, cfg.max_pixels)
    todo, mode = lake.pending("pool", POOL_COLUMNS, table, "profile_producer", runner.producer)
    if todo.num_rows == 0:
        return StepSummary(step, 0, 0, time.perf_counter() - t0, notes={"up_to_date": True}), None
    blocks = split_blocks(todo, max_rows=cfg.batch_size * 8, parallelism=4 * cluster_cpus())
    # every task runs all operators: sized by their declared resources (operators.base)
    task_args = ray_stage_args([op.resources for op in runner.operators],
                               gpus=ray.cluster_resources().get("GPU", 0))
    ds = ray.data.from_arrow(blocks).map_batches(
        _profile_batch, fn_kwargs={"operator_names": cfg.operators, "max_pixels": cfg.max_pixels},
        batch_format="pyarrow", batch_size=cfg.batch_size, **task_args)
    commit = lake.write_ray(table, ds, mode=mode, key="id", schema=runner.schema,
                            producer={"step": step, "operators": runner.producer,
                                      "plan": runner.plan.__dict__, "max_pixels": cfg.max_pixels})
    written = lake.read(table, columns=["id", "error", *columns], version=commit.version)
    written = written.filter(pc.is_in(written["id"], value_set=todo["id"]))
    seconds = time.perf_counter() - t0
    return StepSummary(step, todo.num_rows, commit.added_rows, seconds, errors=error_kinds(written["error"]),
                       notes={"version": commit.version, "mode": mode,
                              "decode_plan": f"{runner.plan.kind}, long side >= {runner.plan.min_long_side}px, "
                                             f"DCT reduction <= {runner.plan.max_reduction}"}), written
