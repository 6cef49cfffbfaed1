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
from typing import Callable, ClassVar

import numpy as np
import torch
from PIL import Image

from operators.models.errors import WeightsError

__all__ = ["Encoder", "ImageEmbeddings", "WeightsError", "l2_normalize"]


@dataclass(frozen=True)
class ImageEmbeddings:
    """One encoder forward over a batch: raw and L2-normalised image embeddings, float32 (B, D)."""

    raw: torch.Tensor
    normalized: torch.Tensor


class Encoder:
    """An image/text model. Subclasses build `model`, `geometry`, the normalisation constants and
    the attributes below in `__init__`, and implement `_image_features` and `encode_texts`.

    name: the configured name (e.g. "clip_l14"), used in column names.
    identity: name@architecture#<checkpoint sha256[:12]> (or #random-<seed>), recorded as provenance.
    embed_dim: embedding width D.
    image_size: (height, width) of the prepared image, px.
    geometry: the picklable resize/crop (`operators.models.prep`) that `prepare` applies; the
        scoring step resolves the same object from config for its CPU stage.
    random_weights: True when no checkpoint was loaded (tests, demo): scores are meaningless.
    resources: Ray resources of the model actor that runs it on a GPU cluster (the scoring step
        merges them over its encoders with `curation.runtime.ray_stage_args`; without GPUs
        `num_gpus` is dropped and the model runs on one CPU).
    prepare_resources: Ray resources of the CPU task that decodes and runs `prepare`.
    """

    name: str
    identity: str
    embed_dim: int
    image_size: tuple[int, int]
    geometry: Callable[[Image.Image], np.ndarray]
    random_weights: bool = False
    kind: ClassVar[str] = ""
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1, "num_gpus": 1}
    prepare_resources: ClassVar[dict[str, float]] = {"num_cpus": 1}
    model: torch.nn.Module
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    _mean: torch.Tensor  # (1, 3, 1, 1), applied after scaling to [0, 1]
    _std: torch.Tensor
    _scale: float = 1.0 / 255.0  # uint8 -> [0, 1]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 (H, W, 3) at `image_size`, the model's resize/crop policy."""
        return self.geometry(image)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "Encoder":
        """Move the model; fp16/bf16 on GPU (LayerNorm still accumulates in fp32 in the CUDA
        kernels). Returns self."""
        self.device, self.dtype = torch.device(device), dtype
        self.model.to(device=self.device, dtype=dtype)
        self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)
        return self

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray | torch.Tensor) -> ImageEmbeddings:
        """uint8 (B, H, W, 3) -> raw and L2-normalised embeddings (float32 on the model's
        device). Normalises in fp32, casts once, ONE forward."""
        x = pixel_batch(pixels, self.image_size)
        if x.shape[0] == 0:
            empty = torch.zeros(0, self.embed_dim, device=self.device)
            return ImageEmbeddings(raw=empty, normalized=empty)
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().mul_(self._scale)
        x = (x - self._mean) / self._std
        raw = self._image_features(x.to(self.dtype)).float()
        return ImageEmbeddings(raw=raw, normalized=l2_normalize(raw))

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, H, W) in the model dtype -> raw image embedding (B, D)."""
        raise NotImplementedError(f"{type(self).__name__}._image_features")

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Captions -> L2-normalised text embeddings, float32 (B, D). One batched forward."""
        raise NotImplementedError(f"{type(self).__name__}.encode_texts")


def pixel_batch(pixels: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Check a uint8 (B, H, W, 3) batch from `prepare` (one (H, W, 3) image is promoted to B=1);
    returns a uint8 tensor, still on its own device (numpy: a zero-copy CPU view)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (*size, 3):
        raise ValueError(f"expected uint8 (B, {size[0]}, {size[1]}, 3) from prepare(), got {x.dtype} {tuple(x.shape)}")
    return x


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
