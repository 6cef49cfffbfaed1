"""Resolution buckets and image sequence lengths for a trainer's dynamic batcher.

A bucket is a (height, width) in px with area close to, never above, resolution², both
sides multiples of `step`. Each image goes to the bucket with the nearest log aspect ratio
(the trainer resizes and crops to it), and its cost in the transformer is the number of
latent patches: (H / (vae_factor·patch_size)) · (W / (vae_factor·patch_size)) tokens,
4096 for 1024×1024 with an 8× VAE and 2×2 patches. Manifests keep the original width and
height too, for trainers that condition on original size and crop (SDXL-style).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BucketConfig", "assign_buckets", "make_buckets", "map_resolution", "seq_len"]


@dataclass
class BucketConfig:
    """Bucket geometry.

    resolution: target area is resolution² px (1024 → ~1 MP buckets); a multiple of step.
    step: every bucket side is a multiple of this, px; a multiple of vae_factor·patch_size so
        bucket sides map to whole latent patches.
    max_aspect: largest max(h, w) / min(h, w) of any bucket; images beyond it go to the most
        extreme bucket (and get cropped).
    vae_factor: spatial downsampling of the VAE (8 for SD/SDXL/SD3/Flux-style VAEs).
    patch_size: transformer patch side in latent pixels (2 for DiT/MMDiT).
    """

    resolution: int = field(default=1024, metadata={"min": 1})
    step: int = field(default=64, metadata={"min": 1})
    max_aspect: float = field(default=4.0, metadata={"min": 1.0})
    vae_factor: int = field(default=8, metadata={"min": 1})
    patch_size: int = field(default=2, metadata={"min": 1})

    def __post_init__(self) -> None:
        for name in ("resolution", "step", "vae_factor", "patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        unit = self.vae_factor * self.patch_size
        if self.step % unit:
            raise ValueError(
                f"step ({self.step} px) must be a multiple of vae_factor·patch_size "
                f"({self.vae_factor}·{self.patch_size} = {unit} px) so bucket sides are whole patches"
            )
        if self.resolution < self.step:
            raise ValueError(f"resolution ({self.resolution} px) must be >= step ({self.step} px)")
        if self.resolution % self.step:
            raise ValueError(
                f"resolution ({self.resolution} px) must be a multiple of step ({self.step} px) "
                f"so the square bucket has area exactly resolution²"
            )
        if not self.max_aspect >= 1:
            raise ValueError(f"max_aspect must be >= 1 (max side / min side), got {self.max_aspect!r}")

    @property
    def patch_px(self) -> int:
        """Image pixels per token side: vae_factor·patch_size."""
        return self.vae_factor * self.patch_size


def make_buckets(cfg: BucketConfig) -> list[tuple[int, int]]:
    """All (height, width) buckets, sorted ascending, square included.

    For every width that is a multiple of step, the height is the largest multiple of step
    keeping height·width <= resolution²; pairs whose aspect exceeds max_aspect are dropped,
    and every bucket is added in both orientations.
    """
    cfg.__post_init__()  # a config mutated after construction is checked again
    area = cfg.resolution * cfg.resolution
    buckets = set()
    for w in range(cfg.step, area // cfg.step + 1, cfg.step):
        h = (area // w) // cfg.step * cfg.step
        if h >= cfg.step and max(h, w) <= cfg.max_aspect * min(h, w):
            # Both orientations: the set is symmetric under transpose, so portrait images get
            # the same choice of aspects as landscape ones.
            buckets.add((h, w))
            buckets.add((w, h))
    return sorted(buckets)


def assign_buckets(height, width, buckets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (height, width) per image: the bucket whose log(h/w) is nearest the image's.

    height, width: image sizes in px (after EXIF rotation), array-like of equal shape, > 0.
    Images more extreme than every bucket get the most extreme bucket on their side. On an
    exact tie the bucket listed first in `buckets` wins (equal-aspect buckets: the first one).
    Returns int64 arrays (bucket_height, bucket_width).
    """
    h = np.asarray(height, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)
    if h.shape != w.shape:
        raise ValueError(f"height {h.shape} and width {w.shape} differ in shape")
    if not buckets:
        raise ValueError("no buckets given")
    bad = ~(np.isfinite(h) & np.isfinite(w) & (h > 0) & (w > 0))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} images have a missing, zero or negative side; filter them first")
    b = np.asarray(buckets, dtype=np.int64).reshape(-1, 2)
    # log(h) - log(w) (not log(h/w)) is exactly antisymmetric, so mirrored buckets tie exactly.
    b_aspect = np.log(b[:, 0].astype(np.float64)) - np.log(b[:, 1].astype(np.float64))
    order = np.lexsort((np.arange(len(b)), b_aspect))  # by aspect, then list position
    sorted_aspect = b_aspect[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_aspect[1:] != sorted_aspect[:-1]
    aspects, index = sorted_aspect[first], order[first]

    x = np.log(h) - np.log(w)
    pos = np.searchsorted(aspects, x)
    left = np.clip(pos - 1, 0, len(aspects) - 1)
    right = np.clip(pos, 0, len(aspects) - 1)
    d_left = np.abs(x - aspects[left])
    d_right = np.abs(aspects[right] - x)
    pick = np.where(
        d_left < d_right, left,
        np.where(d_right < d_left, right, np.where(index[left] <= index[right], left, right)),
    )
    chosen = b[index[pick]]
    return chosen[..., 0], chosen[..., 1]


def seq_len(bh, bw, cfg: BucketConfig):
    """Image tokens at bucket size: (bh // p) · (bw // p), p = vae_factor·patch_size px.

    Works on ints or arrays; sides not divisible by p are floored (the trainer crops them).
    """
    p = cfg.patch_px
    tokens = (np.asarray(bh, dtype=np.int64) // p) * (np.asarray(bw, dtype=np.int64) // p)
    return int(tokens) if tokens.ndim == 0 else tokens


def map_resolution(height, width, min_long: int, max_long: int, multiple: int, max_aspect: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The resolution-mapping function of arbitrary-resolution stages: native size -> training size.

    height, width: native sizes, px (array-like, > 0). The aspect is clipped to max_aspect (the
    long side is shortened: the trainer crops the excess), the long side L is clamped to
    [min_long, max_long] and both sides are scaled by clamp(L) / L, then rounded to the nearest
    multiple of `multiple` px (the patch grid), at least one multiple. Returns int64 arrays
    (training_height, training_width). Examples (multiple 16, range 512–1536): 4000×3000 ->
    1536×1152; 300×200 -> 512×336; 1000×1000 -> 1008×1008 (rounded to the grid); 4000×1000
    (aspect 4, clipped to 3) -> 1536×512.
    """
    h = np.asarray(height, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)
    if np.any(~(np.isfinite(h) & np.isfinite(w) & (h > 0) & (w > 0))):
        raise ValueError("images have a missing, zero or negative side; filter them first")
    short = np.minimum(h, w)
    long_ = np.minimum(np.maximum(h, w), short * max_aspect)
    portrait = h >= w
    h, w = np.where(portrait, long_, h), np.where(portrait, w, long_)
    scale = np.clip(long_, min_long, max_long) / long_
    # half up (not numpy's half-to-even), so 1000 px on a 16 px grid is 1008, not 992
    th = np.maximum(np.floor(h * scale / multiple + 0.5), 1).astype(np.int64) * multiple
    tw = np.maximum(np.floor(w * scale / multiple + 0.5), 1).astype(np.int64) * multiple
    return th, tw
