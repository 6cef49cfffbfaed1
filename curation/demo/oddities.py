"""Unusual-but-valid images, broken files and odd caption sidecars.

One writer per kind, shared by `make_demo_corpus` and `write_bad_inputs`:

- ``SPECIAL_WRITERS[kind](path, img)`` stores the RGB image `img` in an unusual but valid way;
- ``BAD_WRITERS[kind](path, rng)`` writes a file that must not decode (or, for ``huge_header``,
  must be rejected on its header before decoding);
- ``CAPTION_WRITERS[kind](path, rng)`` writes an odd ``.txt`` sidecar.

``DEFAULT_NAMES`` gives each kind a file name (all stems distinct, so sidecars never collide).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from curation.demo.captions import long_caption
from curation.demo.images import encode, photo_like, save_image

EXIF_ORIENTATION_TAG = 0x0112
HUGE_SIDE = 30_000  # px, both sides, claimed by the huge_header PNG's IHDR
INVALID_UTF8 = b"\xff\xfe bad \xc3\x28"
LONG_CAPTION_CHARS = 20_000


# ---- unusual but valid images ----------------------------------------------------------------

def write_grayscale(path: Path, img: Image.Image) -> None:
    """8-bit single-channel (mode L) JPEG."""
    save_image(img.convert("L"), path)


def write_palette_transparency(path: Path, img: Image.Image) -> None:
    """Palette (mode P, 63 colours + index 0) PNG; index 0 is reserved for full transparency,
    used by a central disc and the four corners."""
    q = img.convert("RGB").quantize(63, method=Image.Quantize.FASTOCTREE)
    p = Image.fromarray(np.asarray(q) + np.uint8(1), "P")
    p.putpalette([0, 0, 0] + q.getpalette()[: 63 * 3])
    w, h = p.size
    draw = ImageDraw.Draw(p)
    draw.ellipse([w * 0.35, h * 0.35, w * 0.65, h * 0.65], fill=0)
    for x0, y0 in ((0, 0), (w * 0.85, 0), (0, h * 0.85), (w * 0.85, h * 0.85)):
        draw.rectangle([x0, y0, x0 + w * 0.15, y0 + h * 0.15], fill=0)
    save_image(p, path, transparency=0)


def write_rgba(path: Path, img: Image.Image) -> None:
    """RGBA PNG with a radial alpha falloff (opaque centre, alpha ~0.1 in the corners)."""
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alpha = Image.fromarray((np.clip(1.5 - r, 0, 1) * 255).astype(np.uint8), "L")
    out = img.convert("RGB")
    out.putalpha(alpha)
    save_image(out, path)


def write_png16(path: Path, img: Image.Image) -> None:
    """16-bit greyscale PNG (mode I;16): 8-bit luma x 257 plus sub-8-bit detail."""
    luma = np.asarray(img.convert("L"), dtype=np.uint32) * 257
    fine = (np.arange(img.width, dtype=np.uint32) * 37) % 200
    arr = np.clip(luma + fine[None, :], 0, 65535).astype(np.uint16)
    save_image(Image.fromarray(arr), path)


def write_cmyk(path: Path, img: Image.Image) -> None:
    """CMYK JPEG (Adobe APP14 marker, as written by Pillow)."""
    save_image(img.convert("RGB").convert("CMYK"), path)


def _frames(img: Image.Image, n: int) -> list[Image.Image]:
    w, h = img.size
    step = max(1, w // (4 * n))
    return [img.transform(img.size, Image.Transform.AFFINE, (1, 0, i * step, 0, 1, 0)) for i in range(n)]


def write_animated_gif(path: Path, img: Image.Image) -> None:
    """4-frame looping GIF (a horizontal pan), 100 ms per frame, 64 colours; the frames are
    smoothed first (radius 1.5 px) so LZW compresses them like a typical GIF."""
    smooth = img.convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    frames = [f.quantize(64, method=Image.Quantize.FASTOCTREE) for f in _frames(smooth, 4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_animated_webp(path: Path, img: Image.Image) -> None:
    """4-frame looping lossy WebP (a horizontal pan), 100 ms per frame."""
    frames = _frames(img.convert("RGB"), 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0,
                   quality=80, method=0)


def write_exif_rotated(path: Path, img: Image.Image) -> None:
    """JPEG with EXIF Orientation = 6: stored rotated 90 deg counter-clockwise, so that
    `ImageOps.exif_transpose` gives back `img` (stored size is `img.size` swapped)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    save_image(img.convert("RGB").transpose(Image.Transpose.ROTATE_90), path, exif=exif.tobytes())


def write_tiny(path: Path, img: Image.Image) -> None:
    """1x1 px RGB PNG (the mean colour of `img`)."""
    save_image(img.convert("RGB").resize((1, 1), Image.Resampling.BOX), path)


SPECIAL_WRITERS: dict[str, Callable[[Path, Image.Image], None]] = {
    "grayscale": write_grayscale, "palette_transparency": write_palette_transparency,
    "rgba": write_rgba, "png16": write_png16, "cmyk": write_cmyk,
    "animated_gif": write_animated_gif, "animated_webp": write_animated_webp,
    "exif_rotated": write_exif_rotated, "tiny_1x1": write_tiny,
}


# ---- files that must not decode ----------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_empty(path: Path, rng: np.random.Generator) -> None:
    """Zero bytes."""
    _write(path, b"")


def write_truncated(path: Path, rng: np.random.Generator) -> None:
    """The first 60% of the bytes of a valid 640x480 quality-90 JPEG (no EOI marker)."""
    data = encode(photo_like(rng, 640, 480), "JPEG", 90)
    _write(path, data[: int(len(data) * 0.6)])


def write_random_bytes(path: Path, rng: np.random.Generator) -> None:
    """4096 random bytes (no image signature)."""
    _write(path, b"\x00\x17" + rng.bytes(4094))


def write_html(path: Path, rng: np.random.Generator) -> None:
    """An HTML error page (what a failed download often saves)."""
    _write(path, b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                 b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n")


def write_text(path: Path, rng: np.random.Generator) -> None:
    """A plain UTF-8 text note."""
    _write(path, "Remember to buy milk. Café at 10:00 — 東京\n".encode())


def write_pdf(path: Path, rng: np.random.Generator) -> None:
    """A minimal one-page PDF (a format Pillow can write but not read)."""
    _write(path, b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                 b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                 b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
                 b"trailer<</Root 1 0 R>>\n%%EOF\n")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_huge_header(path: Path, rng: np.random.Generator) -> None:
    """A PNG whose IHDR claims 30000x30000 8-bit RGB (2.7 GB decoded) with one tiny IDAT.

    `Image.open` reads the header (when `Image.MAX_IMAGE_PIXELS` is None or large enough;
    Pillow's default raises DecompressionBombError at open); `.load()` must never be tried.
    """
    ihdr = struct.pack(">IIBBBBB", HUGE_SIDE, HUGE_SIDE, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * 3 * 64)
    _write(path, b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
           + _png_chunk(b"IEND", b""))


BAD_WRITERS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "empty": write_empty, "truncated": write_truncated, "random_bytes": write_random_bytes,
    "html_as_png": write_html, "text_as_webp": write_text, "unsupported_format": write_pdf,
    "huge_header": write_huge_header,
}


# ---- odd caption sidecars ------------------------------------------------------------------------

CAPTION_WRITERS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "caption_empty": lambda path, rng: _write(path, b""),
    "caption_invalid_utf8": lambda path, rng: _write(path, INVALID_UTF8),
    "caption_long": lambda path, rng: _write(path, long_caption(rng, LONG_CAPTION_CHARS).encode()),
}

DEFAULT_NAMES = {
    "grayscale": "grayscale.jpg", "palette_transparency": "palette_transparent.png",
    "rgba": "rgba_alpha.png", "png16": "gray16.png", "cmyk": "cmyk.jpg",
    "animated_gif": "animated.gif", "animated_webp": "animated_loop.webp",
    "exif_rotated": "rotated_exif6.jpg", "tiny_1x1": "one_pixel.png",
    "empty": "empty.jpg", "truncated": "truncated.jpg", "random_bytes": "noise.jpg",
    "html_as_png": "page.png", "text_as_webp": "note.webp", "unsupported_format": "document.jpg",
    "huge_header": "huge_header.png",
    "caption_empty": "caption_empty.txt", "caption_invalid_utf8": "caption_invalid_utf8.txt",
    "caption_long": "caption_long.txt",
}


def write_bad_inputs(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write every special, bad and odd-caption kind once into `out_dir` (flat).

    Returns kind -> path. Image kinds map to the image file; caption kinds map to the ``.txt``
    sidecar, whose image is the same stem with ``.jpg`` (a valid 512x384 JPEG).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    for kind, writer in SPECIAL_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        writer(paths[kind], photo_like(rng, 480, 360))
    for kind, bad in BAD_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        bad(paths[kind], rng)
    for kind, cap in CAPTION_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        cap(paths[kind], rng)
        save_image(photo_like(rng, 512, 384), paths[kind].with_suffix(".jpg"))
    return paths
