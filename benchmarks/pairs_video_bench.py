"""Edit pairs from video: `read_video` vs the naive way, same video, same encoder, one process.

    .venv/bin/python benchmarks/pairs_video_bench.py [--seconds 60] [--side 1280x720] [--codec libx264]

Data: a synthetic H.264 video (`curation.demo.videos.write_video`, 24 fps) of shots 4-14 s long,
each a slow pan and zoom over one of scikit-image's photos (astronaut, cat, coffee, rocket,
motorcycle, Hubble deep field, retina; 300-600 px, so upscaled and smoother than camera
footage, which decodes slower and makes decoding a larger share of both sides).

- ours: `read_video` (one decode; shots found on 256 px frames; frames 1 s apart inside each
  shot, at most 8 per shot and 64 per video, converted to RGB at <= 1024 px and JPEG-encoded),
  embedding of the sampled frames, `frame_pairs`, the cosine band [0.80, 0.985];
- naive: decode every frame with PyAV's defaults, `frame.to_image()` at full size, embed every
  frame, pair each frame with the one 1 s later (no shot detection: the band has to drop pairs
  across a cut), the same band.

Embedding: a tiny random open_clip ViT-B-32 (64 px input, the demo job's `clip`), batches of 64,
2 torch threads. Speed is minutes of video per minute of wall time (target ratio >= 5x).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
import skimage  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from curation.demo.videos import write_video  # noqa: E402
from curation.steps.pairs.config import VideoConfig  # noqa: E402
from curation.steps.pairs.video import frame_pairs, read_video  # noqa: E402
from operators.models.base import Encoder  # noqa: E402
from operators.models.encoders import EncoderConfig, load_encoder  # noqa: E402

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg")
SHOT_S = (4.0, 14.0)  # shot lengths, drawn uniformly, seconds
FPS = 24
BATCH = 64
TINY_CLIP = EncoderConfig(
    name="clip", backend="open_clip", model="ViT-B-32", random=True,
    model_overrides={
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
)


def make_video(path: str, seconds: float, side: tuple[int, int], codec: str | None, seed: int = 0) -> list[float]:
    """Write the benchmark video; returns its cut times, seconds."""
    rng = np.random.default_rng(seed)
    folder = Path(skimage.__file__).parent / "data"
    photos = [Image.open(folder / name).convert("RGB") for name in PHOTOS]
    lengths: list[float] = []
    while sum(lengths) < seconds:
        lengths.append(min(float(rng.uniform(*SHOT_S)), seconds - sum(lengths)))
    shots = [photos[i % len(photos)] for i in range(len(lengths))]
    return write_video(path, shots, lengths, rng, size=side, fps=FPS, encoder=codec)


def embed(encoder: Encoder, pixels: list[np.ndarray]) -> np.ndarray:
    """L2-normalised embeddings of prepared images, BATCH at a time."""
    if not pixels:
        return np.zeros((0, 0), np.float32)
    batches = [encoder.encode_images(np.stack(pixels[i:i + BATCH])).normalized.numpy()
               for i in range(0, len(pixels), BATCH)]
    return np.concatenate(batches)


def band_filter(vectors: np.ndarray, pairs: list[tuple[int, int]], band: list[float]) -> dict:
    """How many pairs have a cosine similarity in [band[0], band[1]], and the median cosine."""
    if not pairs:
        return {"pairs": 0, "pairs_in_band": 0, "median_cosine": float("nan")}
    i, j = np.array(pairs).T
    cosine = (vectors[i] * vectors[j]).sum(axis=1)
    kept = int(((cosine >= band[0]) & (cosine <= band[1])).sum())
    return {"pairs": len(pairs), "pairs_in_band": kept, "median_cosine": float(np.median(cosine))}


def ours(path: str, cfg: VideoConfig, encoder: Encoder) -> dict:
    start = time.perf_counter()
    video = read_video(path, cfg)
    vectors = embed(encoder, [encoder.prepare(f.image) for f in video.frames])
    found = band_filter(vectors, frame_pairs(video.frames, cfg.interval_s), cfg.band)
    return {"wall_s": time.perf_counter() - start, "frames_embedded": len(video.frames), **found}


def naive(path: str, cfg: VideoConfig, encoder: Encoder) -> dict:
    start = time.perf_counter()
    pixels, times = [], []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            pixels.append(encoder.prepare(frame.to_image()))
            times.append(frame.time)
    vectors = embed(encoder, pixels)
    times = np.array(times)
    later = np.searchsorted(times, times + cfg.interval_s - 0.5 / FPS)
    pairs = [(i, int(j)) for i, j in enumerate(later) if j < len(times)]
    found = band_filter(vectors, pairs, cfg.band)
    return {"wall_s": time.perf_counter() - start, "frames_embedded": len(pixels), **found}


def run(seconds: float = 60, side: tuple[int, int] = (1280, 720), encoder: EncoderConfig | None = None,
        codec: str | None = None) -> dict:
    """Time both ways on one synthetic video of `seconds` at `side` (px); `encoder` embeds the
    frames (default: the tiny random clip), `codec` writes the video (default: libx264)."""
    torch.set_num_threads(2)
    cfg = VideoConfig()
    model = load_encoder(encoder or TINY_CLIP)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.mp4")
        made = time.perf_counter()
        cuts = make_video(path, seconds, side, codec)
        made = time.perf_counter() - made
        result = {"video_s": seconds, "side": side, "cuts": len(cuts), "write_s": made,
                  "ours": ours(path, cfg, model), "naive": naive(path, cfg, model)}
    for way in ("ours", "naive"):
        result[way]["video_min_per_min"] = seconds / result[way]["wall_s"]
    result["ratio"] = result["ours"]["video_min_per_min"] / result["naive"]["video_min_per_min"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--side", default="1280x720", help="WIDTHxHEIGHT, px")
    parser.add_argument("--codec", default=None, help="video encoder (default: libx264, else mpeg4)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.side.split("x"))
    r = run(args.seconds, (width, height), codec=args.codec)
    print(f"video: {r['video_s']:.0f} s at {width}x{height}, {r['cuts']} cuts (written in {r['write_s']:.1f} s)")
    for way in ("ours", "naive"):
        s = r[way]
        print(f"{way:6s} {s['wall_s']:6.1f} s wall  {s['video_min_per_min']:6.2f} min of video / min  "
              f"{s['frames_embedded']:5d} frames embedded  {s['pairs']:5d} pairs, {s['pairs_in_band']} in band "
              f"(median cosine {s['median_cosine']:.3f})")
    print(f"ratio: {r['ratio']:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
