"""How close is the PHash operator, on a reduced decode, to imagehash on a full decode?

    .venv/bin/python benchmarks/phash_agreement.py --min-long-side 0 128 256 --n 200

For each candidate `min_long_side` of the PHash need (max_reduction 8, as declared), and for the
plan the profiling stage uses in practice (the union of every registered operator's need), it
reports on a seeded corpus of generated photo-like JPEGs: the fraction of hashes identical to
the exact one, within 2 bits, the largest distance, and images/s against imagehash.phash
(one core, decode included). The exact hash is phash_from_luma on a full RGB->L decode, which
is checked to equal imagehash bit for bit.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.decode import DecodePlan, open_item, plan_for  # noqa: E402
from operators.phash import PHash, hamming, phash_from_luma  # noqa: E402
from operators.registry import OPERATORS  # noqa: E402


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def synth_photo(rng: np.random.Generator, megapixels: tuple[float, float] = (1.0, 2.0)) -> Image.Image:
    """A photo-like RGB image: smooth field and gradient, shapes, text-like strokes, blur, noise."""
    aspect = rng.uniform(0.56, 1.0)
    pixels = rng.uniform(*megapixels) * 1e6
    w, h = int(np.sqrt(pixels / aspect)), int(np.sqrt(pixels * aspect))
    if rng.random() < 0.3:
        w, h = h, w
    field = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * np.arange(w)[None, :] / w + np.sin(angle) * np.arange(h)[:, None] / h)
    base += (rng.uniform(-80, 80) * ramp)[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 20))):
        x0, y0 = rng.integers(-w // 4, w), rng.integers(-h // 4, h)
        x1, y1 = x0 + rng.integers(w // 20, w // 2), y0 + rng.integers(h // 20, h // 2)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=_random_colour(rng))
        elif kind == 1:
            draw.rectangle((int(x0), int(y0), int(x1), int(y1)), fill=_random_colour(rng))
        else:
            pts = [(int(x), int(y)) for x, y in zip(rng.integers(x0, x1, 5), rng.integers(y0, y1, 5))]
            draw.polygon(pts, fill=_random_colour(rng))
    for _ in range(int(rng.integers(0, 4))):  # paragraphs of glyph-like strokes
        colour, size = _random_colour(rng), int(rng.integers(8, 40))
        x_start, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h))
        for _line in range(int(rng.integers(1, 6))):
            x = x_start
            for _glyph in range(int(rng.integers(5, 30))):
                for _ in range(int(rng.integers(1, 4))):
                    a = (x + int(rng.integers(0, size // 2 + 1)), y + int(rng.integers(0, size + 1)))
                    b = (x + int(rng.integers(0, size // 2 + 1)), y + int(rng.integers(0, size + 1)))
                    draw.line([a, b], fill=colour, width=max(1, size // 10))
                x += size // 2 + int(rng.integers(1, size // 4 + 2))
            y += int(size * 1.4)
    radius = rng.uniform(0, 2.0)
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    sigma = rng.uniform(0, 8)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, (h, w, 1 if rng.random() < 0.5 else 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def synth_jpegs(n: int, seed: int = 0, megapixels: tuple[float, float] = (1.0, 2.0)) -> list[bytes]:
    """`n` seeded photo-like JPEGs (quality 70..95, 4:2:0)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        buf = io.BytesIO()
        synth_photo(rng, megapixels).save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        out.append(buf.getvalue())
    return out


def _rate(fn, items: list[bytes]) -> tuple[list[int], float]:
    start = time.perf_counter()
    hashes = [fn(data) for data in items]
    return hashes, len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-long-side", type=int, nargs="+", default=[0, 128, 256])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import imagehash

    corpus = synth_jpegs(args.n, args.seed)
    exact, _ = _rate(lambda d: phash_from_luma(Image.open(io.BytesIO(d))), corpus)
    reference, ref_rate = _rate(lambda d: int(str(imagehash.phash(Image.open(io.BytesIO(d)))), 16), corpus)
    mismatches = sum(a != b for a, b in zip(exact, reference))
    print(f"{len(corpus)} JPEGs, {np.mean([len(d) for d in corpus]) / 1e3:.0f} kB mean; "
          f"exact == imagehash on {len(corpus) - mismatches}/{len(corpus)}; imagehash {ref_rate:.0f} img/s")

    op = PHash()
    plans = {f"phash need, min_long_side={s}": DecodePlan("luma", s, PHash.need.max_reduction)
             for s in args.min_long_side}
    plans["stage plan (all operators)"] = plan_for(o.need for o in OPERATORS.values())
    for label, plan in plans.items():
        fast, rate = _rate(lambda d: op.compute(open_item(d, plan))["phash"], corpus)
        dist = np.asarray(hamming(np.array(fast, dtype=np.uint64), np.array(exact, dtype=np.uint64)))
        print(f"{label:34s} {plan}: identical {np.mean(dist == 0):.3f}, <=2 bits {np.mean(dist <= 2):.3f}, "
              f"max {dist.max()} bits, {rate:.0f} img/s ({rate / ref_rate:.1f}x imagehash)")
    # How far apart are different images? (sanity for dedup thresholds)
    exact_arr = np.array(exact, dtype=np.uint64)
    pair = hamming(exact_arr[:, None], exact_arr[None, :])[np.triu_indices(len(exact), 1)]
    print(f"distinct images: min {pair.min()} bits, 1st percentile {np.percentile(pair, 1):.0f}, "
          f"median {np.median(pair):.0f}")


if __name__ == "__main__":
    main()
