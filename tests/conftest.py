"""Shared fixtures: one Ray session per test run, small generated corpora."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("CURATE_PROGRESS", "0")
# Hugging Face libraries must never reach for the hub in tests (the readers test loads local files).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Object-store tests talk to a local S3 server (moto) that the `s3_server` fixture starts on this
# port. The endpoint and dummy credentials are set here, before Ray starts, so its workers inherit
# them; nothing in the tests can reach a real bucket.
S3_PORT = _free_port()
os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}", AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                  AWS_ALLOW_HTTP="true", AWS_CONDITIONAL_PUT="etag")
for _name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole run (start/stop costs seconds)."""
    import ray

    from curation.runtime import RuntimeConfig, init_ray

    # With the dashboard, so test_cluster can submit a job to this session as `ray job submit` would.
    init_ray(RuntimeConfig(num_cpus=2, object_store_memory=300 * 1024 * 1024, dashboard=True))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server (moto) at AWS_ENDPOINT_URL for the whole run; yields a function that
    creates a bucket and returns its `s3://` URI."""
    moto_server = pytest.importorskip("moto.server")
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    def bucket(name: str) -> str:
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    yield bucket
    server.stop()


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo corpus (generated once per run, read-only for tests)."""
    from curation.demo import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", n_images=40, seed=0)


@pytest.fixture(scope="session")
def demo_lake(ray_session, demo_corpus, tmp_path_factory):
    """A lake after `ingest -> profile -> export lowres` of the demo corpus, via the packaged
    demo spec (shared by the export, CLI and notebook tests; treat as read-only)."""
    from curation.steps.run import run_job
    from curation.config.spec import load_spec, packaged_spec_path

    from curation.demo.edits import write_pair_inputs
    from curation.demo.failures import write_failure_prompts
    from curation.demo.wiki import write_demo_wiki

    workdir = tmp_path_factory.mktemp("demo-run")
    write_demo_wiki(workdir / "wiki")
    write_pair_inputs(workdir)
    write_failure_prompts(workdir / "failures.jsonl")
    os.environ["CURATE_DEMO_DIR"] = str(workdir)
    spec = load_spec(packaged_spec_path("demo.yaml"))
    spec.steps[0].source = str(demo_corpus.root)
    summaries = run_job(spec, printer=lambda s: None)
    return {"lake": spec.lake, "workdir": workdir, "summaries": summaries, "spec": spec}
