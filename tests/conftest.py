"""Shared fixtures: one Ray session per test run, small generated corpora."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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

    # Without the dashboard, as `curate` starts Ray: test_cluster starts its own instance with one.
    init_ray(RuntimeConfig(num_cpus=2, object_store_memory=300 * 1024 * 1024))
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
def demo_workdir(tmp_path_factory):
    """Where the session's demo lives (`curate demo --workdir`)."""
    return tmp_path_factory.mktemp("demo-run")


@pytest.fixture(scope="session")
def demo_corpus(demo_workdir):
    """The demo corpus, 40 images (generated once per run, read-only for tests)."""
    from curation.demo import make_demo_corpus

    return make_demo_corpus(demo_workdir / "corpus", n_images=40, seed=0)


@pytest.fixture(scope="session")
def demo_lake(ray_session, demo_corpus, demo_workdir):
    """The demo's lake after `jobs/demo.yaml` (`curate demo` up to its review round) on the
    demo corpus; shared by the export, CLI, notebook and other tests: treat as read-only."""
    from curation.demo.run import Demo

    lines: list[str] = []
    demo = Demo(str(demo_workdir), images=40, printer=lines.append)
    spec = demo.prepare()  # reuses the corpus
    summaries = demo.job()
    return {"lake": spec.lake, "workdir": demo_workdir, "summaries": summaries, "spec": spec, "lines": lines}


@pytest.fixture(scope="session")
def demo_output(demo_lake, tmp_path_factory):
    """Everything `curate demo` prints: the shared demo's job, then its review round and second
    night on a copy of its workdir (the corpus stays where it is), so `demo_lake` is unchanged."""
    from curation.demo.run import Demo

    copy = tmp_path_factory.mktemp("demo-copy") / "workdir"
    shutil.copytree(demo_lake["workdir"], copy, ignore=lambda d, names: ["corpus"] if Path(d) == demo_lake["workdir"] else [])
    lines = list(demo_lake["lines"])
    demo = Demo(str(copy), images=40, printer=lines.append)
    try:
        demo.review_round()
        demo.second_night()
    finally:
        os.environ["CURATE_DEMO_DIR"] = str(demo_lake["workdir"])  # the shared demo's paths again
    return "\n".join(lines)
