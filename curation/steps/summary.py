"""The short summary every step ends with: rows in/out, errors by kind, throughput."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

_DETAIL = re.compile(r"\s*[\(\[:].*$")


def error_kind(message: str) -> str:
    """'decode: not a recognised image (looks like HTML): ...' -> 'decode: not a recognised image'."""
    head, _, rest = message.partition(": ")
    return f"{head}: {_DETAIL.sub('', rest)[:60]}" if rest else head[:60]


def error_kinds(errors: pa.ChunkedArray | pa.Array | list) -> dict[str, int]:
    """Count each kind of error over an `error` column ('; '-joined messages per row)."""
    values = errors.to_pylist() if hasattr(errors, "to_pylist") else list(errors)
    counts: Counter[str] = Counter()
    for value in values:
        if value:
            for part in value.split("; "):
                counts[error_kind(part)] += 1
    return dict(counts.most_common())


@dataclass
class StepSummary:
    step: str
    rows_in: int
    rows_out: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    # ids whose recorded decision this run changed, by kind (e.g. dedup's "kept_to_duplicate");
    # a nightly run keeps them in its `runs` row; render() shows the counts only
    changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "seconds": round(self.seconds, 3), "rows_per_second": round(self.rows_per_second, 1),
                "errors": self.errors, **self.notes}

    def render(self) -> str:
        lines = [f"[{self.step}] {self.rows_in} in -> {self.rows_out} out in {self.seconds:.1f}s "
                 f"({self.rows_per_second:.1f} rows/s)"]
        for key, value in self.notes.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
            lines.append(f"  {key}: {value}")
        for kind, ids in self.changes.items():
            lines.append(f"  changed {kind}: {len(ids)}")
        if self.errors:
            lines.append(f"  errors ({sum(self.errors.values())}):")
            lines += [f"    {n:6d}  {kind}" for kind, n in self.errors.items()]
        return "\n".join(lines)
