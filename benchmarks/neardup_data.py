"""Real photographs shipped inside PyPI wheels, and the edited copies a web copy typically is.

`real_photos()` gives 24 distinct photos with no download at run time: the files come from the
installed wheels of scikit-image (`skimage/data/`, the `test` extra), matplotlib
(`mpl-data/sample_data/`, a core dependency) and PyWavelets (`pywt/data/`, installed with
imagehash). 21 are original photographs used whole; 3 more large ones (`_HALVED`) are each cut into
two non-overlapping halves used as two distinct photos: hard negatives with the same colours and
statistics but different content. Drawings, logos and synthetic images in those folders
(horse, logo, phantom, chessboards, colour wheel) are left out, and so are skimage's
motorcycle_right (the stereo partner of motorcycle_left: a near-duplicate of it) and pywt's
camera (the same photo as skimage's).

`edited_copies(img, seed)` gives, per edit kind, a few variants; each copy's `info` dict says
what was done ("variant": a stable name, "params": the drawn values). Every parameter is drawn
from the documented range by a `random.Random` seeded with (seed, kind), so the copies are
deterministic and adding a variant to one kind does not change the others. Pairs of different
photos (and of their copies) are the distinct pairs; an original with any of its copies, or two
copies of one photo, are near-duplicate pairs.
"""

from __future__ import annotations

import colorsys
import importlib.resources
import importlib.util
import io
import math
import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

# (importable package, pip distribution, file inside the package). Colour photos first.
_PHOTOS = (
    ("skimage", "scikit-image", "data/astronaut.png"),
    ("skimage", "scikit-image", "data/chelsea.png"),
    ("skimage", "scikit-image", "data/coffee.png"),
    ("skimage", "scikit-image", "data/rocket.jpg"),
    ("skimage", "scikit-image", "data/ihc.png"),  # immunohistochemistry micrograph
    ("skimage", "scikit-image", "data/hubble_deep_field.jpg"),
    ("skimage", "scikit-image", "data/retina.jpg"),  # fundus photograph
    ("skimage", "scikit-image", "data/motorcycle_left.png"),
    ("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "scikit-image", "data/camera.png"),
    ("skimage", "scikit-image", "data/coins.png"),
    ("skimage", "scikit-image", "data/moon.png"),
    ("skimage", "scikit-image", "data/brick.png"),  # texture
    ("skimage", "scikit-image", "data/grass.png"),  # texture
    ("skimage", "scikit-image", "data/gravel.png"),  # texture
    ("skimage", "scikit-image", "data/text.png"),  # photo of handwritten text
    ("skimage", "scikit-image", "data/page.png"),  # photo of a printed page
    ("skimage", "scikit-image", "data/cell.png"),  # micrograph, nearly flat
    ("skimage", "scikit-image", "data/clock_motion.png"),  # motion-blurred, nearly flat
    ("pywt", "PyWavelets", "data/aero.npz"),  # aerial photograph
    ("pywt", "PyWavelets", "data/ascent.npz"),
)
# Photos used as two halves (cut across the long side) instead of whole: the three largest.
_HALVED = frozenset({"hubble_deep_field", "retina", "motorcycle_left"})

EDIT_KINDS = ("reencode", "resize", "crop", "border", "rotate", "brightness_contrast", "overlay")


def real_photos(max_side: int = 768) -> list[tuple[str, Image.Image]]:
    """24 (name, RGB image) pairs, long side <= max_side px (LANCZOS, never upscaled).

    Names are "package/stem", halves "package/stem#left" (or #top, #right, #bottom). Greyscale
    photos come back as RGB with equal channels. Raises ModuleNotFoundError naming the pip
    distribution to install when a package that ships the files is missing.
    """
    photos = []
    for module, dist, path in _PHOTOS:
        stem = path.rsplit("/", 1)[1].split(".")[0]
        img = _load(module, dist, path)
        parts = _halves(img) if stem in _HALVED else {"": img}
        for suffix, part in parts.items():
            photos.append((f"{module}/{stem}{suffix}", _fit(part, max_side)))
    return photos


def _load(module: str, dist: str, path: str) -> Image.Image:
    """The file `path` inside installed package `module`, decoded to RGB."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"the benchmark photos need the '{dist}' package (it ships {module}/{path}): "
            f"pip install '{dist}', or pip install -e '.[test]'")
    file = importlib.resources.files(module).joinpath(path)
    if path.endswith(".npz"):  # PyWavelets keeps its images as uint8 arrays under "data"
        with file.open("rb") as f:
            return Image.fromarray(np.load(f)["data"]).convert("RGB")
    with file.open("rb") as f:
        return Image.open(f).convert("RGB")


def _halves(img: Image.Image) -> dict[str, Image.Image]:
    """Two non-overlapping halves of img, cut across its long side (so each is closer to square)."""
    w, h = img.size
    if w >= h:
        return {"#left": img.crop((0, 0, w // 2, h)), "#right": img.crop((w // 2, 0, w, h))}
    return {"#top": img.crop((0, 0, w, h // 2)), "#bottom": img.crop((0, h // 2, w, h))}


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    """img shrunk (LANCZOS, aspect kept) so its long side is <= max_side px; never enlarged."""
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def edited_copies(img: Image.Image, seed: int) -> dict[str, list[Image.Image]]:
    """Edited RGB copies of img per kind in EDIT_KINDS (22 in all), deterministic from seed.

    Each copy's info["variant"] names the variant (the same across photos and seeds) and
    info["params"] gives the values drawn. See each `_edit_*` function for its ranges.
    """
    edits: dict[str, Callable[[Image.Image, random.Random], list[Image.Image]]] = {
        "reencode": _edit_reencode,
        "resize": _edit_resize,
        "crop": _edit_crop,
        "border": _edit_border,
        "rotate": _edit_rotate,
        "brightness_contrast": _edit_brightness_contrast,
        "overlay": _edit_overlay,
    }
    img = img.convert("RGB")
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and processes.
    return {kind: edits[kind](img, random.Random(f"{seed}:{kind}")) for kind in EDIT_KINDS}


def _spread(rng: random.Random, lo: float, hi: float, k: int) -> list[float]:
    """k values, one uniform draw in each of k equal sub-intervals of [lo, hi], ascending.

    Stratified so that a handful of variants always covers the whole range.
    """
    step = (hi - lo) / k
    return [lo + step * (i + rng.random()) for i in range(k)]


def _tag(img: Image.Image, variant: str, params: str) -> Image.Image:
    img.info["variant"] = variant
    img.info["params"] = params
    return img


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _edit_reencode(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """3 JPEG re-encodes at quality 50-90 (PIL's scale, 4:2:0 chroma), one per third of the range."""
    strata = ("q50-63", "q63-77", "q77-90")
    return [_tag(_jpeg(img, round(q)), name, f"q{round(q)}")
            for name, q in zip(strata, _spread(rng, 50, 90, 3), strict=True)]


def _edit_resize(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """2 downscales to 0.5-0.8x each side (aspect kept), one per half of the range.

    The resampling filter (bilinear, bicubic or LANCZOS) is drawn too: sites differ.
    """
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "lanczos": Image.Resampling.LANCZOS}
    copies = []
    for name, scale in zip(("0.50-0.65x", "0.65-0.80x"), _spread(rng, 0.5, 0.8, 2), strict=True):
        filt = rng.choice(sorted(filters))
        size = (round(img.width * scale), round(img.height * scale))
        copies.append(_tag(img.resize(size, filters[filt]), name, f"{scale:.2f}x {filt}"))
    return copies


def _edit_crop(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """4 crops keeping 80-95% of each side (width and height drawn separately).

    2 centred, 2 off-centre: pushed into a drawn corner (all the cut on two adjacent sides),
    as a re-framed or partly screenshotted copy is. The width fractions are stratified.
    """
    copies = []
    for i, keep_w in enumerate(_spread(rng, 0.80, 0.95, 4)):
        keep_h = rng.uniform(0.80, 0.95)
        w, h = round(img.width * keep_w), round(img.height * keep_h)
        slack_x, slack_y = img.width - w, img.height - h
        if i % 2 == 0:
            x, y, where = slack_x // 2, slack_y // 2, "centred"
        else:
            x, y = rng.choice((0, slack_x)), rng.choice((0, slack_y))
            where = "corner"
        stratum = f"{where}, width {80 + 3.75 * i:.0f}-{83.75 + 3.75 * i:.0f}%"
        copies.append(_tag(img.crop((x, y, x + w, y + h)), stratum,
                           f"keep {keep_w:.0%} x {keep_h:.0%} at ({x},{y})"))
    return copies


def _edit_border(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """3 solid frames, each 2-10% thick (stratified over the 3 variants, order drawn):

    - white mat: all four sides, thickness = fraction x the short side;
    - black letterbox: bars on top and bottom only, each fraction x the height;
    - coloured frame: all four sides like the mat, a saturated colour (HSV s 0.6-1, v 0.4-0.9).
    """
    fractions = _spread(rng, 0.02, 0.10, 3)
    rng.shuffle(fractions)
    mat, bars, frame = fractions
    colour = _saturated_colour(rng)
    return [
        _tag(_pad(img, round(mat * min(img.size)), None, (255, 255, 255)), "white mat", f"{mat:.1%}"),
        _tag(_pad(img, 0, round(bars * img.height), (0, 0, 0)), "black letterbox", f"{bars:.1%}"),
        _tag(_pad(img, round(frame * min(img.size)), None, colour), "colour frame",
             f"{frame:.1%} rgb{colour}"),
    ]


def _pad(img: Image.Image, side: int, top: int | None, colour: tuple[int, int, int]) -> Image.Image:
    """img on a solid canvas: `side` px left and right, `top` px above and below (None: = side)."""
    top = side if top is None else top
    canvas = Image.new("RGB", (img.width + 2 * side, img.height + 2 * top), colour)
    canvas.paste(img, (side, top))
    return canvas


def _saturated_colour(rng: random.Random) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.9))
    return round(r * 255), round(g * 255), round(b * 255)


def _edit_rotate(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """4 rotations by 1-5 degrees (magnitudes stratified, order drawn), bicubic:

    - +angle, canvas expanded, corners filled black;
    - -angle, canvas expanded, corners filled white;
    - +angle and -angle cropped to the largest axis-aligned rectangle inside the rotated image
      (no fill, a little of every edge lost), as a straightened photo is.
    Positive angles are counter-clockwise.
    """
    angles = _spread(rng, 1.0, 5.0, 4)
    rng.shuffle(angles)
    # (name, direction, corner fill; None: cropped to the inner rectangle instead)
    variants = (("black fill +", 1, (0, 0, 0)), ("white fill -", -1, (255, 255, 255)),
                ("inner crop +", 1, None), ("inner crop -", -1, None))
    copies = []
    for (name, sign, fill), a in zip(variants, angles, strict=True):
        degrees = sign * a
        rotated = (_rotate_cropped(img, degrees) if fill is None else
                   img.rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=fill))
        copies.append(_tag(rotated, name, f"{degrees:+.1f} deg"))
    return copies


def _rotate_cropped(img: Image.Image, degrees: float) -> Image.Image:
    """img rotated by `degrees`, cropped to the largest axis-aligned rectangle of pure image."""
    rotated = img.rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    w, h = _inner_rectangle(img.width, img.height, math.radians(degrees))
    # One pixel less each side: bicubic blends the fill into the outermost row of the rectangle.
    w, h = int(w) - 2, int(h) - 2
    x, y = (rotated.width - w) // 2, (rotated.height - h) // 2
    return rotated.crop((x, y, x + w, y + h))


def _inner_rectangle(w: int, h: int, angle: float) -> tuple[float, float]:
    """(width, height) px of the largest-area axis-aligned rectangle inside a w x h rectangle
    rotated by `angle` radians (the closed form for a rectangle centred on the rotation)."""
    long_side, short_side = max(w, h), min(w, h)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if short_side <= 2 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # Thin rectangle or 45 degrees: the inner rectangle touches the two long sides only.
        half = 0.5 * short_side
        return (half / sin_a, half / cos_a) if w >= h else (half / cos_a, half / sin_a)
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (w * cos_a - h * sin_a) / cos_2a, (h * cos_a - w * sin_a) / cos_2a


def _edit_brightness_contrast(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """4 global tone edits by a factor 1 +- 10-25% (magnitudes stratified, order drawn):
    brightness up, brightness down, contrast up, contrast down (PIL ImageEnhance: brightness
    scales every channel value, contrast scales the distance from the mean grey)."""
    amounts = _spread(rng, 0.10, 0.25, 4)
    rng.shuffle(amounts)
    edits = (("brightness +", ImageEnhance.Brightness, 1), ("brightness -", ImageEnhance.Brightness, -1),
             ("contrast +", ImageEnhance.Contrast, 1), ("contrast -", ImageEnhance.Contrast, -1))
    return [_tag(enhancer(img).enhance(1 + sign * a), name, f"{sign * a:+.0%}")
            for (name, enhancer, sign), a in zip(edits, amounts, strict=True)]


_WATERMARKS = ("© stockphotos", "@photographer", "SAMPLE", "© 2024 news")


def _edit_overlay(img: Image.Image, rng: random.Random) -> list[Image.Image]:
    """2 small overlays in a drawn corner, 2-4% of the side in from its edges:

    - text watermark: one of a few short strings, font size 4-7% of the short side (>= 10 px,
      so the widest string spans at most about half the image), white with a dark outline, opacity 60-90%;
    - logo-like box: an opaque saturated square of 8-14% of the short side with a white letter.
    """
    text_px = max(10, round(min(img.size) * rng.uniform(0.04, 0.07)))
    text = rng.choice(_WATERMARKS)
    opacity = rng.uniform(0.6, 0.9)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=text_px)
    stroke = max(1, text_px // 12)
    box = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x, y = _corner(img.size, (box[2], box[3]), rng)
    alpha = round(255 * opacity)
    draw.text((x, y), text, font=font, fill=(255, 255, 255, alpha), stroke_width=stroke,
              stroke_fill=(0, 0, 0, alpha))
    watermarked = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")

    side = max(8, round(min(img.size) * rng.uniform(0.08, 0.14)))
    colour = _saturated_colour(rng)
    logo = img.copy()
    lx, ly = _corner(img.size, (side, side), rng)
    logo_draw = ImageDraw.Draw(logo)
    logo_draw.rectangle((lx, ly, lx + side - 1, ly + side - 1), fill=colour)
    letter_font = ImageFont.load_default(size=max(6, round(side * 0.7)))
    logo_draw.text((lx + side / 2, ly + side / 2), rng.choice("ABKMRXZ"), font=letter_font,
                   fill=(255, 255, 255), anchor="mm")
    return [_tag(watermarked, "text watermark", f"{text!r} {text_px}px {opacity:.0%}"),
            _tag(logo, "logo box", f"{side}px rgb{colour}")]


def _corner(size: tuple[int, int], box: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    """Top-left (x, y) px placing a box of `box` px in a drawn corner, 2-4% of each side inside."""
    margin_x = round(size[0] * rng.uniform(0.02, 0.04))
    margin_y = round(size[1] * rng.uniform(0.02, 0.04))
    x = rng.choice((margin_x, size[0] - box[0] - margin_x))
    y = rng.choice((margin_y, size[1] - box[1] - margin_y))
    return max(0, x), max(0, y)
