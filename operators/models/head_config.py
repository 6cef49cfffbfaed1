"""The configuration of one scoring head (`heads[]` in a job spec), importable without torch:
job specs hold it, and reading a spec must not cost torch's import. The heads themselves are in
`operators.models.heads`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HeadConfig"]


@dataclass
class HeadConfig:
    """One scoring head (`heads[]` in a job spec).

    name: output column name, e.g. "aesthetic".
    kind: layout and meaning of the output:
        "aesthetic": improved-aesthetic-predictor, score on the AVA scale (~1-10, higher = nicer);
        "nsfw": CLIP-based-NSFW-Detector, probability the image is unsafe, [0, 1];
        "aigc": UnivFD linear probe, probability the image is AI-generated, [0, 1];
        "mlp": in-house `MlpHead`, scale set by `output`.
    encoder: name of the encoder whose image embedding the head reads (e.g. "clip_l14").
    weights: local path of the state dict (.pth); None only with `random` or `optional`.
    optional: a missing weight file (or weights None) skips the head instead of failing the job.
    random: allow a seeded random init when `weights` is None (tests and the demo only; scores
        are meaningless and the head is marked `random_weights`).
    seed: seed of that random init.
    in_dim: embedding width D; None = the encoder's. When set, it must equal the encoder's.
    hidden: ("mlp") widths of the hidden Linear layers; [] = a linear probe.
    activation: ("mlp") nonlinearity between Linear layers: "relu", "gelu" or "none".
    input: ("mlp") embedding read: "normalized" (L2-normalised) or "raw".
    output: ("mlp") "sigmoid" (a probability in [0, 1]) or "identity" (unbounded score).
    """

    name: str
    kind: Literal["aesthetic", "nsfw", "aigc", "mlp"]
    encoder: str
    weights: str | None = None
    optional: bool = False
    random: bool = False
    seed: int = 0
    in_dim: int | None = None
    hidden: list[int] = field(default_factory=list)
    activation: Literal["relu", "gelu", "none"] = "relu"
    input: Literal["normalized", "raw"] = "normalized"
    output: Literal["sigmoid", "identity"] = "identity"
