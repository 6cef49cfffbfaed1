"""The operator contract.

An operator is a small class that declares what it reads (`need`: the pixels it needs), what it
writes (`writes`: typed Arrow fields, the contract with the lake) and its version, and computes
those columns for one decoded item. It never touches Ray, files or other operators: the profiling
stage (`curation.steps.profiling.profile`) reads each item once, decodes it once at the smallest size that serves
every operator in the stage (`operators.decode`), and hands the same `ImageItem` to each one.

A `compute` that raises is recorded as that row's error for that operator; the row is kept and
the operator's columns are left null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

if TYPE_CHECKING:
    from operators.decode import ImageItem


@dataclass(frozen=True)
class DecodeNeed:
    """The pixels an operator needs.

    kind: "header" (no pixel decode: size, mode, EXIF, quantisation tables), "luma" (8-bit
        grey) or "rgb" (8-bit RGB).
    min_long_side: the decoded image's longer side must be at least this many pixels (or the
        whole image, if it is smaller). 0 means any size.
    max_reduction: the largest JPEG DCT-domain reduction factor (1, 2, 4 or 8) the operator can
        accept, for measures that depend on the native pixel grid (JPEG blockiness needs the 8-px
        block grid to survive, so it accepts at most 2).
    """

    kind: str = "header"
    min_long_side: int = 0
    max_reduction: int = 8

    def __post_init__(self) -> None:
        if self.kind not in ("header", "luma", "rgb"):
            raise ValueError(f"DecodeNeed.kind must be header, luma or rgb, not {self.kind!r}")
        if self.max_reduction not in (1, 2, 4, 8):
            raise ValueError(f"DecodeNeed.max_reduction must be 1, 2, 4 or 8, not {self.max_reduction}")
        if self.min_long_side < 0:
            raise ValueError("DecodeNeed.min_long_side must be >= 0")


class Operator:
    """Base class: subclasses set the class attributes and implement `compute`.

    name: registry key and error prefix, e.g. "phash".
    version: bump when outputs change, so the lake can tell stale profiles apart.
    need: the decode the operator requires.
    writes: Arrow fields of the columns it produces; field metadata carries units/scales.
    resources: Ray resources a worker needs to run it (CPU operators: {"num_cpus": 1}; keys
        num_cpus, num_gpus, memory in bytes, or a custom Ray resource). The profiling stage
        sizes its tasks from the operators it runs (`curation.runtime.ray_stage_args`: the
        largest CPU / GPU need, the summed memory); without GPUs in the cluster num_gpus is
        dropped, so a GPU operator must also run on CPU.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    need: ClassVar[DecodeNeed] = DecodeNeed()
    writes: ClassVar[tuple[pa.Field, ...]] = ()
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}

    def compute(self, item: ImageItem) -> dict[str, Any]:
        """Return a dict with a value for each field in `writes` (missing keys become null)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    @classmethod
    def column_names(cls) -> list[str]:
        return [f.name for f in cls.writes]

    @classmethod
    def identity(cls) -> str:
        """`name@version`, recorded as the producer of the columns it writes."""
        return f"{cls.name}@{cls.version}"


def field(name: str, type_: pa.DataType, doc: str) -> pa.Field:
    """A nullable Arrow field whose metadata `doc` says what it is, its unit and scale."""
    return pa.field(name, type_, nullable=True, metadata={"doc": doc})
