"""`ray job submit --working-dir . -- curate run SPEC` against a live Ray session.

The shared test session runs with its dashboard (the job server), so this submits the job
exactly as the CLI would: the working directory is uploaded, the entrypoint runs as a Ray job
driver and connects to the session through RAY_ADDRESS, not through this process.
"""

import re
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def test_job_submit_runs_a_spec(ray_session, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from curation.runtime import init_ray
    from curation.demo import write_jpegs

    url = init_ray()["dashboard_url"]
    assert url, "the test session must run with the dashboard"
    write_jpegs(tmp_path / "images", 5, megapixels=(0.1, 0.2), seed=7)
    client = JobSubmissionClient(f"http://{url}")
    submit = dict(
        # `python -m curation.cli.main` is `curate`; the job driver may not have the venv on PATH.
        entrypoint=f"{sys.executable} -m curation.cli.main run jobs/profile.yaml",
        runtime_env={"working_dir": str(REPO), "env_vars": {
            "CURATE_SOURCE": str(tmp_path / "images"), "CURATE_LAKE": str(tmp_path / "lake"),
            "CURATE_OUT": str(tmp_path / "out"), "CURATE_PROGRESS": "0"}},
    )
    for attempt in range(30):
        try:
            job = client.submit_job(**submit)
            break
        except RuntimeError as exc:  # the dashboard's job agent starts lazily; Ray says "try again later"
            if "No available agent" not in str(exc) or attempt == 29:
                raise
            time.sleep(2)
    deadline = time.time() + 240
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.time() < deadline, client.get_job_logs(job)
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
    assert "[ingest] 5 in -> 5 out" in logs and "[profile] 5 in -> 5 out" in logs
    kept = int(re.search(r"\[export\] 5 in -> (\d+) out", logs).group(1))
    assert pq.read_table(tmp_path / "out" / "lowres" / "manifest.parquet").num_rows == kept
    assert (tmp_path / "lake" / "profiles" / "_delta_log" / f"{0:020d}.json").exists()
