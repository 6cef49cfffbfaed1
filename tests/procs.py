"""Waiting on other processes in tests: subprocesses, servers, Ray's job agent.

Every wait here is bounded for a machine whose two cores are shared by twenty busy processes
(CI may run on one): a `curate` step that takes 20 s on an idle machine may take minutes there.
A wait that runs out kills what it waited for and fails the test with a message naming what it
waited for and the output so far. No test asserts on how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]

# Seconds a subprocess (one `curate` command: imports, its own Ray, one or two steps) may take.
PROCESS_TIMEOUT_S = 900.0
# Seconds a condition polled by `wait_for` may take to come true (a server or Ray agent starting).
WAIT_TIMEOUT_S = 300.0

T = TypeVar("T")


def curate_env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `curate` subprocess: this checkout first on the path, its own
    embedded Ray (never the test session's), no progress bars; `fault` sets CURATE_FAULT."""
    env = dict(os.environ, CURATE_PROGRESS="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               PYTHONPATH=str(REPO), **extra)
    env.pop("RAY_ADDRESS", None)
    env.pop("CURATE_FAULT", None)
    if fault:
        env["CURATE_FAULT"] = fault
    return env


def _tail(text: str | bytes | None, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (text or "")[-n:]


def run(cmd: list[str], *, what: str, env: dict | None = None, cwd: str | Path | None = None,
        input: str | None = None, timeout: float = PROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`subprocess.run` capturing text output, failing the test with `what` if it does not exit."""
    try:
        return subprocess.run(cmd, env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: still running after {timeout:.0f} s (killed)\n--- stdout\n{_tail(exc.stdout)}"
                    f"\n--- stderr\n{_tail(exc.stderr)}")


def run_curate(*args: str, fault: str | None = None, what: str | None = None,
               timeout: float = PROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`curate ARGS --num-cpus 2` in its own process (its own embedded Ray)."""
    cmd = [sys.executable, "-m", "curation.cli.main", *args, "--num-cpus", "2"]
    return run(cmd, what=what or f"curate {' '.join(args)}" + (f" (CURATE_FAULT={fault})" if fault else ""),
               env=curate_env(fault), timeout=timeout)


def start_curate(*args: str, fault: str | None = None) -> subprocess.Popen:
    """`curate ARGS --num-cpus 2` started in the background; finish it with `communicate`."""
    return subprocess.Popen([sys.executable, "-m", "curation.cli.main", *args, "--num-cpus", "2"],
                            env=curate_env(fault), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def communicate(proc: subprocess.Popen, *, what: str, timeout: float = PROCESS_TIMEOUT_S) -> tuple[str, str]:
    """(stdout, stderr) of a started process, failing the test with `what` if it does not exit."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what}: still running after {timeout:.0f} s (killed)\n--- stdout\n{_tail(out)}"
                    f"\n--- stderr\n{_tail(err)}")


def run_python(code: str, *, what: str, cwd: str | Path | None = None, env: dict | None = None,
               timeout: float = PROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`python -c CODE` with this checkout on the path."""
    env = dict(curate_env() if env is None else env)
    return run([sys.executable, "-c", code], what=what, env=env, cwd=cwd, timeout=timeout)


def wait_for(condition: Callable[[], T], *, what: str, timeout: float = WAIT_TIMEOUT_S,
             interval: float = 0.5, detail: Callable[[], str] | None = None) -> T:
    """Poll `condition()` until it returns something true (returned), failing the test with
    `what` (and `detail()`, e.g. a job's logs) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)
