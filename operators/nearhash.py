"""Near-duplicate signals that survive frames, crops and small rotations, from the shared view.

A copy of a photo on the web is often framed (a white mat, letterbox bars, a coloured border),
cropped by 5-20 %, or turned by a few degrees, and the whole-image pHash moves 10-30 bits under
each of these. This operator works on the stage's grey view (longer side 512) that `phash` and
the degradation operators already share:

1. **Frame trim** (`frame_box`): each side loses the run of lines that are near-uniform
   (standard deviation <= `FRAME_STD`) and of the outermost line's level (within
   `FRAME_LEVEL`), up to `FRAME_MAX` of the side. The box is recorded as the fraction of the
   width / height removed on each side.
2. **Window hashes** of the trimmed image: a 64-bit DCT hash (pHash's construction: 32x32 grey,
   2-D DCT-II, the 8x8 lowest frequencies against their median) of the whole trimmed image, of
   centred windows of 85 % and 70 % of each side, and of the four 85 % corner windows. A crop
   that keeps 80-95 % of each side looks like one of the 85 % windows of its original (centred
   or at a corner), and the 70 % window stays clear of the corners a small rotation fills, so
   a copy matches its original on some pair of windows (`curation.steps.export.neardup`
   compares every window of one image with every window of the other).

The view is first reduced to a longer side of 128 px (area filter); the frame is found there
(a line is 0.8 % of a side or finer) and each window is cut from it with an area filter straight
to 32x32 (one PIL resize with a source box each), so trim and seven hashes cost a fraction of a
millisecond together.
These hashes are not bit-compatible with `imagehash` (the `phash` column is); they are compared
only with each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from operators.base import DecodeNeed, Operator, field
from operators.decode import ImageItem

VIEW_SIDE = 512  # the shared analysis view (phash, border_std, degradation)
FRAME_STD = 4.0  # grey levels (0-255): a frame line is this uniform or more
FRAME_LEVEL = 10.0  # grey levels: ... and this close to the outermost line's mean
FRAME_MAX = 0.3  # at most this fraction of a side is taken as frame
MIN_WINDOW_STD = 3.0  # grey levels: flatter windows get no hash
BASE_SIDE = 128  # px, longer side the frame trim and the windows work at (windows ~100 px -> 32)
_HASH_SIDE = 32
_LOW = 8

# (name, (x0, y0, x1, y1) as fractions of the trimmed image)
WINDOWS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("nh_full", (0.0, 0.0, 1.0, 1.0)),
    ("nh_c85", (0.075, 0.075, 0.925, 0.925)),
    ("nh_c70", (0.15, 0.15, 0.85, 0.85)),
    ("nh_tl", (0.0, 0.0, 0.85, 0.85)),
    ("nh_tr", (0.15, 0.0, 1.0, 0.85)),
    ("nh_bl", (0.0, 0.15, 0.85, 1.0)),
    ("nh_br", (0.15, 0.15, 1.0, 1.0)),
)
HASH_COLUMNS = tuple(name for name, _ in WINDOWS)
FRAME_COLUMNS = ("frame_left", "frame_top", "frame_right", "frame_bottom")


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II basis, rows = frequencies (as scipy.fftpack.dct, type 2)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT_LOW = _dct_matrix(_HASH_SIDE)[:_LOW]  # (8, 32): only the frequencies kept


def dct_hashes(pixels: np.ndarray) -> list[int]:
    """64-bit hashes of k 32x32 grey arrays (k, 32, 32): per array, the 8x8 lowest DCT
    frequencies above their median, row-major, first bit most significant (pHash's
    construction, by matrix product)."""
    low = (_DCT_LOW @ pixels @ _DCT_LOW.T).reshape(len(pixels), -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return [int(v) for v in np.packbits(bits, axis=1).view(">u8").ravel()]


def _frame_run(means: np.ndarray, stds: np.ndarray, limit: int) -> int:
    """How many lines from the start of (means, stds) form a uniform frame (<= limit)."""
    if limit <= 0 or stds[0] > FRAME_STD:
        return 0
    ok = (stds[:limit] <= FRAME_STD) & (np.abs(means[:limit] - means[0]) <= FRAME_LEVEL)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else limit


def frame_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of uniform frame on each side of a grey uint8 image."""
    h, w = grey.shape
    g = grey.astype(np.float32)
    row_mean, row_std = g.mean(axis=1), g.std(axis=1)
    col_mean, col_std = g.mean(axis=0), g.std(axis=0)
    top = _frame_run(row_mean, row_std, int(h * FRAME_MAX))
    bottom = _frame_run(row_mean[::-1], row_std[::-1], int(h * FRAME_MAX))
    left = _frame_run(col_mean, col_std, int(w * FRAME_MAX))
    right = _frame_run(col_mean[::-1], col_std[::-1], int(w * FRAME_MAX))
    return left, top, right, bottom


def near_hashes(view: Image.Image) -> dict[str, Any]:
    """Frame fractions and window hashes (see the module docstring) of a grey PIL view."""
    factor = max(view.size) // BASE_SIDE
    if factor > 1:  # everything below reads a smaller copy (integer area reduction: cheapest)
        view = view.reduce(factor)
    grey = np.asarray(view)
    h, w = grey.shape
    left, top, right, bottom = frame_box(grey)
    x0, y0, x1, y1 = left, top, w - right, h - bottom
    out: dict[str, Any] = {"frame_left": left / w, "frame_top": top / h,
                           "frame_right": right / w, "frame_bottom": bottom / h}
    cw, ch = x1 - x0, y1 - y0
    smalls = np.stack([np.asarray(view.resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX,
                                              box=(x0 + a * cw, y0 + b * ch, x0 + c * cw, y0 + d * ch)))
                       for _, (a, b, c, d) in WINDOWS]).astype(np.float64)
    hashes = dct_hashes(smalls)
    # A flat window (sky, a wall, a blank page) has no frequencies to rank: its hash would be
    # the same for every such window of every image, so it is left out (null).
    flat = smalls.reshape(len(WINDOWS), -1).std(axis=1) < MIN_WINDOW_STD
    for (name, _), h, f in zip(WINDOWS, hashes, flat):
        out[name] = None if f else h
    return out


class NearHash(Operator):
    """Frame trim and crop / rotation tolerant window hashes for near-duplicate grouping."""

    name = "nearhash"
    version = "1"
    need = DecodeNeed("luma", min_long_side=256, max_reduction=8)
    writes = tuple(
        field(c, pa.float32(), f"fraction (0-{FRAME_MAX}) of the image's {'width' if c in ('frame_left', 'frame_right') else 'height'} "
                               f"taken by a uniform frame on its {c.split('_')[1]} side (trimmed before hashing)")
        for c in FRAME_COLUMNS
    ) + tuple(
        field(c, pa.uint64(), f"64-bit DCT hash of the frame-trimmed image's window {box} (fractions x0, y0, x1, y1); "
                              "compare with Hamming distance against any nh_* hash of another image; null when the "
                              f"window is flat (grey std < {MIN_WINDOW_STD})")
        for c, box in WINDOWS
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        return near_hashes(item.pil("L", VIEW_SIDE))
