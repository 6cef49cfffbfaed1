"""t2i-curation: text-to-image data curation on Ray Data.

The Python API, imported lazily (`import curation` loads no torch, Ray or step module):

    from curation import load_spec, run_job, run_step
    run_step("./lake", "ingest", source="./images")
    run_job(load_spec("jobs/profile.yaml"))

The steps are those of `curation.steps.registry`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_job", "load_spec", "run_job", "run_step"]

_LAZY = {
    "load_spec": "curation.config.spec",
    "run_job": "curation.steps.run",
    "run_step": "curation.steps.run",
    "check_job": "curation.steps.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'curation' has no attribute {name!r}")
