"""Expert-edit groups for the demo and tests: an original and edited versions made by
deterministic image operations whose instructions are known, in the directory layout that
`curation.steps.pairs.experts` reads (`<group>/original.jpg`, the edits, `edits.jsonl`).

Operations (`EDITS`): grayscale, colour shift, crop-and-zoom, added border, pasted object,
blur. With `bad=True` the corpus also plants the problems the builder must count, not crash on:
a group with one image, a group whose edit does not decode, a listing line with an empty
instruction, one whose instruction is not UTF-8, a malformed line, a line naming a missing file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from curation.demo.images import photo_like, save_image

__all__ = ["EDITS", "write_expert_groups", "write_pair_inputs"]

Op = Callable[[Image.Image, np.random.Generator], Image.Image]


def _grayscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def _colour_shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate the hue by a third of the circle (reds become greens ...)."""
    h, s, v = img.convert("HSV").split()
    h = h.point(lambda x: (x + 85) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _crop_zoom(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The centre 60% of the image, enlarged back to the full size."""
    w, h = img.size
    box = (round(w * 0.2), round(h * 0.2), round(w * 0.8), round(h * 0.8))
    return img.crop(box).resize((w, h), Image.Resampling.BICUBIC)


def _border(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A red border 5% of the shorter side wide, drawn over the edges (size unchanged)."""
    out = img.copy()
    b = max(2, round(min(img.size) * 0.05))
    ImageDraw.Draw(out).rectangle([0, 0, img.width - 1, img.height - 1], outline=(220, 20, 20), width=b)
    return out


def _paste_ball(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A yellow ball with a dark outline, a fifth of the shorter side across, lower right."""
    out = img.copy()
    d = round(min(img.size) * 0.2)
    x, y = round(img.width * 0.62), round(img.height * 0.58)
    ImageDraw.Draw(out).ellipse([x, y, x + d, y + d], fill=(250, 210, 30), outline=(60, 40, 0), width=3)
    return out


def _blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(4))


# name -> (operation, task, English instruction, Chinese instruction, params)
EDITS: dict[str, tuple[Op, str, str, str, dict]] = {
    "gray": (_grayscale, "grayscale", "Make the photo black and white", "把照片变成黑白的", {}),
    "hue": (_colour_shift, "colour_shift", "Shift all the colours by a third of the colour wheel",
            "把所有颜色沿色环旋转三分之一", {}),
    "zoom": (_crop_zoom, "crop_zoom", "Zoom in on the centre of the picture", "放大画面中央", {}),
    "border": (_border, "add_border", "Add a red border around the picture", "给图片加上红色边框", {}),
    "ball": (_paste_ball, "add_object", "Put a yellow ball in the lower right", "在右下方放一个黄色的球",
             {"object": "yellow ball"}),
    "blur": (_blur, "blur", "Blur the whole picture", "把整张图片模糊化", {}),
}
_ZH_OBJECT = {"yellow ball": "黄色的球"}


def write_expert_groups(out_dir: str | Path, n_groups: int = 4, seed: int = 0, size: tuple[int, int] = (640, 480),
                        bad: bool = True) -> list[Path]:
    """Write `n_groups` groups (the last one with Chinese instructions) and, with `bad`, the
    planted problems. Returns the group folders written."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    names = list(EDITS)
    groups = []
    for g in range(n_groups):
        zh = g == n_groups - 1
        d = out / f"group{g:02d}"
        original = photo_like(rng, *size)
        save_image(original, d / "original.jpg", quality=92)
        chosen = [names[(g + k) % len(names)] for k in range(4)]
        lines = []
        for name in chosen:
            op, task, en, zh_text, params = EDITS[name]
            save_image(op(original, rng), d / f"{name}.jpg", quality=92)
            line = {"file": f"{name}.jpg", "task": task, "instruction": zh_text if zh else en}
            if params:
                line["params"] = {k: _ZH_OBJECT.get(v, v) for k, v in params.items()} if zh else params
            lines.append(json.dumps(line, ensure_ascii=False))
        (d / "edits.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        groups.append(d)
    if bad:
        groups += _bad_groups(out, rng, size)
    return groups


def _bad_groups(out: Path, rng: np.random.Generator, size: tuple[int, int]) -> list[Path]:
    lonely = out / "bad_one_image"
    save_image(photo_like(rng, *size), lonely / "original.jpg")
    broken = out / "bad_listing"
    original = photo_like(rng, *size)
    save_image(original, broken / "original.jpg")
    save_image(_grayscale(original, rng), broken / "gray.jpg")
    save_image(_border(original, rng), broken / "border.jpg")
    save_image(_blur(original, rng), broken / "blur.jpg")
    (broken / "zoom.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")  # does not decode
    (broken / "edits.jsonl").write_bytes(b"\n".join([
        json.dumps({"file": "gray.jpg", "task": "grayscale", "instruction": ""}).encode(),  # empty
        b'{"file": "border.jpg", "task": "add_border", "instruction": "Add a \xff\xfe border"}',  # not UTF-8
        b'{"file": "blur.jpg", "task": "blur", "instruction": "Blur it"',  # malformed JSON
        json.dumps({"file": "zoom.jpg", "task": "crop_zoom", "instruction": "Zoom in"}).encode(),
        json.dumps({"file": "missing.jpg", "task": "grayscale", "instruction": "Make it grey"}).encode(),
    ]) + b"\n")
    return [lonely, broken]


def write_pair_inputs(workdir: str | Path) -> None:
    """The demo's edit-pair inputs beside its corpus: expert-edit groups in `workdir/edits` and
    two short videos in `workdir/videos` (each kept if already there)."""
    from curation.demo.videos import write_demo_videos

    edits, videos = Path(workdir) / "edits", Path(workdir) / "videos"
    if not edits.is_dir():
        write_expert_groups(edits, n_groups=4, seed=0)
    if not videos.is_dir():
        rng = np.random.default_rng(7)
        write_demo_videos([photo_like(rng, 960, 640) for _ in range(4)], videos, seed=0)
