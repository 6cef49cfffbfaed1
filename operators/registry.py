"""Operators by name: a small explicit table, so what exists is visible in one place."""

from __future__ import annotations

from operators.base import Operator
from operators.degradation import Degradation
from operators.entropy import BorderStd, JpegBpp
from operators.metadata import Compression, Metadata
from operators.nearhash import NearHash
from operators.ocr import Ocr
from operators.phash import PHash

OPERATORS: dict[str, type[Operator]] = {
    op.name: op for op in (Metadata, Compression, PHash, NearHash, BorderStd, JpegBpp, Degradation, Ocr)
}

# Cheap header reads first, then the pixel measures that share the decode's views.
DEFAULT_PROFILE_OPERATORS: list[str] = [
    "metadata", "compression", "phash", "nearhash", "border_std", "jpeg_bpp", "degradation",
]
# OCR is slow (~1 s per image on a CPU core): its own operator set, run by the `ocr` step into its
# own table (curation.steps.profiling.ocr), never a member of the profile set.
DEFAULT_OCR_OPERATORS: list[str] = ["ocr"]


def get_operator(name: str) -> type[Operator]:
    """The operator class registered as `name`; KeyError naming the known ones otherwise."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; known: {', '.join(sorted(OPERATORS))}") from None
