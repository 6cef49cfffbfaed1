"""Rendered text-editing pairs (`curation.steps.pairs.render`): speed and OCR read-back.

Backgrounds: the photos in scikit-image's wheel (`skimage/data`: astronaut, coffee, chelsea,
rocket, ...; those with a shorter side below the config's `min_background_side` are left out,
as the pool step leaves them out) and three generated ones (a flat colour with a gradient and
mild grain, a sky-like gradient over noise, a two-tone split). Pair i: background i mod the
count, English for even i and Chinese for odd i, edits in turn (change, recolor, move, remove),
the default `RenderConfig` otherwise.

Reported: rendered pairs per second on one core (render only; render + `verify`, the OCR
read-back of source and target with the `ocr` operator's code path), rejections by reason,
the share of rendered pairs passing the read-back per language (targets: >= 95% English,
>= 90% Chinese) and per orientation, and each failure.

    .venv/bin/python benchmarks/pairs_render_bench.py [--n 200] [--seed 0] [--vertical-share 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from curation.steps.pairs.config import RENDER_EDITS, RenderConfig  # noqa: E402
from curation.steps.pairs.render import RenderedPair, render_pair, verify  # noqa: E402
from operators import ocr  # noqa: E402


def _generated(seed: int) -> list[tuple[str, Image.Image]]:
    """Three flat-ish backgrounds of 1024 x 768 px."""
    rng = np.random.default_rng(seed)
    h, w = 768, 1024
    ramp = np.linspace(0, 1, w)[None, :, None]
    flat = np.array([225, 215, 190]) - 30 * ramp + rng.normal(0, 3, (h, w, 3))
    sky = np.concatenate([np.array([70, 120, 200]) + 60 * np.linspace(0, 1, h // 2)[:, None, None] + 0 * ramp,
                          rng.uniform(0, 255, (h - h // 2, w, 3))], axis=0)
    split = np.where(ramp < 0.5, np.array([30, 40, 60]), np.array([240, 235, 220])) + rng.normal(0, 4, (h, w, 3))
    return [(name, Image.fromarray(a.clip(0, 255).astype(np.uint8)))
            for name, a in (("flat", flat), ("sky", sky), ("split", np.broadcast_to(split, (h, w, 3))))]


def backgrounds(cfg: RenderConfig, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """(name, image): scikit-image's photos with shorter side >= cfg.min_background_side, then
    the generated ones."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".png", ".jpg")):
            img = Image.open(os.path.join(folder, name))
            img.load()
            if min(img.size) >= cfg.min_background_side:
                photos.append((name, img))
    return photos + _generated(seed)


def run(n: int = 200, seed: int = 0, cfg: RenderConfig | None = None) -> dict:
    """Render n pairs (see the module) and read each back; the figures as a dict."""
    cfg = cfg or RenderConfig(seed=seed)
    bgs = backgrounds(cfg, seed)
    eng = ocr.engine()
    ocr.read_text(eng, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))  # load the models
    pairs, rejections = [], Counter()
    t0 = time.perf_counter()
    for i in range(n):
        name, bg = bgs[i % len(bgs)]
        out = render_pair(bg, i, cfg, ("en", "zh")[i % 2], RENDER_EDITS[(i // 2) % len(RENDER_EDITS)])
        if isinstance(out, RenderedPair):
            pairs.append((name, out))
        else:
            rejections[out.reason.split(":")[0]] += 1
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    failures = [(name, pair, verify(pair, eng, cfg.max_cer)) for name, pair in pairs]
    verify_s = time.perf_counter() - t0
    passed: dict[str, list[bool]] = defaultdict(list)
    for _, pair, reason in failures:
        for key in (pair.language, pair.params["orientation"], pair.params["edit"]):
            passed[key].append(reason is None)
    return {
        "attempts": n, "rendered": len(pairs), "backgrounds": len(bgs), "rejections": dict(rejections),
        "render_pairs_per_s": len(pairs) / render_s, "attempts_per_s": n / render_s,
        "render_verify_pairs_per_s": len(pairs) / (render_s + verify_s),
        "pass": {k: (sum(v) / len(v), len(v)) for k, v in sorted(passed.items())},
        "failures": [(name, pair.params["index"], pair.language, pair.params["orientation"], pair.params["font"],
                      pair.params["px"], pair.params["colour_name"], reason)
                     for name, pair, reason in failures if reason],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="pairs to attempt (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vertical-share", type=float, default=None,
                    help="share of Chinese texts drawn top-to-bottom (default: the config's)")
    args = ap.parse_args()
    cfg = RenderConfig(seed=args.seed)
    if args.vertical_share is not None:
        cfg.vertical_share = args.vertical_share
    r = run(args.n, args.seed, cfg)
    print(f"{r['attempts']} attempts on {r['backgrounds']} backgrounds: {r['rendered']} pairs, rejected: "
          f"{r['rejections'] or 'none'}")
    print(f"render only: {r['render_pairs_per_s']:.1f} pairs/s ({r['attempts_per_s']:.1f} attempts/s); "
          f"render + OCR verify: {r['render_verify_pairs_per_s']:.2f} pairs/s (one core)")
    targets = {"en": 0.95, "zh": 0.90}
    for key, (share, count) in r["pass"].items():
        goal = ""
        if key in targets:
            goal = f"  (target >= {targets[key]:.0%}: {'met' if share >= targets[key] else 'MISSED'})"
        print(f"OCR read-back {key:10s} {share:7.1%} of {count}{goal}")
    for name, index, language, orientation, font, px, colour, reason in r["failures"]:
        print(f"  fail #{index} {language} {orientation} {font} {px}px {colour} on {name}: {reason}")


if __name__ == "__main__":
    main()
