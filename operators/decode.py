"""Read the header, decode once at the smallest size that serves, and share derived views.

`plan_for(needs)` merges the `DecodeNeed`s of every operator in a stage into one `DecodePlan`;
`open_item(data, plan, max_pixels)` parses the header (never inflating or decoding anything,
EXIF included), rejects oversized images on that header, and decodes once:

- JPEG uses libjpeg's DCT-domain scaling (`Image.draft`) to decode directly at 1/2, 1/4 or 1/8
  scale, in grey when only luma is needed (the chroma planes are then never decoded);
- other formats decode in full and are box-reduced by the same factor, so operators see the
  same scale whatever the format;
- EXIF orientation is applied, the first frame of an animation is used, 16-bit samples are
  scaled (not clipped) to 8 bits, and transparency is composited over white.

Operators then ask the `ImageItem` for views (`rgb(max_side)`, `luma(max_side)`, `pil(...)`);
each view is computed once per item and shared by every operator that asks for it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from PIL import Image

from operators.base import DecodeNeed

# Our own pixel limit (`max_pixels`, checked on the header before decoding) replaces Pillow's
# process-global decompression-bomb guard, which would otherwise raise inside Image.open and
# hide the header of exactly the images we want to report on.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default limit, in pixels
_KIND_ORDER = {"header": 0, "luma": 1, "rgb": 2}
_REDUCTIONS = (8, 4, 2, 1)
# Camera MPO files are JPEGs with extra frames; they get the same quantisation tables and draft.
_JPEG_FORMATS = ("JPEG", "MPO")
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}

# (channels, bits per sample) of each Pillow mode, as stored (palette = 1 index channel).
_MODE_LAYOUT = {
    "1": (1, 1), "L": (1, 8), "P": (1, 8), "PA": (2, 8), "LA": (2, 8), "La": (2, 8),
    "RGB": (3, 8), "RGBA": (4, 8), "RGBa": (4, 8), "RGBX": (4, 8), "CMYK": (4, 8),
    "YCbCr": (3, 8), "LAB": (3, 8), "HSV": (3, 8), "I": (1, 32), "F": (1, 32),
    "I;16": (1, 16), "I;16L": (1, 16), "I;16B": (1, 16), "I;16N": (1, 16),
}
# PNG IHDR colour type -> channels.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class DecodeError(Exception):
    """The item cannot be decoded (empty, not an image, truncated, too large, ...).

    `item` is the header-only `ImageItem` when the header parsed but the pixels were refused or
    failed (so header-only operators can still describe the file), None when not even the
    header could be read.
    """

    def __init__(self, message: str, item: "ImageItem | None" = None):
        super().__init__(message)
        self.item = item


@dataclass(frozen=True)
class DecodePlan:
    """The single decode of a stage: the union of its operators' needs."""

    kind: str = "header"
    min_long_side: int = 0
    max_reduction: int = 8


def plan_for(needs: Iterable[DecodeNeed]) -> DecodePlan:
    """Smallest decode satisfying every need: richest kind, largest size, smallest reduction."""
    kind, long_side, reduction = "header", 0, 8
    for need in needs:
        if _KIND_ORDER[need.kind] > _KIND_ORDER[kind]:
            kind = need.kind
        long_side = max(long_side, need.min_long_side)
        reduction = min(reduction, need.max_reduction)
    return DecodePlan(kind, long_side, reduction)


@dataclass
class ImageHeader:
    """What the file says about itself, before decoding pixels.

    width/height are after EXIF orientation (the way the image is meant to be shown), in pixels;
    raw_width/raw_height are as stored. bit_depth is bits per sample; channels as stored
    (a palette image has one index channel).
    """

    format: str
    width: int
    height: int
    raw_width: int
    raw_height: int
    mode: str
    channels: int
    bit_depth: int
    orientation: int
    n_frames: int
    file_size: int
    quantization: dict[int, list[int]] | None = None


@dataclass
class ImageItem:
    """One item's bytes, header and single decode, with memoised views for operators.

    `image` is the decoded image (mode "L" or "RGB", orientation applied) or None for a
    header-only plan; `reduction` is the factor it was reduced by from the stored size.
    """

    data: bytes
    header: ImageHeader
    image: Image.Image | None = None
    reduction: int = 1
    _views: dict[Any, Any] = field(default_factory=dict, repr=False)

    def _require_pixels(self) -> Image.Image:
        if self.image is None:
            raise RuntimeError("this item was opened header-only; the operator must declare a pixel need")
        return self.image

    def pil(self, mode: str = "RGB", max_side: int | None = None) -> Image.Image:
        """The decode in `mode` ("L" or "RGB"), downscaled so its longer side is <= max_side."""
        key = ("pil", mode, max_side)
        if key not in self._views:
            im = self._require_pixels()
            if mode != im.mode and max_side is not None:
                # Resize once in the decode's mode and convert the small result: the grey
                # view of an RGB decode then shares the RGB view's resize (the costly step).
                im = self.pil(im.mode, max_side)
            elif max_side is not None and max(im.size) > max_side:
                scale = max_side / max(im.size)
                size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                # An area (box) filter: alias-free for these 1-2x downscales and a third cheaper
                # than bilinear; the views feed statistics, not pixels anyone looks at.
                im = im.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
            if im.mode != mode:
                if mode == "RGB" and im.mode == "L":
                    im = im.convert("RGB")
                elif mode == "L":
                    im = im.convert("L")
                else:
                    raise ValueError(f"cannot view a {im.mode} decode as {mode}")
            self._views[key] = im
        return self._views[key]

    def rgb(self, max_side: int | None = None) -> np.ndarray:
        """uint8 array (H, W, 3), longer side <= max_side."""
        key = ("rgb", max_side)
        if key not in self._views:
            self._views[key] = np.asarray(self.pil("RGB", max_side))
        return self._views[key]

    def luma(self, max_side: int | None = None) -> np.ndarray:
        """float32 array (H, W) of ITU-R 601 luma in [0, 255], longer side <= max_side."""
        key = ("luma", max_side)
        if key not in self._views:
            self._views[key] = np.asarray(self.pil("L", max_side), dtype=np.float32)
        return self._views[key]


def open_item(data: bytes, plan: DecodePlan, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageItem:
    """Parse the header of `data`, check it against `max_pixels`, and decode per `plan`.

    Raises DecodeError with a message naming the problem; never returns a partial item.
    """
    item = open_header(data, max_pixels)
    decode_pixels(item, plan, max_pixels)
    return item


def open_header(data: bytes, max_pixels: int | None = None) -> ImageItem:
    """Parse the header only: no pixel is decoded and no compressed chunk inflated, for any
    format (the EXIF block included, see `_orientation`).

    With `max_pixels` (pixels), an image whose stored size exceeds it raises DecodeError right
    after the header parse; the error's `item` still carries the header. Raises DecodeError if
    `data` is not an image.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        header = _read_header(im, data)
    except Exception as exc:  # Pillow raises several types for non-images
        raise DecodeError(f"not a recognised image ({_describe(data)}): {exc}") from None
    item = ImageItem(data=data, header=header)
    if max_pixels is not None:
        _check_pixels(item, max_pixels)
    return item


def decode_pixels(item: ImageItem, plan: DecodePlan, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Decode `item`'s pixels once per `plan` (no-op for a header plan).

    The pixel limit is checked on the header before any pixel is decoded, so a file claiming
    billions of pixels costs microseconds. Raises DecodeError; `item.header` stays usable.
    """
    _check_pixels(item, max_pixels)
    if plan.kind == "header":
        return
    header = item.header
    try:
        item.image, item.reduction = _decode(Image.open(io.BytesIO(item.data)), header, plan)
    except Exception as exc:
        raise DecodeError(f"corrupt or truncated {header.format}: {type(exc).__name__}: {exc}", item) from None


def _check_pixels(item: ImageItem, max_pixels: int) -> None:
    header = item.header
    pixels = header.raw_width * header.raw_height
    if pixels > max_pixels:
        raise DecodeError(
            f"too many pixels: {header.raw_width}x{header.raw_height} = {pixels} > max_pixels={max_pixels}, "
            "not decoded (raise profile.max_pixels to allow it)", item)
    if pixels == 0:
        raise DecodeError("zero width or height", item)


def _describe(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "looks like HTML"
    if head[:1] in (b"{", b"[") or all(32 <= b < 127 or b in (9, 10, 13) for b in data[:256]):
        return "looks like text"
    return f"{len(data)} bytes, starts {data[:4].hex()}"


def _read_header(im: Image.Image, data: bytes) -> ImageHeader:
    raw_w, raw_h = im.size
    channels, bit_depth = _MODE_LAYOUT.get(im.mode, (len(im.getbands()), 8))
    if im.format == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR":
        # Pillow reads 16-bit RGB(A) PNGs as 8-bit modes; the IHDR says what is stored.
        bit_depth = data[24]
        channels = _PNG_CHANNELS.get(data[25], channels)
    orientation = _orientation(im, data)
    width, height = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (raw_w, raw_h)
    try:
        n_frames = int(getattr(im, "n_frames", 1))
    except Exception:
        n_frames = 1
    quant = getattr(im, "quantization", None) if im.format in _JPEG_FORMATS else None
    return ImageHeader(
        format=im.format or "UNKNOWN", width=width, height=height, raw_width=raw_w, raw_height=raw_h,
        mode=im.mode, channels=channels, bit_depth=int(bit_depth), orientation=orientation,
        n_frames=n_frames, file_size=len(data),
        quantization={int(k): list(v) for k, v in quant.items()} if quant else None,
    )


def _orientation(im: Image.Image, data: bytes) -> int:
    """EXIF orientation (1-8; 1 when absent or corrupt), read without decoding anything.

    Pillow's PNG `getexif()` decodes the whole image (`load()`) to look for an eXIf chunk after
    the image data: a 437 KB PNG claiming 60000x60000 then costs 3.5 GB and seconds before any
    size check can run. Instead the PNG chunk list is walked over the bytes (lengths and types
    only, nothing inflated) and the base `Image.getexif`, which only reads what the header
    parse stored (and, for TIFF, the IFD), does the rest, XMP orientation included.
    """
    try:
        if im.format == "PNG" and "exif" not in im.info:
            late = _png_chunk(data, b"eXIf")
            if late is not None:
                im.info["exif"] = late
        orientation = int(Image.Image.getexif(im).get(0x0112, 1) or 1)
    except Exception:  # a corrupt EXIF block must not lose the row
        return 1
    return orientation if orientation in range(1, 9) else 1


def _png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The body of the first `kind` chunk of a PNG, found by walking chunk headers (12 bytes of
    framing per chunk, bodies skipped unread); None if absent or past a truncation."""
    view = memoryview(data)
    pos = 8  # after the signature
    while pos + 8 <= len(data):
        length = int.from_bytes(view[pos:pos + 4], "big")
        chunk = bytes(view[pos + 4:pos + 8])
        if chunk == kind:
            return bytes(view[pos + 8:pos + 8 + length])
        if chunk == b"IEND":
            return None
        pos += 12 + length
    return None


def _reduction(header: ImageHeader, plan: DecodePlan) -> int:
    long_side = max(header.raw_width, header.raw_height)
    target = min(plan.min_long_side, long_side) if plan.min_long_side else 1
    for r in _REDUCTIONS:
        if r <= plan.max_reduction and long_side // r >= target:
            return r
    return 1


def _decode(im: Image.Image, header: ImageHeader, plan: DecodePlan) -> tuple[Image.Image, int]:
    r = _reduction(header, plan)
    target_mode = "L" if plan.kind == "luma" else "RGB"
    reduced = 1
    if header.format in _JPEG_FORMATS and r > 1 and im.mode in ("RGB", "L"):
        # DCT-domain scaling: libjpeg never computes the full-resolution pixels. For very thin
        # images draft may choose a smaller factor than asked (and a side under r must not
        # become a 0 request), so the factor is read back from the box it returns.
        request = (max(1, header.raw_width // r), max(1, header.raw_height // r))
        drafted = im.draft(target_mode if im.mode == "RGB" else "L", request)
        if drafted is not None:
            reduced = max(1, round(header.raw_width / drafted[1][2]))
    im.load()
    # 8-bit first: Image.reduce supports neither palette nor 16-bit modes.
    im = _to_8bit(im, target_mode)
    if reduced == 1 and r > 1:
        im = im.reduce(r)
        reduced = r
    # From the header, not exif_transpose: conversions above (alpha compositing, 16-bit
    # scaling) build new images that no longer carry the EXIF block.
    if header.orientation in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[header.orientation])
    return im, reduced


def _to_8bit(im: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit `mode` ("L" or "RGB") without clipping or black alpha."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # I;16 is 16-bit whatever its values (a dark frame must stay dark); plain I is ambiguous.
        wide = im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255)
        top = 65535.0 if wide else 255.0
        im = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode != mode:
        im = im.convert(mode)
    return im

