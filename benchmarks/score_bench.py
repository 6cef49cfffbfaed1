"""Model-scoring benchmark: shared forward vs the per-operator way, same images, one process.

    python benchmarks/score_bench.py [--n 256] [--model ViT-B-16] [--batch 64]

A ViT-B/16-sized open_clip model with random weights, the aesthetic / NSFW / AIGC heads and
caption alignment:

1. ours (decode once, resize/crop, ONE batched forward per image shared by every head, batched
   caption embedding) vs the per-operator way the peers use (each head and the alignment filter
   loads its own model, decodes the image itself and runs one sample at a time): target >= 3x
   images/s on CPU;
2. ours with one head vs with three heads: extra heads cost <= 10%;
3. on a GPU (when present): images/s with fp16 at batch >= 256 (run with --model ViT-L-14-quickgelu
   --batch 256 on the GPU machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from curation.steps.profiling.score import ScoreConfig, Scorer, prepare_batch  # noqa: E402
from operators.models.encoders import EncoderConfig, image_geometry, load_encoder  # noqa: E402
from operators.models.heads import HeadConfig, load_head  # noqa: E402

HEADS = ["aesthetic", "nsfw", "aigc"]
CAPTION = "a photo of a red car parked on the grass"


def images(workdir: Path, n: int) -> list[Path]:
    from curation.demo import write_jpegs

    out = workdir / f"score-jpegs-{n}"
    files = sorted(out.glob("*.jpg")) if out.exists() else []
    if len(files) != n:
        files = sorted(write_jpegs(out, n, megapixels=(0.3, 0.8), seed=1))
    return files


def config(model: str, heads: list[str], batch: int) -> ScoreConfig:
    enc = EncoderConfig(name="clip", model=model, random=True)
    return ScoreConfig(encoders=[enc], heads=[HeadConfig(name=h, kind=h, encoder="clip", random=True, seed=i)
                                              for i, h in enumerate(heads)],
                       alignment_encoder="clip", batch_size=batch, torch_threads=torch.get_num_threads())


def ours(files: list[Path], cfg: ScoreConfig, scorer: Scorer) -> int:
    pool = pa.table({"id": [f.name for f in files], "uri": [str(f) for f in files],
                     "caption": [CAPTION] * len(files)})
    preps = {e.name: image_geometry(e) for e in cfg.encoders}
    rows = 0
    for start in range(0, len(files), cfg.batch_size):
        batch = prepare_batch(pool.slice(start, cfg.batch_size), preps, cfg.caption_fields, cfg.max_pixels)
        rows += scorer(batch).num_rows
    return rows


def per_operator(files: list[Path], model: str) -> int:
    """Each filter is its own operator: own model, own decode, one image at a time."""
    import open_clip

    scored = 0
    for i, op in enumerate(HEADS + ["alignment"]):
        enc = load_encoder(EncoderConfig(name=op, model=model, random=True))
        _, _, transform = open_clip.create_model_and_transforms(model, pretrained=None)  # the op's own preprocess
        head = load_head(HeadConfig(name=op, kind=op, encoder=op, random=True, seed=i), enc.embed_dim) if op in HEADS else None
        for f in files:
            with torch.inference_mode():
                pixels = transform(Image.open(f).convert("RGB"))[None]
                feats = enc.model.encode_image(pixels)
                if head is not None:
                    head(feats / feats.norm(dim=-1, keepdim=True) if head.input == "normalized" else feats)
                else:
                    text = enc.model.encode_text(enc.tokenizer([CAPTION]))
                    torch.nn.functional.cosine_similarity(feats, text)
            scored += 1
    return scored // 4


def timed(label: str, fn, n: int, results: dict) -> None:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    results[label] = n / dt
    print(f"  {label:<40} {dt:7.1f} s  {n / dt:8.1f} img/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--baseline-n", type=int, default=64, help="images for the (slow) per-operator way")
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "score-bench"))
    args = ap.parse_args()
    files = images(Path(args.workdir), args.n)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{len(files)} JPEGs of 0.3-0.8 MP, {args.model} (random weights), {device}, "
          f"{torch.get_num_threads()} torch threads, batch {args.batch}")
    r: dict[str, float] = {}
    three = config(args.model, HEADS, args.batch)
    one = config(args.model, HEADS[:1], args.batch)
    scorer3, scorer1 = Scorer(three), Scorer(one)
    ours(files[: args.batch], three, scorer3)  # warm-up: allocator, kernels, page cache
    ours(files[: args.batch], one, scorer1)
    timed("ours, 3 heads + alignment", lambda: ours(files, three, scorer3), len(files), r)
    timed("ours, 1 head + alignment", lambda: ours(files, one, scorer1), len(files), r)
    if device == "cpu":
        sub = files[: args.baseline_n]
        timed(f"per-operator way ({len(sub)} images)", lambda: per_operator(sub, args.model), len(sub), r)
        print("\nratios (same images, same process):")
        print(f"  ours / per-operator way           {r['ours, 3 heads + alignment'] / r[f'per-operator way ({len(sub)} images)']:6.2f}x   (target >= 3)")
    else:
        torch.cuda.synchronize()
    cost = r["ours, 1 head + alignment"] / r["ours, 3 heads + alignment"] - 1
    print(f"  extra cost of heads 2 and 3       {100 * cost:6.1f} %   (target <= 10 %)")


if __name__ == "__main__":
    main()
