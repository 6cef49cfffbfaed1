"""Known text drawn into images, with the ground truth of where it went.

`draw_text(img, lines)` draws each `TextLine` (face from `curation.demo.fonts`, size in px,
position, rotation, colour, optional plate behind it like a sign) and returns the new image and
one `RenderedLine` per line: the string and its box, the 4 corners (top-left, top-right,
bottom-right, bottom-left) of the text's ink box after rotation, in the image's pixels. The OCR
tests, the OCR benchmark and the demo corpus's `text` images use it; so can a text renderer
for edit pairs.

`sign_image(rng, w, h, texts)` is the demo's kind of picture: a photo-like background with a
light plate carrying one to three lines, each in a face that covers its characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from curation.demo import fonts
from curation.demo.images import photo_like


@dataclass(frozen=True)
class TextLine:
    """One line to draw.

    text: the string; font: a face name of `curation.demo.fonts` (it must cover the text);
    px: the em size, px; xy: top-left corner of the unrotated ink box, image px;
    angle: degrees counter-clockwise about the ink box's centre; fill: RGB text colour;
    plate: RGB colour of a rectangle drawn behind the text (margin `plate_pad` x em), or None.
    """

    text: str
    font: str
    px: int
    xy: tuple[float, float]
    angle: float = 0.0
    fill: tuple[int, int, int] = (20, 20, 20)
    plate: tuple[int, int, int] | None = None
    plate_pad: float = 0.35


@dataclass(frozen=True)
class RenderedLine:
    """A drawn line: its text and its box (x0, y0, x1, y1, x2, y2, x3, y3: the ink box's corners,
    clockwise from top-left, after rotation, in image px)."""

    text: str
    box: tuple[float, ...]

    def envelope(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (x_min, y_min, x_max, y_max) of the box, px."""
        xs, ys = self.box[0::2], self.box[1::2]
        return min(xs), min(ys), max(xs), max(ys)


def text_size(line_text: str, font: str, px: int) -> tuple[int, int]:
    """(width, height) of the ink box of `line_text` in face `font` at `px`, px."""
    left, top, right, bottom = fonts.font(font, px).getbbox(line_text)
    return right - left, bottom - top


def draw_text(img: Image.Image, lines: list[TextLine]) -> tuple[Image.Image, list[RenderedLine]]:
    """`img` (any mode; returned as RGB) with `lines` drawn in order, and their boxes."""
    out = img.convert("RGB")
    rendered = []
    for line in lines:
        face = fonts.font(line.font, line.px)
        left, top, right, bottom = face.getbbox(line.text)
        w, h = right - left, bottom - top
        pad = max(2, round(line.plate_pad * line.px)) if line.plate else 2
        layer = Image.new("RGBA", (w + 2 * pad, h + 2 * pad), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        if line.plate:
            draw.rectangle([0, 0, layer.width - 1, layer.height - 1], fill=(*line.plate, 255))
        draw.text((pad - left, pad - top), line.text, font=face, fill=(*line.fill, 255))
        cx, cy = line.xy[0] + w / 2, line.xy[1] + h / 2
        if line.angle:
            layer = layer.rotate(line.angle, resample=Image.Resampling.BICUBIC, expand=True)
        out.paste(layer, (round(cx - layer.width / 2), round(cy - layer.height / 2)), layer)
        rendered.append(RenderedLine(line.text, _rotated_box(line.xy[0], line.xy[1], w, h, line.angle)))
    return out, rendered


def _rotated_box(x: float, y: float, w: float, h: float, angle: float) -> tuple[float, ...]:
    """Corners of the box (x, y, w, h) turned `angle` degrees counter-clockwise (as seen, y down)
    about its centre, clockwise from top-left."""
    cx, cy = x + w / 2, y + h / 2
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = []
    for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        dx, dy = px - cx, py - cy
        out += [cx + dx * c + dy * s, cy - dx * s + dy * c]
    return tuple(out)


def face_for(text: str, prefer: str = "sans") -> str:
    """`prefer` if it covers `text`, else the Simplified Chinese face (for CJK strings)."""
    if fonts.covers(prefer, text):
        return prefer
    return "cjk-sans"


def sign_image(rng: np.random.Generator, width: int, height: int,
               texts: list[str]) -> tuple[Image.Image, list[RenderedLine]]:
    """A photo-like picture with a light plate carrying `texts` (one line each, dark ink, up to
    3 degrees of tilt): the demo corpus's planted text images. Letter height ~5-8% of the
    shorter side; lines are centred and stacked."""
    img = photo_like(rng, width, height)
    short = min(width, height)
    px = int(rng.integers(round(0.06 * short), round(0.09 * short) + 1))
    faces = [face_for(t, prefer=["sans", "serif", "sans-bold"][int(rng.integers(3))]) for t in texts]
    sizes = [text_size(t, f, px) for t, f in zip(texts, faces)]
    gap = round(0.6 * px)
    block_h = sum(h for _, h in sizes) + gap * (len(texts) - 1)
    block_w = max(w for w, _ in sizes)
    if block_w > 0.9 * width:  # too wide: shrink the letters to fit
        scale = 0.9 * width / block_w
        px = max(10, int(px * scale))
        sizes = [text_size(t, f, px) for t, f in zip(texts, faces)]
        block_h = sum(h for _, h in sizes) + gap * (len(texts) - 1)
        block_w = max(w for w, _ in sizes)
    y = (height - block_h) / 2 + float(rng.uniform(-0.15, 0.15)) * (height - block_h)
    x0 = (width - block_w) / 2 + float(rng.uniform(-0.1, 0.1)) * (width - block_w)
    angle = float(rng.uniform(-3, 3))
    plate = tuple(int(v) for v in rng.integers(225, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    lines = []
    for text, face, (w, h) in zip(texts, faces, sizes):
        lines.append(TextLine(text, face, px, (x0 + (block_w - w) / 2, y), angle, ink, plate))
        y += h + gap
    return draw_text(img, lines)
