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

    from curation.demo.wiki import write_demo_wiki

    workdir = tmp_path_factory.mktemp("demo-run")
    write_demo_wiki(workdir / "wiki")
    os.environ["CURATE_DEMO_DIR"] = str(workdir)
    spec = load_spec(packaged_spec_path("demo.yaml"))
    spec.steps[0].source = str(demo_corpus.root)
    summaries = run_job(spec, printer=lambda s: None)
    return {"lake": spec.lake, "workdir": workdir, "summaries": summaries, "spec": spec}
