"""Operators by name: a small explicit table, so what exists is visible in one place."""

from __future__ import annotations

from operators.base import Operator
from operators.degradation import Degradation
from operators.entropy import BorderStd, JpegBpp
from operators.metadata import Compression, Metadata
from operators.nearhash import NearHash
from operators.phash import PHash

OPERATORS: dict[str, type[Operator]] = {
    op.name: op for op in (Metadata, Compression, PHash, NearHash, BorderStd, JpegBpp, Degradation)
}

# Cheap header reads first, then the pixel measures that share the decode's views.
DEFAULT_PROFILE_OPERATORS: list[str] = [
    "metadata", "compression", "phash", "nearhash", "border_std", "jpeg_bpp", "degradation",
]


def get_operator(name: str) -> type[Operator]:
    """The operator class registered as `name`; KeyError naming the known ones otherwise."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; known: {', '.join(sorted(OPERATORS))}") from None
