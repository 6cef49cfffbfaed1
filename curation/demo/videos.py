"""Synthetic videos with known shots: slow camera moves over still images, joined by hard cuts.

`write_video` renders one shot per image (a pan combined with a slow zoom, drawn from a seeded
generator) and returns the cut times; `write_demo_videos` writes the two demo clips of the
edit-pair builder (cuts at `DEMO_CUTS_S`). Sizes are in pixels, times in seconds.

Encoder: H.264 (`libx264`, yuv420p, `+faststart` so the index sits before the data) when the
PyAV wheel has it, which plays back everywhere; MPEG-4 part 2 otherwise. A seed gives the same
bytes with the same encoder build: x264's macroblock-tree rate control is off because with it
the same frames came out differently now and then (1 run in 4 of a 160x96 clip).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

__all__ = ["DEMO_CUTS_S", "DEMO_FPS", "DEMO_SHOTS_S", "DEMO_SIZE", "default_encoder", "write_demo_videos",
           "write_video"]

DEMO_SIZE = (640, 360)  # px, width x height
DEMO_FPS = 24
DEMO_SHOTS_S = ((2.5, 2.5), (3.0, 2.0))  # shot lengths of the two demo videos, seconds
DEMO_CUTS_S = tuple(shots[0] for shots in DEMO_SHOTS_S)  # the one hard cut of each demo video

_WINDOW = (0.70, 0.85)  # crop window at the start of a shot, share of the largest one that fits
_ZOOM = 0.12  # the window grows or shrinks by this share of itself over a shot
_X264 = {"preset": "veryfast", "crf": "20", "x264-params": "mbtree=0"}
_MPEG4_BITS_PER_PIXEL = 0.2  # bit rate of the MPEG-4 fallback, per pixel per frame


def default_encoder() -> str:
    """`libx264` when this PyAV build has it, else `mpeg4` (every FFmpeg build has that)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: str | os.PathLike, images: list[Image.Image], shot_s: list[float],
                rng: np.random.Generator, size: tuple[int, int] = DEMO_SIZE, fps: int = DEMO_FPS,
                encoder: str | None = None) -> list[float]:
    """Write one shot per image (`shot_s[i]` seconds of a camera move over `images[i]`) to an
    .mp4 at `size` (px) and `fps`; returns the cut times (start of shots 2..n), seconds.

    A shot lasts round(shot_s * fps) frames, so cut times fall on frame boundaries.
    """
    codec = encoder or default_encoder()
    width, height = size
    cuts, n_done = [], 0
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = dict(_X264)
        else:
            stream.bit_rate = int(width * height * fps * _MPEG4_BITS_PER_PIXEL)
        for k, (image, seconds) in enumerate(zip(images, shot_s, strict=True)):
            if k:
                cuts.append(n_done / fps)
            n = max(1, round(seconds * fps))
            for box in _camera_path(image.size, size, n, rng):
                view = image.transform(size, Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
                frame = av.VideoFrame.from_ndarray(np.asarray(view), format="rgb24")
                frame.pts, frame.time_base = n_done, Fraction(1, fps)
                container.mux(stream.encode(frame))
                n_done += 1
        container.mux(stream.encode())
    return cuts


def write_demo_videos(images: list[Image.Image | str | os.PathLike], out_dir: str | os.PathLike,
                      seed: int = 0, size: tuple[int, int] = DEMO_SIZE, fps: int = DEMO_FPS,
                      encoder: str | None = None) -> list[str]:
    """Two short videos `demo_video_{0,1}.mp4` in `out_dir`: video k moves over image 2k, then
    cuts (at `DEMO_CUTS_S[k]` seconds) to image 2k+1 (images are used cyclically, at least
    one). Returns the paths. Deterministic frames for a seed.
    """
    pictures = [_rgb(im) for im in images]
    if not pictures:
        raise ValueError("write_demo_videos: no images")
    rng = np.random.default_rng(seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for k, shots in enumerate(DEMO_SHOTS_S):
        chosen = [pictures[(2 * k + i) % len(pictures)] for i in range(len(shots))]
        path = os.path.join(out_dir, f"demo_video_{k}.mp4")
        write_video(path, chosen, list(shots), rng, size, fps, encoder)
        paths.append(path)
    return paths


def _rgb(image: Image.Image | str | os.PathLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


def _camera_path(image_size: tuple[int, int], view_size: tuple[int, int], n: int,
                 rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """n crop boxes (left, top, right, bottom in image px) with the view's aspect: the box
    slides in a straight line and zooms in or out steadily, always inside the image."""
    iw, ih = image_size
    aspect = view_size[0] / view_size[1]
    fit_w = min(iw, ih * aspect)  # width of the largest box with the view's aspect
    start = rng.uniform(*_WINDOW)
    end = start * (1 + _ZOOM * rng.choice([-1.0, 1.0]))
    ends = []
    for share in (start, end):
        w = fit_w * share
        h = w / aspect
        ends.append((w, h, rng.uniform(w / 2, iw - w / 2), rng.uniform(h / 2, ih - h / 2)))
    boxes = []
    for u in np.linspace(0.0, 1.0, n):
        w, h, cx, cy = (a + (b - a) * u for a, b in zip(*ends))
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes
