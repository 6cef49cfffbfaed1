"""Starting the embedded Ray: on a busy machine Ray's fixed 30 s wait for a new node to register
with its GCS may run out ("The current node timed out during startup"); `init_ray` stops the
half-started instance and starts again, a bounded number of times, and the CLI then exits 1
with one line. An address a `ray start` left behind never replaces the embedded instance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from procs import curate_env, run_python

REPO = Path(__file__).resolve().parents[1]

# A process in which Ray's start-up wait runs out for the first node it starts: the node never
# shows up in the GCS and Ray's clock jumps 31 s at each look, as on an overloaded machine; the
# next node registers normally. It prints the Ray processes it has afterwards, and those of its
# process group that lost their parent (what a half-stopped node would leave running).
SLOW_FIRST_NODE = r"""
import json, os, time
os.setsid()
import psutil
import ray._private.node as node_mod
import ray._private.services as services
from curation.runtime import RuntimeConfig, init_ray

state = {"slow": None, "offset": 0.0, "registered": False}
real_get_node = services.get_node

def agents_up():
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            found += [p] if "agent" in " ".join(p.cmdline()).lower() else []
        except psutil.Error:
            continue
    return len(found) >= 2

def get_node(gcs_address, node_id, *args, **kwargs):
    if state["slow"] in (None, node_id):
        state["slow"] = node_id
        deadline = time.monotonic() + 300
        while not agents_up() and time.monotonic() < deadline:  # as after a real 30 s wait
            time.sleep(0.2)
        raise RuntimeError("node not in the GCS yet (simulated: a busy machine)")
    state["registered"] = True
    return real_get_node(gcs_address, node_id, *args, **kwargs)

class Clock:
    def __getattr__(self, name):
        return getattr(time, name)

    def monotonic(self):
        if state["slow"] is not None and not state["registered"]:
            state["offset"] += 31.0
        return time.monotonic() + state["offset"]

services.get_node = get_node
node_mod.time = Clock()
info = init_ray(RuntimeConfig(num_cpus=1))
procs = {}
for p in psutil.Process().children(recursive=True):
    try:
        name = p.cmdline()[0].rsplit("/", 1)[-1]
    except (psutil.Error, IndexError):
        continue
    procs[name] = procs.get(name, 0) + 1
orphans = []
for p in psutil.process_iter(["pid", "ppid", "name"]):
    try:
        if p.info["ppid"] == 1 and os.getpgid(p.info["pid"]) == os.getpid():
            orphans.append(p.info["name"])
    except OSError:
        continue
print(json.dumps({"cpus": info["cpus"], "procs": procs, "orphans": orphans}))
"""


def test_a_start_that_times_out_is_stopped_and_started_again():
    # in a Ray temp dir of its own holding the address of a `ray start` cluster that is gone:
    # Ray's default (address None) would try to attach to it
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayt-"))  # short: Ray's socket paths live under it
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        proc = run_python(SLOW_FIRST_NODE, what="init_ray with a first node that never registers", cwd=REPO,
                          env=curate_env(RAY_TMPDIR=str(ray_tmp)))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cpus"] == 1
    # exactly one instance is left: the first attempt's GCS and raylet were stopped
    assert got["procs"].get("gcs_server") == 1 and got["procs"].get("raylet") == 1, got
    assert got["orphans"] == [], got  # nor its raylet's agents
    warned = [line for line in proc.stderr.splitlines() if "30 s start-up wait" in line]
    assert len(warned) == 1 and "attempt 1 of 3" in warned[0] and "starting again" in warned[0], proc.stderr


def test_ray_that_never_starts_is_a_clear_error(monkeypatch, caplog):
    import ray

    from curation import runtime

    calls = []

    def timed_out(**kwargs):
        calls.append(kwargs)
        raise Exception("The current node timed out during startup. This could happen because some of "
                        "the raylet failed to startup or the GCS has become overloaded.")

    for name in runtime.BUSY_MACHINE_ENV:
        monkeypatch.delenv(name, raising=False)
    # never touch the test session's own Ray
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: None)
    with caplog.at_level(logging.WARNING, logger="curation.runtime"):
        with pytest.raises(runtime.RayStartError, match="30 s start-up wait, 2 time"):
            runtime.init_ray(runtime.RuntimeConfig(num_cpus=1, start_attempts=2))
    assert len(calls) == 2 and all(c["include_dashboard"] is False and c["address"] == "local" for c in calls)
    # Ray's C++ waits for agents and workers, lengthened for the processes it starts
    assert {k: os.environ.get(k) for k in runtime.BUSY_MACHINE_ENV} == runtime.BUSY_MACHINE_ENV
    assert [r.getMessage().count("attempt 1 of 2") for r in caplog.records] == [1]

    def other(**kwargs):
        raise ValueError("object_store_memory too small")  # not the start-up wait: no retry

    calls.clear()
    monkeypatch.setattr(ray, "init", other)
    with pytest.raises(ValueError, match="too small"):
        runtime.init_ray(runtime.RuntimeConfig(num_cpus=1))


def test_the_cli_exits_1_with_one_line_when_ray_cannot_start(monkeypatch, tmp_path, capsys):
    from curation import runtime
    from curation.cli.main import main
    from curation.demo import write_jpegs

    def refuse(cfg=None):
        raise runtime.RayStartError("Ray could not start: its node did not register within Ray's 30 s "
                                    "start-up wait, 3 time(s)")

    monkeypatch.setattr(runtime, "init_ray", refuse)
    write_jpegs(tmp_path / "imgs", 2, megapixels=(0.01, 0.02), seed=1)
    assert main(["ingest", str(tmp_path / "lake"), str(tmp_path / "imgs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["curate ingest: error: Ray could not start: its node did not register within Ray's 30 s "
                   "start-up wait, 3 time(s)"]


def test_workers_run_at_the_drivers_niceness(ray_session):
    # Ray's default niceness 15 gives a worker ~3% of a core beside one busy process: the test
    # suite crawled on a loaded machine (BUSY_MACHINE_ENV)
    ray = ray_session

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)
