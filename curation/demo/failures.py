"""The demo's failure prompts (`failures.jsonl`): what a model trained on the demo data got
wrong, as `curate hardcases` reads them, one decision of each kind. The concepts come from the
demo wiki (`curation.demo.wiki`), so the coverage report has present, empty and absent ones.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FAILURES", "write_failure_prompts"]

FAILURES = (
    {"prompt": "a red car by the sea at night", "action": "report"},
    {"prompt": "a blurry photo of a lighthouse in the snow", "action": "prune",
     "reason": "blurred lighthouse photos teach blur"},
    {"prompt": "an owl sitting on a teapot", "action": "boost", "reason": "owls come out with the wrong anatomy"},
    {"prompt": "squirrel fish, the Suzhou dish 松鼠鳜鱼 on a plate", "action": "fill", "tags": ["squirrel fish"],
     "reason": "the model draws a squirrel and a fish"},
)


def write_failure_prompts(path: str | Path) -> Path:
    """Write `FAILURES` as JSON Lines to `path` (kept if it exists)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in FAILURES), encoding="utf-8")
    return path
