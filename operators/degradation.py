"""Weight-free degradation measures: blur, noise, colourfulness, colour cast, JPEG blocking.

All but blockiness are read at one fixed scale (longer side <= 512, colour cast <= 128) so that
values compare across image sizes. Blockiness needs the codec's 8-px grid, so it reads the
decode itself, whose grid period is 8 / item.reduction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from operators.base import DecodeNeed, Operator, field
from operators.decode import ImageItem

VIEW_SIDE = 512
CAST_SIDE = 128  # colour cast is a global statistic; 16k pixels estimate it well
BLOCK_CROP = 1024  # blockiness reads at most this centre crop of the decode
_SQRT_HALF_PI = float(np.sqrt(np.pi / 2))

# sRGB (D65) -> CIE Lab, float32: decoding gamma via a 256-entry table is exact and cheap.
_LEVELS = np.arange(256, dtype=np.float64) / 255.0
_SRGB_TO_LINEAR = np.where(
    _LEVELS <= 0.04045, _LEVELS / 12.92, ((_LEVELS + 0.055) / 1.055) ** 2.4).astype(np.float32)
# Rows of the sRGB->XYZ matrix divided by the D65 white point, so white maps to (1, 1, 1).
_RGB_TO_XYZ_N = (np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
]) / np.array([[0.95047], [1.0], [1.08883]])).T.astype(np.float32)
_LAB_EPS = np.float32((6 / 29) ** 3)
_LAB_SLOPE = np.float32(1 / (3 * (6 / 29) ** 2))
_LAB_OFFSET = np.float32(4 / 29)


# The measures below take uint8 arrays and work in int16: filter responses of 8-bit data fit,
# it halves memory traffic against float32, and integer sums make the statistics exact.


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Exact mean and population variance of a small-integer array."""
    n = x.size
    total = int(x.sum(dtype=np.int64))
    # |x| <= 2040 here, so squares fit int32. Not np.dot: BLAS threads thrash on shared cores.
    squares = int(np.square(x, dtype=np.int32).sum(dtype=np.int64))
    return total / n, (n * squares - total * total) / (n * n)


def laplacian_var(luma: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] over the valid interior."""
    if min(luma.shape) < 3:
        return 0.0
    p = luma.astype(np.int16)
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    return _mean_var(lap)[1]


def noise_sigma(luma: np.ndarray) -> float:
    """Immerkaer (1996) fast noise estimate; N = [1,-2,1] (x) [1,-2,1] is separable."""
    h, w = luma.shape
    if h < 3 or w < 3:
        return 0.0
    p = luma.astype(np.int16)
    rows = p[:, :-2] - 2 * p[:, 1:-1] + p[:, 2:]
    conv = rows[:-2] - 2 * rows[1:-1] + rows[2:]
    return _SQRT_HALF_PI * int(np.abs(conv).sum(dtype=np.int64)) / (6 * (w - 2) * (h - 2))


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) M = sigma_rgyb + 0.3 mu_rgyb, on 0-255 RGB."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    rg_mean, rg_var = _mean_var(r - g)
    yb2_mean, yb2_var = _mean_var(r + g - 2 * b)  # twice yb = (r + g) / 2 - b, kept integer
    return float(np.hypot(np.sqrt(rg_var), np.sqrt(yb2_var) / 2) + 0.3 * np.hypot(rg_mean, yb2_mean / 2))


def lab_ab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIE a*, b* (D65) of a uint8 sRGB array, float32."""
    xyz = _SRGB_TO_LINEAR[rgb.reshape(-1, 3)] @ _RGB_TO_XYZ_N
    f = np.where(xyz > _LAB_EPS, np.cbrt(xyz), xyz * _LAB_SLOPE + _LAB_OFFSET)
    return 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])


def color_cast(rgb: np.ndarray) -> float:
    """Cast factor K = D / M (Li et al.): D = |mean (a, b)|, M = |std (a, b)| in Lab units.

    M is floored at 1 Lab unit (about one just-noticeable difference) so that flat images give
    a finite K: a flat grey one 0, a flat red one ~ its chroma.
    """
    a, b = lab_ab(rgb)
    d = np.hypot(a.mean(dtype=np.float64), b.mean(dtype=np.float64))
    m = np.hypot(a.std(dtype=np.float64), b.std(dtype=np.float64))
    return float(d / max(m, 1.0))


def blockiness(luma: np.ndarray, period: int, phase_x: int, phase_y: int) -> float:
    """Mean |difference| across block boundaries over the mean elsewhere, both directions.

    Differences d[i] = p[i+1] - p[i]; those with i % period == phase straddle a boundary.
    Flat images give 1 (no evidence of blocking), not 0/0.
    """
    px = luma.astype(np.int16)
    dx = np.abs(np.diff(px, axis=1))
    dy = np.abs(np.diff(px, axis=0))
    bx, by = dx[:, phase_x::period], dy[phase_y::period]
    on_sum = int(bx.sum(dtype=np.int64)) + int(by.sum(dtype=np.int64))
    on_n = bx.size + by.size
    off_sum = int(dx.sum(dtype=np.int64)) + int(dy.sum(dtype=np.int64)) - on_sum
    off_n = dx.size + dy.size - on_n
    if on_n == 0 or off_n == 0:
        return 1.0
    eps = 1e-3  # keeps flat images at exactly 1
    return (on_sum / on_n + eps) / (off_sum / off_n + eps)


# EXIF orientations that mirror the displayed x / y axis relative to the stored grid.
_FLIPS_X = {2, 3, 6, 7}
_FLIPS_Y = {3, 4, 7, 8}


def _grid_phase(size: int, offset: int, period: int, flipped: bool) -> int:
    """Index phase of boundary-straddling differences along one displayed axis.

    Stored boundaries fall before pixels 0, period, 2*period, ...: differences i = -1 mod period.
    Mirrored, pixel x shows at size-1-x, and they land at i = size-1 mod period. A crop starting
    at `offset` shifts both.
    """
    first = (size - 1) if flipped else (period - 1)
    return (first - offset) % period


class Degradation(Operator):
    name = "degradation"
    version = "1"
    need = DecodeNeed("rgb", min_long_side=VIEW_SIDE, max_reduction=2)
    writes = (
        field("laplacian_var", pa.float32(), "variance of the 3x3 Laplacian of luma (0-255) at longer side "
              "<= 512, in luma levels squared; low = blurry or flat"),
        field("noise_sigma", pa.float32(), "Immerkaer noise standard deviation of luma at longer side <= 512, "
              "in luma levels (0-255); texture also raises it"),
        field("colorfulness", pa.float32(), "Hasler-Suesstrunk M on 0-255 RGB at longer side <= 512; "
              "0 = grey; 33 moderately, 82 highly, 109 extremely colourful (their scale)"),
        field("color_cast", pa.float32(), "Lab cast factor K = |mean(a,b)| / max(1, |std(a,b)|) at longer side "
              "<= 128, dimensionless; 0 = neutral, >1 a dominant cast"),
        field("blockiness", pa.float32(), "mean |luma step| across the JPEG 8-px grid (period 8/reduction) "
              "over the mean elsewhere, on the decode (centre <= 1024 px), dimensionless; ~1 = none, "
              "larger = blocking (generated photos: q95 ~1.0, q75 ~1.1, q50 ~1.5, q10 3-15); null at reduction > 2"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        luma = np.asarray(item.pil("L", VIEW_SIDE))
        view = item.pil("RGB", VIEW_SIDE)
        # Box-reduce the 512 view for the cast: a fraction of the cost of resizing the decode.
        small = view.reduce(-(-max(view.size) // CAST_SIDE)) if max(view.size) > CAST_SIDE else view
        return {
            "laplacian_var": laplacian_var(luma),
            "noise_sigma": noise_sigma(luma),
            "colorfulness": colorfulness(item.rgb(VIEW_SIDE)),
            "color_cast": color_cast(np.asarray(small)),
            "blockiness": self._blockiness(item),
        }

    @staticmethod
    def _blockiness(item: ImageItem) -> float | None:
        if item.reduction > 2:
            return None  # at 1/4 scale and below a block is 2 px or less: no interior to compare
        period = 8 // item.reduction
        full = np.asarray(item.pil("L"))
        h, w = full.shape
        top, left = max(0, (h - BLOCK_CROP) // 2), max(0, (w - BLOCK_CROP) // 2)
        crop = full[top:top + BLOCK_CROP, left:left + BLOCK_CROP]
        orientation = item.header.orientation
        phase_x = _grid_phase(w, left, period, orientation in _FLIPS_X)
        phase_y = _grid_phase(h, top, period, orientation in _FLIPS_Y)
        return blockiness(crop, period, phase_x, phase_y)
