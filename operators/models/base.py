"""Model contracts: encoders (image/text towers) and heads over one image embedding.

The scoring step splits every encoder's work in two so the GPU is never starved by decoding:

- `Encoder.prepare(image)` runs in CPU task stages on the one decode of the profiling plan: the
  geometric part of the model's preprocessing (resize / crop to `image_size`), returning a
  uint8 array (H, W, 3). uint8 keeps the object-store traffic 4x below float32.
- `Encoder.encode_images(uint8 batch)` runs in the model actor: normalisation (the model's
  own mean/std), one forward pass, and both the raw and the L2-normalised embedding. Every head
  of that encoder reads those embeddings; the forward is never repeated per head.

Heads are small torch modules that map an embedding batch (B, D) to one score per row. They
declare which embedding they read (`input`: "normalized" or "raw").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image


class WeightsError(FileNotFoundError):
    """Weights are missing or do not match the expected layout; the message says what to set."""


@dataclass(frozen=True)
class ImageEmbeddings:
    """One encoder forward over a batch: raw and L2-normalised image embeddings, float32 (B, D)."""

    raw: torch.Tensor
    normalized: torch.Tensor


class Encoder:
    """An image/text model. Subclasses set the attributes in `__init__` and implement the methods.

    name: the configured name (e.g. "clip_l14"), used in column names.
    identity: name@architecture#<checkpoint sha256[:12]> (or #random-<seed>), recorded as provenance.
    embed_dim: embedding width D.
    image_size: (height, width) of the prepared image, px.
    random_weights: True when no checkpoint was loaded (tests, demo): scores are meaningless.
    """

    name: str
    identity: str
    embed_dim: int
    image_size: tuple[int, int]
    random_weights: bool = False
    kind: ClassVar[str] = ""

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 (H, W, 3) at `image_size`, the model's resize/crop policy."""
        raise NotImplementedError(f"{type(self).__name__}.prepare")

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> "Encoder":
        """Move the model; fp16/bf16 on GPU. Returns self."""
        raise NotImplementedError(f"{type(self).__name__}.to")

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> ImageEmbeddings:
        """uint8 (B, H, W, 3) -> embeddings (float32 on the model's device). One forward."""
        raise NotImplementedError(f"{type(self).__name__}.encode_images")

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Captions -> L2-normalised text embeddings, float32 (B, D). One batched forward."""
        raise NotImplementedError(f"{type(self).__name__}.encode_texts")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
