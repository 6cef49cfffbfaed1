"""`ray job submit --working-dir . -- curate run SPEC` against a live Ray cluster.

The job server lives in Ray's dashboard, which the shared test session does not start (it costs
seconds and memory, and nothing else needs it). This module starts a cluster of its own, as a
user does: `ray start --head --block`, on free ports (the shared session's dashboard agent holds
Ray's default agent port, and a second agent on it would never come up), and submits the job to
it exactly as the CLI would: the working directory is uploaded, the entrypoint runs as a Ray job
driver and connects through RAY_ADDRESS.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.runtime import BUSY_MACHINE_ENV

from procs import PROCESS_TIMEOUT_S, WAIT_TIMEOUT_S, curate_env, wait_for

REPO = Path(__file__).resolve().parents[1]
START_ATTEMPTS = 3  # as curate's runtime.start_attempts: Ray's fixed 30 s wait for its node may run out


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(head: subprocess.Popen) -> None:
    """SIGKILL to the head's process group: `ray start` and every Ray process it started, all
    disposable (its temp dir goes too); a SIGTERM lets the raylet take its time to drain."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    """The dashboard URL of a Ray cluster of this module's own."""
    tmp = tmp_path_factory.mktemp("cluster")
    # a Ray temp dir of its own (short: Ray's socket paths live under it), so the address file
    # `ray start` writes never points anyone else's Ray at this cluster
    ray_tmp = tempfile.mkdtemp(prefix="rayc-")
    gcs, dashboard, agent = _free_ports(3)
    url = f"http://127.0.0.1:{dashboard}"
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={agent}", "--num-cpus=2", f"--object-store-memory={200 * 2 ** 20}",
           f"--temp-dir={ray_tmp}", "--disable-usage-stats"]
    head = None
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            log = tmp / f"head-{attempt}.log"
            with open(log, "w") as out:  # a file, not a pipe: Ray's processes inherit it
                head = subprocess.Popen(cmd, cwd=tmp, env=curate_env(**BUSY_MACHINE_ENV), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            wait_for(lambda: head.poll() is not None or _answers(url), timeout=PROCESS_TIMEOUT_S,
                     what="`ray start --head` to serve its dashboard", detail=lambda: log.read_text()[-3000:])
            if head.poll() is None:
                break
            _stop(head)  # whatever the failed start left
            if "timed out during startup" not in log.read_text() or attempt == START_ATTEMPTS:
                pytest.fail(f"`ray start --head` exited {head.returncode}:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        if head is not None:
            _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _submit(client, **submit) -> str:
    """submit_job, retried only while Ray says its job agent is not there yet: the dashboard
    starts the agent lazily and answers "No available agent to submit job, please try again later"."""
    refused: list[str] = []

    def attempt():
        try:
            return client.submit_job(**submit)
        except RuntimeError as exc:
            if "No available agent" not in str(exc):
                raise
            refused.append(str(exc))
            return None

    return wait_for(attempt, what="Ray's job agent to accept the job", timeout=WAIT_TIMEOUT_S, interval=2.0,
                    detail=lambda: f"refused {len(refused)} times: {refused[-1] if refused else ''}")


def test_job_submit_runs_a_spec(job_server, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from curation.demo import write_jpegs

    write_jpegs(tmp_path / "images", 5, megapixels=(0.1, 0.2), seed=7)
    client = JobSubmissionClient(job_server)
    job = _submit(
        client,
        # `python -m curation.cli.main` is `curate`; the job driver may not have the venv on PATH.
        entrypoint=f"{sys.executable} -m curation.cli.main run jobs/profile.yaml",
        runtime_env={"working_dir": str(REPO), "env_vars": {
            "CURATE_SOURCE": str(tmp_path / "images"), "CURATE_LAKE": str(tmp_path / "lake"),
            "CURATE_OUT": str(tmp_path / "out"), "CURATE_PROGRESS": "0"}},
    )
    ended = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    wait_for(lambda: client.get_job_status(job) in ended, what=f"job {job} to end", timeout=PROCESS_TIMEOUT_S,
             interval=1.0, detail=lambda: client.get_job_logs(job))
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
    assert "[ingest] 5 in -> 5 out" in logs and "[profile] 5 in -> 5 out" in logs
    kept = int(re.search(r"\[export\] 5 in -> (\d+) out", logs).group(1))
    assert pq.read_table(tmp_path / "out" / "lowres" / "manifest.parquet").num_rows == kept
    assert (tmp_path / "lake" / "profiles" / "_delta_log" / f"{0:020d}.json").exists()
