"""Ray session management: embedded local Ray by default, a cluster when an address is given.

Only this module and the step modules that build Ray Datasets import Ray; operators never do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
_dashboard_url: str | None = None  # set by init_ray; where `ray job submit` reaches this session


@dataclass
class RuntimeConfig:
    """How to reach Ray.

    address: None = start an embedded local instance (or reuse one already running in this
        process), even where `ray start` left its address in /tmp/ray (Ray's own default
        would attach to that cluster, or fail on a stale address); "auto" or
        "ray://host:10001" = connect to a cluster. RAY_ADDRESS in the environment is used
        when this is None.
    num_cpus: CPUs for an embedded instance; None = all of the machine's.
    object_store_memory: bytes for an embedded instance's object store; None = Ray's default.
    dashboard: start the dashboard (and with it the job server that `ray job submit` talks
        to) with an embedded instance; off by default because it costs seconds and memory,
        and no step needs it.
    start_attempts: how many times to start an embedded instance whose node did not register
        within Ray's fixed 30 s start-up wait ("The current node timed out during startup", a
        busy machine); each failed attempt's processes are stopped before the next.
    """

    address: str | None = None
    num_cpus: int | None = field(default=None, metadata={"min": 1})
    object_store_memory: int | None = field(default=None, metadata={"min": 1})
    dashboard: bool = False
    start_attempts: int = field(default=3, metadata={"min": 1})


class RayStartError(RuntimeError):
    """An embedded Ray instance did not start within `RuntimeConfig.start_attempts` tries."""


# Ray waits a hard-coded 30 s for a new node's raylet to register with the GCS
# (ray/_private/node.py); on a loaded machine that wait runs out while nothing is wrong.
_STARTUP_TIMEOUT = "timed out during startup"

# Settings of Ray's C++ side for a machine that other work keeps busy, set (unless already set)
# for an embedded instance, whose processes inherit this environment; a cluster keeps its own
# (`ray start` reads the same variables):
# - the raylet shuts itself down when its agents have not registered within 30 s, and kills a
#   new worker process that has not registered within 60 s: 300 s each;
# - Ray runs its workers at niceness 15, so that they never slow the raylet down; beside any
#   process at the default niceness they then get ~3% of a core each (two busy processes made
#   the test suite crawl at 2% of its speed): the workers run at the driver's niceness instead.
BUSY_MACHINE_ENV = {"RAY_agent_register_timeout_ms": "300000", "RAY_worker_register_timeout_seconds": "300",
                    "RAY_worker_niceness": "0"}


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
        for name, value in BUSY_MACHINE_ENV.items():
            os.environ.setdefault(name, value)
        context = _start_embedded(ray, cfg, kwargs)
    _dashboard_url = context.dashboard_url or None
    _quiet_ray_data()
    return _describe(ray)


def _start_embedded(ray, cfg: RuntimeConfig, kwargs: dict):
    """`ray.init` of a local instance, retried on exactly Ray's start-up timeout."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return ray.init(address="local", num_cpus=cfg.num_cpus, object_store_memory=cfg.object_store_memory,
                            include_dashboard=cfg.dashboard, **kwargs)
        except Exception as exc:  # Ray raises a bare Exception for this one; anything else propagates
            if _STARTUP_TIMEOUT not in str(exc):
                raise
            stopped = _stop_half_started(exc)
            ray.shutdown()
            if attempt >= cfg.start_attempts:
                raise RayStartError(
                    f"Ray could not start: its node did not register within Ray's 30 s start-up wait, "
                    f"{attempt} time(s) (is the machine overloaded? `uptime` says); try again later, raise "
                    "runtime.start_attempts, or start Ray yourself (`ray start --head`) and pass its address") from None
            log.warning("Ray's node did not register within Ray's 30 s start-up wait (attempt %d of %d, a busy "
                        "machine?); stopped %d half-started Ray process(es), starting again",
                        attempt, cfg.start_attempts, stopped)


def _stop_half_started(exc: BaseException) -> int:
    """Stop the processes a failed `ray.init` left running (its GCS, raylet, log monitor, and
    the agents the raylet started); returns how many were stopped.

    Ray raises from inside the constructor of its `Node`, so nothing outside holds that node and
    `ray.shutdown()` cannot reach it; the node object is still in the traceback's frames. Its
    raylet's agents are the raylet's children, which a killed raylet would leave running."""
    import psutil
    from ray._private.node import Node

    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("self")
        if isinstance(node, Node):
            break
        tb = tb.tb_next
    else:
        return 0
    started = [info.process.pid for infos in node.all_processes.values() for info in infos]
    children = []
    for pid in started:
        try:
            children += psutil.Process(pid).children(recursive=True)
        except psutil.Error:  # already gone
            continue
    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
    for child in children:
        try:
            child.kill()
        except psutil.Error:  # exited with its parent
            continue
    psutil.wait_procs(children, timeout=30)
    return len(started) + len(children)


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


def ray_stage_args(declared, *, gpus: float = 0, memory: int | None = None) -> dict:
    """Ray arguments (`num_cpus`, `num_gpus`, `memory`, `resources`) for a stage whose workers
    run several operators or models, from their declared resources (`Operator.resources`,
    `Encoder.resources`: dicts like {"num_cpus": 1, "num_gpus": 1, "memory": 2**30}; other
    keys are custom Ray resources).

    One worker runs the declared parts in turn, each loaded once: CPUs, GPUs and custom
    resources are the largest single need (the parts never run at the same time), memory is
    the sum (every part stays resident). `gpus` is the cluster's GPU count: without GPUs,
    `num_gpus` is dropped and the parts run on CPU (every GPU path has a CPU counterpart),
    with at least one CPU; more GPUs per worker than the cluster has is an error (the stage
    would never be scheduled). `memory` (e.g. a configured per-actor reservation) is a floor.
    """
    cpus: float | None = None
    gpu: float = 0.0
    mem = 0
    custom: dict[str, float] = {}
    for res in declared:
        for k, v in dict(res or {}).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"declared resource {k!r} must be a number >= 0, got {v!r}")
            if k == "num_cpus":
                cpus = max(cpus or 0.0, float(v))
            elif k == "num_gpus":
                gpu = max(gpu, float(v))
            elif k == "memory":
                mem += int(v)
            else:
                custom[k] = max(custom.get(k, 0.0), float(v))
    args: dict = {}
    if gpu and gpus > 0:
        if gpu > gpus:
            raise ValueError(f"a worker of this stage needs {gpu:g} GPUs; the cluster has {gpus:g}")
        args["num_gpus"] = gpu
        if cpus is not None:
            args["num_cpus"] = cpus
    else:
        args["num_cpus"] = cpus if cpus else 1.0
    if memory:
        mem = max(mem, int(memory))
    if mem:
        args["memory"] = mem
    if custom:
        args["resources"] = custom
    return {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in args.items()}
