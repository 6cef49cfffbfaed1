"""OCR: the `ocr` operator at reduced input sizes vs RapidOCR's default call on the full image.

Data: N rendered JPEGs with known text (`make_set`): photo-like backgrounds of 800-2000 px
(longer side), 1-3 lines each of English words / numbers or Simplified Chinese phrases in 6
faces (DejaVu Sans / Sans Bold / Serif / Mono, Noto Sans CJK SC / Mono SC), letters 1.8-7% of
the longer side, on a plate (a sign) or straight on the picture, turned up to 5 degrees, saved at
JPEG quality 50-95; 15% of the images carry no text (false readings are counted).

Quality: each drawn line is matched with the lines read whose box centre falls inside its box
(grown by half its height), concatenated left to right; whitespace is ignored (CJK lines come
back without spaces). CER = summed edit distance / summed characters of the truth; exact =
share of lines read exactly. Speed: images/s on one core (every engine has ONNX Runtime on one
thread), decode included (ours: the DCT-reduced decode the operator declares; the baseline:
the full decode), all in one process on the same images.

- `default`: `RapidOCR()(image)` on the full image, the library's default call: its detector
  scales the shorter side up to >= 736 px, runs the direction classifier, then recognition.
- `ours S`: the operator's path (`operators.ocr.read_text`): decode at longer side >= S,
  detect on the view of longer side S, recognise crops of the same view, no classifier;
  `ours full` uses the whole image.

    .venv/bin/python benchmarks/ocr_bench.py [--n 240] [--sizes 640,960,1280,0] [--seed 0]

The chosen size is the operator's `SIDE`; the printed ratio compares it with the default call
(target: >= 2x faster at <= 1 point more CER).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from curation.demo.images import photo_like  # noqa: E402
from curation.demo.text import RenderedLine, TextLine, draw_text, text_size  # noqa: E402
from operators import ocr  # noqa: E402
from operators.base import DecodeNeed  # noqa: E402
from operators.decode import open_item, plan_for  # noqa: E402

WORDS = ("coffee tea fresh daily market street hotel garden river station open closed sale new "
         "city park museum bakery noodles bridge north south east west welcome exit parking free "
         "summer winter festival music book store office bank school pharmacy taxi airport").split()
HAN = ["松鼠鳜鱼", "中文测试", "欢迎光临", "新鲜水果", "营业时间", "禁止吸烟", "北京烤鸭", "火车站",
       "出口", "停车场", "请勿拍照", "小心地滑", "超市", "书店", "咖啡馆", "牛肉面", "地铁站", "人民公园",
       "春节快乐", "今日特价", "免费无线网络", "安全出口", "外卖", "银行", "医院", "学校", "博物馆",
       "天气晴朗", "山水风景", "茶叶蛋", "饺子馆", "上海外滩", "长城", "西湖龙井", "热烈欢迎", "开业大吉"]
LATIN_FACES = ("sans", "sans-bold", "serif", "mono", "cjk-sans")
HAN_FACES = ("cjk-sans", "cjk-mono")
_ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)


@dataclass
class Sample:
    data: bytes  # the JPEG
    width: int
    height: int
    lines: list[RenderedLine]


def _latin(rng: np.random.Generator) -> str:
    words = [WORDS[int(rng.integers(len(WORDS)))] for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.3:
        words.append(str(int(rng.integers(1, 2030))))
    text = " ".join(words)
    style = rng.random()
    return text.upper() if style < 0.3 else text.title() if style < 0.6 else text


def _han(rng: np.random.Generator) -> str:
    text = HAN[int(rng.integers(len(HAN)))]
    if rng.random() < 0.3:
        text += HAN[int(rng.integers(len(HAN)))]
    return text


def make_sample(rng: np.random.Generator) -> Sample:
    aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    long = int(rng.integers(800, 2001))
    w, h = (long, round(long / aspect)) if rng.random() < 0.7 else (round(long / aspect), long)
    img = photo_like(rng, w, h)
    specs = []
    if rng.random() >= 0.15:
        han = rng.random() < 0.45
        taken: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(1, 4))):
            text = _han(rng) if han else _latin(rng)
            faces = HAN_FACES if han else LATIN_FACES
            face = faces[int(rng.integers(len(faces)))]
            px = max(12, round(float(rng.uniform(0.018, 0.07)) * long))
            tw, th = text_size(text, face, px)
            if tw > 0.9 * w:
                px = max(12, int(px * 0.9 * w / tw))
                tw, th = text_size(text, face, px)
            for _ in range(30):  # a free spot (envelopes apart by half a line)
                x, y = float(rng.uniform(0.03 * w, w - tw - 0.03 * w)), float(rng.uniform(0.03 * h, h - 1.6 * th))
                m = 0.5 * th + 0.1 * tw
                if all(x + tw + m < a or b + m < x or y + th + m < c or d + m < y for a, c, b, d in taken):
                    taken.append((x, y, x + tw, y + th))
                    break
            else:
                continue
            region = np.asarray(img.crop((int(x), int(y), int(x + tw), int(y + th))).convert("L"), np.float32)
            plate = tuple(int(v) for v in rng.integers(215, 256, 3)) if rng.random() < 0.5 else None
            dark = plate is not None or region.mean() > 128
            ink = tuple(int(v) for v in (rng.integers(0, 50, 3) if dark else rng.integers(215, 256, 3)))
            specs.append(TextLine(text, face, px, (x, y), float(rng.uniform(-5, 5)), ink, plate))
    img, lines = draw_text(img, specs)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(50, 96)))
    return Sample(buf.getvalue(), w, h, lines)


def make_set(n: int, seed: int = 0) -> list[Sample]:
    return [make_sample(np.random.default_rng([seed, i])) for i in range(n)]


# ---- scoring -----------------------------------------------------------------------------------

def _norm(s: str) -> str:
    return "".join(s.split())


SMALL = 0.025  # a line whose ink is less high than this share of the image's longer side is small text


def _small(sample: Sample, line: RenderedLine) -> bool:
    box = np.array(line.box).reshape(4, 2)
    return np.linalg.norm(box[3] - box[0]) < SMALL * max(sample.width, sample.height)


def score(sample: Sample, read: list[tuple[str, np.ndarray]], only_small: bool = False) -> tuple[int, int, int, int, int]:
    """(edit distance, truth chars, lines exact, lines, lines read on a no-text image) for one
    image; `read` = [(text, box [4, 2] in original px)]; `only_small`: score small lines only."""
    if not sample.lines:
        return 0, 0, 0, 0, len(read)
    centres = [(t, b.reshape(4, 2).mean(axis=0)) for t, b in read]
    dist = chars = exact = 0
    for line in sample.lines:
        if only_small and not _small(sample, line):
            continue
        x0, y0, x1, y1 = line.envelope()
        m = 0.5 * (y1 - y0) / 2
        inside = sorted(((c[0], t) for t, c in centres if x0 - m <= c[0] <= x1 + m and y0 - m <= c[1] <= y1 + m))
        got, want = _norm("".join(t for _, t in inside)), _norm(line.text)
        d = ocr.edit_distance(got, want)
        dist, chars, exact = dist + d, chars + len(want), exact + (got == want)
    return dist, chars, exact, len(sample.lines), 0


# ---- runners -----------------------------------------------------------------------------------

def run_default(samples: list[Sample]):
    from rapidocr import RapidOCR

    eng = RapidOCR(params={"Global.log_level": "error", "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                           "EngineConfig.onnxruntime.inter_op_num_threads": 1})
    out = []
    eng(np.zeros((64, 64, 3), np.uint8))  # models load lazily: not timed
    eng(np.asarray(photo_like(np.random.default_rng(9), 400, 300))[:, :, ::-1].copy())
    t0 = time.perf_counter()
    for s in samples:
        bgr = np.asarray(Image.open(io.BytesIO(s.data)).convert("RGB"))[:, :, ::-1].copy()
        r = eng(bgr)
        boxes = [] if r.boxes is None or r.txts is None else list(r.boxes)
        out.append([(t, np.asarray(b, np.float32)) for t, b in zip(r.txts or (), boxes)])
    return time.perf_counter() - t0, out


def run_ours(samples: list[Sample], side: int, rec_side: int | None = None):
    """Detect at longer side `side`, recognise crops of the view at `rec_side` (default: the
    same view); 0: the whole image."""
    big = 1 << 16
    rec_side = side if rec_side is None else rec_side
    eng = ocr.engine(det_side=side or big)
    need = max(side or big, rec_side or big)
    plan = plan_for([DecodeNeed("rgb", min_long_side=need, max_reduction=8 if need < big else 1)])
    ocr.read_text(eng, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
    out = []
    t0 = time.perf_counter()
    for s in samples:
        item = open_item(s.data, plan)
        v = item.rgb(side or None)
        r = v if rec_side == side else item.rgb(rec_side or None)
        boxes, read = ocr.read_text(eng, v, r)
        scale = np.array([item.header.width / r.shape[1], item.header.height / r.shape[0]], np.float32)
        out.append([(t, b * scale) for b, (t, _) in zip(boxes, read)])
    return time.perf_counter() - t0, out


def summarise(name: str, samples: list[Sample], seconds: float, reads) -> dict:
    tot = np.sum([score(s, r) for s, r in zip(samples, reads)], axis=0)
    dist, chars, exact, lines, fp = (int(v) for v in tot)
    by = {}
    for kind in ("latin", "han"):
        sel = [(s, r) for s, r in zip(samples, reads) if s.lines and (ocr.script_of(s.lines[0].text) == kind)]
        t = np.sum([score(s, r) for s, r in sel], axis=0)
        by[kind] = 100 * t[0] / max(1, t[1])
    small = np.sum([score(s, r, only_small=True) for s, r in zip(samples, reads)], axis=0)
    fp_images = sum(1 for s, r in zip(samples, reads) if not s.lines and r)
    return {"name": name, "cer": 100 * dist / chars, "exact": 100 * exact / lines, "ips": len(samples) / seconds,
            "fp_lines": fp, "fp_images": fp_images, "cer_latin": by["latin"], "cer_han": by["han"],
            "cer_small": 100 * small[0] / max(1, small[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="images (default 240)")
    ap.add_argument("--sizes", default="640,800,960,1280,0",
                    help="longer sides for ours (0 = the whole image); DET/REC detects at DET and cuts lines "
                         "for recognition from the view at REC")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-default", action="store_true", help="skip the library's default call")
    args = ap.parse_args()

    t0 = time.perf_counter()
    samples = make_set(args.n, args.seed)
    n_lines = sum(len(s.lines) for s in samples)
    n_han = sum(1 for s in samples if s.lines and ocr.script_of(s.lines[0].text) == "han")
    print(f"{len(samples)} images ({sum(1 for s in samples if not s.lines)} without text, {n_han} Chinese), "
          f"{n_lines} lines, made in {time.perf_counter() - t0:.1f}s")
    rows = []
    if not args.no_default:
        rows.append(summarise("default (full image)", samples, *run_default(samples)))
    for spec in [v.strip() for v in args.sizes.split(",") if v.strip()]:
        det, _, rec = spec.partition("/")
        name = "/".join(v if v != "0" else "full" for v in spec.split("/"))
        rows.append(summarise(f"ours {name}", samples, *run_ours(samples, int(det), int(rec) if rec else None)))
    n_small = sum(_small(s, line) for s in samples for line in s.lines)
    n_blank = sum(1 for s in samples if not s.lines)
    print(f"\nCER % over all lines, Latin / Chinese lines, small lines ({n_small} with ink < {SMALL:.1%} of the longer "
          f"side); exact % of lines; false: lines read on the {n_blank} images without text (images)")
    print(f"{'':22s} {'CER %':>6s} {'latin':>6s} {'han':>6s} {'small':>6s} {'exact %':>8s} {'img/s/core':>10s} {'false':>9s}")
    for r in rows:
        print(f"{r['name']:22s} {r['cer']:6.2f} {r['cer_latin']:6.2f} {r['cer_han']:6.2f} {r['cer_small']:6.2f} "
              f"{r['exact']:8.1f} {r['ips']:10.2f} {r['fp_lines']:4d} ({r['fp_images']})")
    chosen = next((r for r in rows if r["name"] == f"ours {ocr.SIDE}"), None)
    if rows and not args.no_default and chosen:
        base = rows[0]
        print(f"\nours {ocr.SIDE} (the operator's size) vs default: {chosen['ips'] / base['ips']:.2f}x images/s, "
              f"CER {chosen['cer'] - base['cer']:+.2f} points, exact {chosen['exact'] - base['exact']:+.1f} points")


if __name__ == "__main__":
    main()
