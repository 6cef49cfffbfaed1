"""A simulated annotator for the demo: reads the Label Studio tasks `curate review export` wrote
and writes the project export Label Studio would give back after a reviewer's pass, in Label
Studio's JSON export format (tasks with `annotations`: result, completed_by, timestamps).

Deterministic from the task's review id: about half the items accepted as proposed, a quarter
corrected (the long caption rewritten to say what the reviewer saw, the tags trimmed to two),
a quarter rejected with a note. Stands in for a human in `curate demo` and the notebook; the
real round trip is `tests/test_labelstudio_live.py`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

__all__ = ["simulate_annotations"]

NOTES = ("not a photograph", "unreadable: mostly noise", "duplicate of another item")


def _verdict(review_id: str) -> str:
    h = int(hashlib.sha256(review_id.encode()).hexdigest()[:8], 16) % 4
    return ("accept", "accept", "correct", "reject")[h]


def simulate_annotations(tasks_file: str | Path, out: str | Path, annotator: str = "reviewer@demo.local",
                         when: str = "2026-01-15T09:00:00Z") -> dict[str, int]:
    """Write the simulated export for the tasks in `tasks_file` to `out`; returns the verdicts."""
    tasks = json.loads(Path(tasks_file).read_text(encoding="utf-8"))
    counts = {"accept": 0, "correct": 0, "reject": 0}
    exported = []
    for n, task in enumerate(tasks, start=1):
        data = task["data"]
        verdict = _verdict(data["review_id"])
        counts[verdict] += 1
        result = [copy.deepcopy(r) for r in (task.get("predictions") or [{}])[0].get("result", [])
                  if r.get("from_name") != "verdict"]
        if verdict == "correct":
            tags = [t.strip() for t in (data.get("proposed_tags") or "").split(",") if t.strip()][:2] or ["photo"]
            edits = {"caption_long": f"A reviewed photo: {', '.join(tags)}; colours and shapes as shown, no text.",
                     "tags": ", ".join(tags)}
            result = [r for r in result if r["from_name"] not in edits]
            result += [{"id": name, "from_name": name, "to_name": "image", "type": "textarea",
                        "value": {"text": [text]}} for name, text in edits.items()]
        if verdict == "reject":
            note = NOTES[int(hashlib.sha256(data["review_id"].encode()).hexdigest()[8:12], 16) % len(NOTES)]
            result.append({"id": "note", "from_name": "note", "to_name": "image", "type": "textarea",
                           "value": {"text": [note]}})
        result.append({"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                       "value": {"choices": [verdict]}})
        exported.append({"id": n, "data": data, "predictions": task.get("predictions", []), "annotations": [{
            "id": n, "completed_by": {"id": 1, "email": annotator}, "result": result, "was_cancelled": False,
            "ground_truth": False, "created_at": when, "updated_at": when, "lead_time": 12.5}]})
    Path(out).write_text(json.dumps(exported, ensure_ascii=False, indent=1), encoding="utf-8")
    return counts
