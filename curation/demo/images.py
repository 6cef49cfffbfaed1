"""Procedural photo-like images, planted defects and near-duplicate makers.

Every function takes a seeded ``numpy.random.Generator`` so output is reproducible byte for byte
(Pillow's encoders are deterministic for a given build). Sizes are in pixels, qualities are JPEG
quality factors (1-95), blur radii are in pixels of the image being blurred.

Defects and near-duplicate makers share the signature ``(img, rng) -> img``. Two of them
(`blocky`, `recompressed_copy`) must also be *stored* at a low JPEG quality so the file's
quantisation tables tell the truth; they mark the returned image with ``img.info[QUALITY_KEY]``
and `save_image` honours that mark.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

QUALITY_KEY = "synth_jpeg_quality"  # img.info key: the JPEG quality this image must be saved at
WORK_LONG_SIDE = 320  # px: shapes and gradients are drawn at this size, then upscaled
_GRAIN_ALPHA = (0.03, 0.07)  # blend weight of uniform 0-255 grain: +-4 to +-9 grey levels

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A varied, natural-looking RGB image of `width` x `height` pixels.

    Smooth multi-colour gradient, soft blotchy texture, ellipses and polygons (drawn at
    ~320 px and upscaled), then full-resolution line strokes and fine luminance grain. Distinct
    seeds give pHashes ~32 bits apart on average; ~20 ms for 1.5 MP on one core, and ~300 KB as
    a quality-90 JPEG at 1.5 MP.
    """
    scale = WORK_LONG_SIDE / max(width, height)
    ww, wh = max(8, round(width * scale)), max(8, round(height * scale))
    gx, gy = (int(v) for v in rng.integers(2, 5, size=2))
    grid = rng.integers(0, 256, size=(gy, gx, 3), dtype=np.uint8)
    im = Image.fromarray(grid, "RGB").resize((ww, wh), Image.Resampling.BICUBIC)

    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, ww), rng.uniform(0, wh)
        rx, ry = rng.uniform(0.04, 0.3) * ww, rng.uniform(0.04, 0.3) * wh
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_colour(rng))
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(3, 7))
        cx, cy = rng.uniform(0, ww), rng.uniform(0, wh)
        r = rng.uniform(0.05, 0.35) * max(ww, wh)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        draw.polygon([(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in ang],
                     fill=_colour(rng))

    # Blotchy texture over everything (shapes included), at 1/4 of the working size.
    tex = rng.normal(0.0, rng.uniform(4, 14), size=(wh // 4 + 1, ww // 4 + 1)).astype(np.float32)
    tex = np.asarray(Image.fromarray(tex, "F").resize((ww, wh), Image.Resampling.BILINEAR))
    arr = np.asarray(im, dtype=np.float32) + tex[..., None]
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    im = im.resize((width, height), Image.Resampling.BILINEAR)

    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 10))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        pts = [(x, y)]
        for _ in range(int(rng.integers(1, 4))):
            x += rng.normal(0, width * 0.15)
            y += rng.normal(0, height * 0.15)
            pts.append((x, y))
        draw.line(pts, fill=_colour(rng), width=int(rng.integers(1, 5)))

    grain = Image.frombytes("L", (width, height), rng.bytes(width * height))
    grain = Image.merge("RGB", (grain, grain, grain))
    return Image.blend(im, grain, float(rng.uniform(*_GRAIN_ALPHA)))


def _with_quality(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip `img` through JPEG at `quality` and mark it to be stored at that quality."""
    out = Image.open(io.BytesIO(encode(img, "JPEG", quality=quality)))  # explicit: beats any mark
    out.load()
    out = out.convert("RGB")  # detach from the JPEG plugin; keeps pixels
    out.info[QUALITY_KEY] = quality
    return out


# ---- defects ---------------------------------------------------------------------------------

def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Out of focus: Gaussian blur of radius 4-6 px."""
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(4.0, 6.0))))


def noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise: additive Gaussian noise, sigma 25-30 grey levels per channel."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * float(rng.uniform(25, 30))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def frame(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Thick uniform border, 11-13% of the shorter side on every edge; size unchanged."""
    w, h = img.size
    b = max(1, round(min(w, h) * float(rng.uniform(0.11, 0.13))))
    colour = [(255, 255, 255), (0, 0, 0), _colour(rng)][int(rng.integers(0, 3))]
    out = Image.new("RGB", (w, h), colour)
    out.paste(img.convert("RGB").resize((w - 2 * b, h - 2 * b), Image.Resampling.BILINEAR), (b, b))
    return out


def flat(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Nearly uniform background (noise sigma ~1.5) with one tiny object (~3% of the side)."""
    w, h = img.size
    bg = np.asarray(img.convert("RGB").resize((1, 1), Image.Resampling.BOX), dtype=np.float32)
    arr = bg + rng.normal(0.0, 1.5, size=(h, w, 1)).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")  # (h, w, 3)
    r = max(2, round(min(w, h) * 0.015))
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    ImageDraw.Draw(out).ellipse([cx - r, cy - r, cx + r, cy + r], fill=_colour(rng))
    return out


_TINTS = [(255, 140, 0), (0, 90, 255), (0, 200, 60), (230, 0, 200), (255, 220, 0)]


def color_cast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Strong colour cast, as under coloured light: colours 75% desaturated, then per channel c
    out = in * (0.45 + 0.55 t_c) + 60 t_c for a saturated tint t in [0, 1]^3. Luminance texture
    survives (the image is not also blurry or flat); the Lab cast factor is typically > 2."""
    tint = np.array(_TINTS[int(rng.integers(0, len(_TINTS)))], dtype=np.float32) / 255.0
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    luma = np.asarray(img.convert("L"), dtype=np.float32)[..., None]
    arr = (0.25 * rgb + 0.75 * luma) * (0.45 + 0.55 * tint) + 60.0 * tint
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def blocky(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """JPEG blocking: round-tripped at quality 5 and marked to be stored at quality 5."""
    return _with_quality(img, 5)


def low_res(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Thumbnail-sized: 96x72 px (72x96 for portrait inputs)."""
    size = (96, 72) if img.width >= img.height else (72, 96)
    return img.resize(size, Image.Resampling.LANCZOS)


def extreme_aspect(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A thin banner: a horizontal strip of the image stretched to 2000x150 px (aspect 13.3)."""
    w, h = img.size
    sh = max(1, round(w * 150 / 2000))
    y = int(rng.integers(0, max(1, h - sh)))
    return img.crop((0, y, w, min(h, y + sh))).resize((2000, 150), Image.Resampling.BILINEAR)


DEFECTS: dict[str, Transform] = {
    "blur": blur, "noise": noise, "frame": frame, "flat": flat, "color_cast": color_cast,
    "blocky": blocky, "low_res": low_res, "extreme_aspect": extreme_aspect,
}


# ---- near-duplicate makers (pHash within ~4 bits of the original) ---------------------------

def resized_copy(img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    """Downscaled to 0.6x on each side (Lanczos)."""
    size = (max(1, round(img.width * 0.6)), max(1, round(img.height * 0.6)))
    return img.resize(size, Image.Resampling.LANCZOS)


def recompressed_copy(img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    """Re-encoded as JPEG quality 60 (and marked to be stored at quality 60)."""
    return _with_quality(img.convert("RGB"), 60)


def slight_crop(img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    """2% of width and height cropped away (1% from each edge); not resized back."""
    w, h = img.size
    dx, dy = round(w * 0.01), round(h * 0.01)
    return img.crop((dx, dy, w - dx, h - dy))


NEAR_DUPLICATE_MAKERS: dict[str, Transform] = {
    "resized": resized_copy, "recompressed": recompressed_copy, "cropped": slight_crop,
}


# ---- encoding ---------------------------------------------------------------------------------

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}


def encode(img: Image.Image, fmt: str, quality: int = 90, **params) -> bytes:
    """Encode to bytes. fmt is a Pillow format name ("JPEG", "PNG", "WEBP", ...).

    JPEG/WebP use `quality` unless the image carries a QUALITY_KEY mark; PNG uses zlib level 1 (speed).
    """
    fmt = fmt.upper()
    quality = int(img.info.get(QUALITY_KEY, quality))
    if fmt == "JPEG":
        params.setdefault("quality", quality)
        if img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
    elif fmt == "WEBP":
        params.setdefault("quality", min(quality, 90))
        params.setdefault("method", 0)  # fastest; files ~3% larger than method 4
    elif fmt == "PNG":
        params.setdefault("compress_level", 1)
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def save_image(img: Image.Image, path: Path, quality: int = 90, **params) -> Path:
    """Write `img` to `path`, format chosen by the suffix (.jpg/.jpeg/.png/.webp/.gif, any case)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(img, _FORMATS[path.suffix.lower()], quality, **params))
    return path


# ---- perceptual hash (same definition as imagehash.phash, numpy only) ------------------------

_N = np.arange(32)
_DCT8 = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * _N[None, :] + 1) / 64.0)  # (8, 32)


def phash_bits(img: Image.Image) -> np.ndarray:
    """64-bit pHash as a bool array: 32x32 Lanczos luma, 8x8 lowest DCT-II terms > their median."""
    px = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT8 @ px @ _DCT8.T
    return (low > np.median(low)).ravel()


def phash_distance(a: Image.Image, b: Image.Image) -> int:
    """Hamming distance in bits between the pHashes of two images."""
    return int(np.count_nonzero(phash_bits(a) != phash_bits(b)))
