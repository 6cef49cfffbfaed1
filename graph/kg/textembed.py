"""Text embedders for concept names: callables `list[str] -> float32 [n, d]`, rows L2-normalised.

- `HashingEmbedder`: character n-gram feature hashing of the folded text. No weights, no
  network, deterministic across processes (crc32, not Python's salted `hash`). It groups
  surface forms ('red car', 'red cars', 'car red') but knows no synonyms: the offline default
  for tests and the demo.
- `EncoderEmbedder`: the text tower of a model operator's encoder (open_clip, Chinese-CLIP),
  loaded from local weights through `operators.models.encoders.load_encoder`; knows meaning.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Protocol

import numpy as np

from graph.kg.textnorm import fold

Embed = Callable[[list[str]], np.ndarray]


class TextEmbedder(Protocol):
    name: str

    def __call__(self, texts: list[str]) -> np.ndarray: ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class HashingEmbedder:
    """Signed feature hashing of character n-grams of ' <folded text> ' into `dim` buckets.

    dim: output dimension; ngrams: inclusive (min, max) n-gram lengths in characters.
    """

    def __init__(self, dim: int = 256, ngrams: tuple[int, int] = (3, 4)) -> None:
        if dim < 2 or ngrams[0] < 1 or ngrams[1] < ngrams[0]:
            raise ValueError(f"HashingEmbedder: bad dim {dim} or ngrams {ngrams}")
        self.dim, self.ngrams = dim, tuple(ngrams)
        self.name = f"hashing-{dim}-{ngrams[0]}{ngrams[1]}"

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows, cols, vals = [], [], []
        lo, hi = self.ngrams
        for r, text in enumerate(texts):
            s = f" {fold(text)} ".encode("utf-8")
            for n in range(lo, hi + 1):
                for i in range(max(len(s) - n + 1, 0)):
                    h = zlib.crc32(s[i:i + n])
                    rows.append(r)
                    cols.append(h % self.dim)
                    # a second, independent bit picks the sign, so collisions cancel on average
                    vals.append(1.0 if (h >> 31) & 1 else -1.0)
        out = np.zeros((len(texts), self.dim), np.float32)
        np.add.at(out, (np.asarray(rows, np.int64), np.asarray(cols, np.int64)), np.asarray(vals, np.float32))
        return normalize_rows(out)


class EncoderEmbedder:
    """Text embeddings from a model operator's encoder (`EncoderConfig`), batched, CPU or GPU
    (device "auto": CUDA when visible, else CPU). The model loads on first call (weights from
    local paths; a clear error names what to set)."""

    def __init__(self, encoder: Any, batch_size: int = 256, device: str = "cpu") -> None:
        from operators.models.encoders import EncoderConfig, encoder_identity

        self.cfg = encoder if isinstance(encoder, EncoderConfig) else EncoderConfig.from_dict(encoder)
        self.batch_size, self.device = batch_size, device
        self.name = encoder_identity(self.cfg)
        self._encoder = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            import torch

            from operators.models.encoders import encoder_dtype, load_encoder

            if self.device == "auto":
                self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self._encoder = load_encoder(self.cfg).to(self.device, encoder_dtype(self.cfg, self.device))
        parts = [self._encoder.encode_texts(list(texts[i:i + self.batch_size])).cpu().numpy()
                 for i in range(0, len(texts), self.batch_size)]
        return normalize_rows(np.concatenate(parts)) if parts else np.zeros((0, self._encoder.embed_dim), np.float32)


def make_embedder(spec: str | dict | None) -> TextEmbedder:
    """'hashing' (or None) -> HashingEmbedder(); a dict -> EncoderEmbedder(EncoderConfig dict)."""
    if spec is None or spec == "hashing":
        return HashingEmbedder()
    if isinstance(spec, dict):
        return EncoderEmbedder(spec)
    raise ValueError(f"text embedder must be 'hashing' or an encoder config mapping, got {spec!r}")
