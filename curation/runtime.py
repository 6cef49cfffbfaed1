"""Ray session management: embedded local Ray by default, a cluster when an address is given.

Only this module and the step modules that build Ray Datasets import Ray; operators never do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)
_dashboard_url: str | None = None  # set by init_ray; where `ray job submit` reaches this session


@dataclass
class RuntimeConfig:
    """How to reach Ray.

    address: None = start an embedded local instance (or reuse one already running in this
        process); "auto" or "ray://host:10001" = connect to a cluster. RAY_ADDRESS in the
        environment is used when this is None.
    num_cpus: CPUs for an embedded instance; None = all of the machine's.
    object_store_memory: bytes for an embedded instance's object store; None = Ray's default.
    dashboard: start the dashboard (and with it the job server that `ray job submit` talks
        to) with an embedded instance; off by default because it costs seconds and memory.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    dashboard: bool = False


def init_ray(cfg: RuntimeConfig | None = None) -> dict:
    """Start or connect to Ray once per process; return a short description of the session."""
    import ray

    cfg = cfg or RuntimeConfig()
    if ray.is_initialized():
        return _describe(ray)
    # Usage stats would try to reach the network; the dashboard costs seconds and memory.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 starts 32 footer-reader actors per read_parquet by default; our snapshots list
    # files explicitly, so one is plenty and saves seconds per read.
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": True, "logging_level": logging.WARNING}
    global _dashboard_url
    if address:
        context = ray.init(address=address, **kwargs)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        context = ray.init(num_cpus=cfg.num_cpus, object_store_memory=cfg.object_store_memory,
                           include_dashboard=cfg.dashboard, **kwargs)
    _dashboard_url = context.dashboard_url or None
    _quiet_ray_data()
    return _describe(ray)


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("CURATE_PROGRESS", "1") != "0"
    ctx.print_on_execution_start = False


def _describe(ray) -> dict:
    res = ray.cluster_resources()
    return {"nodes": len(ray.nodes()), "cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)),
            "dashboard_url": _dashboard_url}


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def split_blocks(table, max_rows: int, parallelism: int) -> list:
    """Slices of `table` for `ray.data.from_arrow`: at most `max_rows` each, and at least
    `parallelism` of them when there are enough rows, so every CPU gets work on small inputs
    and batches stay bounded on big ones."""
    per_block = max(1, min(max_rows, -(-table.num_rows // max(1, parallelism))))
    return [table.slice(i, per_block) for i in range(0, table.num_rows, per_block)]
