"""Header-only operators: what the file says about itself, without decoding a pixel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from operators.base import DecodeNeed, Operator, field
from operators.decode import ImageItem

# ITU-T T.81 Annex K.1 luminance quantisation table, natural (row-major) order, which is the
# order Pillow reports `quantization` in. libjpeg's quality q scales it (jcparam.c).
_ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def _ijg_luma_tables(limit: int) -> np.ndarray:
    """(100, 64) luma tables libjpeg writes for quality 1..100, entries clamped to [1, limit]."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    return np.clip((_ANNEX_K_LUMA[None, :] * scale[:, None] + 50) // 100, 1, limit)


# Baseline JPEGs clamp entries to 255 (8-bit tables); extended ones keep up to 32767.
_IJG_BASELINE = _ijg_luma_tables(255)
_IJG_EXTENDED = _ijg_luma_tables(32767)


def estimate_jpeg_quality(luma_table: list[int]) -> int:
    """libjpeg quality (1..100) whose luma table is nearest (L1) to `luma_table`.

    Exact for tables written by libjpeg and its descendants (Pillow, most web encoders); for
    other encoders (cameras, Photoshop) it is the IJG quality of the nearest table.
    """
    table = np.asarray(luma_table, dtype=np.int64)
    if table.shape != (64,):
        raise ValueError(f"a luma quantisation table has 64 entries, not {table.size}")
    candidates = _IJG_EXTENDED if table.max() > 255 else _IJG_BASELINE
    return int(np.abs(candidates - table).sum(axis=1).argmin()) + 1


class Metadata(Operator):
    name = "metadata"
    version = "1"
    need = DecodeNeed("header")
    writes = (
        field("format", pa.string(), "container format as Pillow names it: JPEG, PNG, GIF, WEBP, MPO, ..."),
        field("width", pa.int32(), "displayed width in pixels, after EXIF orientation"),
        field("height", pa.int32(), "displayed height in pixels, after EXIF orientation"),
        field("mode", pa.string(), "Pillow mode of the stored image (RGB, L, P, RGBA, CMYK, I;16, ...)"),
        field("channels", pa.int8(), "channels as stored; a palette image has 1 (the index)"),
        field("bit_depth", pa.int8(), "bits per stored sample (8; 16 for 16-bit PNG; 1..8 for palettes)"),
        field("file_size", pa.int64(), "size of the file in bytes"),
        field("exif_orientation", pa.int8(), "EXIF orientation tag 1..8 (1 = upright or absent)"),
        field("n_frames", pa.int32(), "number of frames (animations, MPO); 1 for still images"),
        field("jpeg_quality", pa.int8(), "libjpeg-scale quality 1..100 estimated from the luma "
              "quantisation table; null for non-JPEG"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        h = item.header
        quality = None
        if h.quantization:
            quality = estimate_jpeg_quality(h.quantization[min(h.quantization)])
        return {
            "format": h.format, "width": h.width, "height": h.height, "mode": h.mode,
            "channels": h.channels, "bit_depth": h.bit_depth, "file_size": h.file_size,
            "exif_orientation": h.orientation, "n_frames": h.n_frames, "jpeg_quality": quality,
        }


class Compression(Operator):
    name = "compression"
    version = "1"
    need = DecodeNeed("header")
    writes = (
        field("compression_ratio", pa.float32(), "dimensionless: uncompressed stored size of one "
              "frame (width*height*channels*bit_depth/8 bytes) over file size; >1 = compressed"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        h = item.header
        raw_bytes = h.width * h.height * h.channels * h.bit_depth / 8
        return {"compression_ratio": raw_bytes / h.file_size if h.file_size else None}
