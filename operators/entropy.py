"""Cheap content-simplicity measures: border uniformity and re-encoded JPEG size."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from operators.base import DecodeNeed, Operator, field
from operators.decode import ImageItem

# Both measures are read at one fixed scale so values compare across image sizes; 512 is the
# size the degradation measures use too, so the stage shares one resize.
VIEW_SIDE = 512
# Border strip: this fraction of the shorter side, at least BORDER_MIN_PX, on each side.
BORDER_FRACTION = 0.03
BORDER_MIN_PX = 2
# Re-encode settings: fixed, so jpeg_bpp depends on content alone (Pillow's defaults besides).
BPP_QUALITY = 75
BPP_SUBSAMPLING = "4:2:0"


def border_strip(luma: np.ndarray) -> np.ndarray:
    """The pixels of the border strip of a 2-D array, each once (the whole array if it is thin)."""
    h, w = luma.shape
    k = max(BORDER_MIN_PX, round(BORDER_FRACTION * min(h, w)))
    if 2 * k >= h or 2 * k >= w:
        return luma.ravel()
    middle = luma[k:-k]
    return np.concatenate([luma[:k].ravel(), luma[-k:].ravel(), middle[:, :k].ravel(), middle[:, -k:].ravel()])


def scan_bits(jpeg: bytes) -> int:
    """Bits of entropy-coded data in a single-scan JPEG: what follows the SOS header, less EOI."""
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no SOS marker in JPEG")
    header_end = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")
    return 8 * (len(jpeg) - header_end - 2)


class BorderStd(Operator):
    name = "border_std"
    version = "1"
    need = DecodeNeed("luma", min_long_side=VIEW_SIDE)
    writes = (
        field("border_std", pa.float32(), "standard deviation of luma (0-255) over the border strip "
              "(3% of the shorter side, >= 2 px) at longer side <= 512; ~0 = frame or flat background"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        # float64: a strip of ~30k pixels, and float32 sums lose digits on bright flat borders.
        return {"border_std": float(np.std(border_strip(item.luma(VIEW_SIDE)), dtype=np.float64))}


class JpegBpp(Operator):
    name = "jpeg_bpp"
    version = "1"
    need = DecodeNeed("rgb", min_long_side=VIEW_SIDE)
    writes = (
        field("jpeg_bpp", pa.float32(), "bits per pixel of the entropy-coded data (headers excluded) of a "
              "JPEG re-encode at longer side <= 512, quality 75, 4:2:0; an information proxy: flat ~0.15, "
              "photos ~1-3, noise higher"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        view = item.pil("RGB", VIEW_SIDE)
        buf = io.BytesIO()
        view.save(buf, "JPEG", quality=BPP_QUALITY, subsampling=BPP_SUBSAMPLING, optimize=False)
        return {"jpeg_bpp": scan_bits(buf.getvalue()) / (view.width * view.height)}
