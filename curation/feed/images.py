"""Decode an item's bytes to a training tensor at its bucket size.

One image becomes exactly (bucket_height, bucket_width) px by *cover and centre-crop*: scaled
by max(bh/h, bw/w) so it covers the bucket, then the centred bh×bw window is kept. The crop
is done as one resample of the covered source region (`Image.resize(box=...)`), which gives
the same pixels as resizing the whole image and cropping afterwards without resampling the
parts that are thrown away. JPEGs are decoded at reduced size in the DCT domain
(`Image.draft`) whenever the reduced image still covers the bucket, so a 2 MP photo headed
for a 256² bucket never has its full-resolution pixels computed.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["RESAMPLE", "decode_cover", "to_tensor"]

# Pillow filters by name, so configs and call sites say "bicubic" instead of an enum.
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# EXIF orientations 5-8 rotate by 90°: the stored (raw) image has height and width swapped.
_SWAPS_AXES = {5, 6, 7, 8}


def decode_cover(data: bytes, height: int, width: int, resample: str = "bicubic") -> Image.Image:
    """RGB image of exactly `height`×`width` px (bucket size) from encoded image bytes.

    EXIF orientation is applied first, so the bucket is filled the way the image is viewed;
    transparent pixels are composited onto white (not the black that dropping alpha gives).
    Raises whatever Pillow raises for bytes it cannot decode (truncated, unknown format).
    """
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        _draft(im, height, width)
    im = ImageOps.exif_transpose(im)
    im = _to_rgb(im)
    w, h = im.size
    scale = max(height / h, width / w)
    # The source region that lands in the bucket after scaling: centred, bucket / scale px. On
    # the side that sets the scale it is the whole side, but float rounding can overshoot it by
    # ~1e-13 px, which Pillow rejects: hence the clamp.
    box_w, box_h = min(w, width / scale), min(h, height / scale)
    left, top = (w - box_w) / 2, (h - box_h) / 2
    # reducing_gap: images still >= 3x the bucket (PNGs, JPEGs past draft's 1/8) are first
    # box-reduced by an integer factor, which Pillow documents as indistinguishable from a
    # full-size resample at 3.0, and much faster.
    return im.resize((width, height), RESAMPLE[resample], box=(left, top, left + box_w, top + box_h),
                     reducing_gap=3.0)


def to_tensor(im: Image.Image, normalize: bool = True) -> torch.Tensor:
    """CHW tensor: float32 in [-1, 1] (x / 127.5 - 1) when normalize, else uint8 in [0, 255]."""
    # The HWC -> CHW copy in numpy: torch's strided copy is slower, and many times slower with
    # its intra-op threads when the main process decodes (DataLoader workers run one thread).
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)))
    return t.to(torch.float32).mul_(1 / 127.5).sub_(1.0) if normalize else t


def _draft(im: Image.Image, height: int, width: int) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that still covers the bucket.

    The target is the cover size (the whole image scaled to cover the bucket), turned into raw
    orientation when EXIF will rotate the image by 90° afterwards. Pillow's draft never goes
    below the requested size, so the later resize only ever shrinks or keeps.
    """
    try:
        swapped = im.getexif().get(0x0112, 1) in _SWAPS_AXES
    except Exception:  # a corrupt EXIF block: exif_transpose will ignore it too
        swapped = False
    raw_w, raw_h = im.size
    view_w, view_h = (raw_h, raw_w) if swapped else (raw_w, raw_h)
    scale = max(height / view_h, width / view_w)
    need_w, need_h = math.ceil(view_w * scale), math.ceil(view_h * scale)
    if swapped:
        need_w, need_h = need_h, need_w
    # "RGB" only asks for scaling here: draft converts just to L / YCbCr, never from them.
    im.draft("RGB", (need_w, need_h))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")
