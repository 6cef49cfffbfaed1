"""Staged sampling benchmark: balance, draw, batch plans and the loader, one process.

    python benchmarks/sampling_bench.py [--items 1000000] [--concepts 10000] [--sft-size 100000]
                                        [--loader-images 1000] [--workers 1]

The pool: `items` manifest rows with a Zipf concept distribution (exponent 1.1 over `concepts`
concepts; each item holds a primary concept and 0-2 more, also Zipf), BM25-like rarity
(Σ idf of its concepts), a quality score, captions of 5-80 words, and a realistic resolution
mix (aspect log-uniform in 1/3..3, 0.2..2.5 MP uniform). Everything runs through the same
`draw_stage` a `curate sample` runs (the draw on Ray Data), without the lake I/O.

Figures:
1. padding waste of our batch plans vs random fixed-size batches (32) over the same items and
   sequence lengths (image + caption tokens, padded to 32), and the share of the token budget
   used; for lowres (256² buckets), sft (1024² buckets) and omni (resolution mapping, mixed
   shapes). Target: ≤ 2% waste with ≥ 90% of the budget used.
2. SFT `uniform`: normalised entropy of the concept marginal of the sample (≥ 0.98 target) and
   of the unbalanced pool.
3. throughput: `draw_stage` (balance + A-ES draw on Ray Data + captions + plan) over the whole
   pool, rows/s; the draw alone vs numpy's `Generator.choice(replace=False, p=w)` (the baseline).
4. the loader: images/s per worker of `curation.feed.StageBatches` vs a plain DataLoader over the
   same JPEGs with fixed batches (benchmarks/feed_bench.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from curation.config.typed import from_dict  # noqa: E402
from curation.steps.export.export import StageConfig  # noqa: E402
from curation.steps.sampling.draw import draw  # noqa: E402
from curation.steps.sampling.plan import padding_stats  # noqa: E402
from curation.steps.sampling.sample import draw_stage  # noqa: E402

WORDS = np.array("a the red blue small large cat dog car tree city street night sunset portrait photo painting "
                 "sketch of on in with under near old new bright dark wooden glass river mountain".split())
TEXT = {"mode": "estimate", "max_tokens": 512}
STAGES = {
    "lowres": {"buckets": {"resolution": 256, "step": 32, "max_aspect": 4.0}, "balance": {"mode": "weight"},
               "batches": {"token_budget": 65536, "text_tokens": TEXT}},
    "sft": {"buckets": {"resolution": 1024, "step": 64, "max_aspect": 3.0},
            "balance": {"mode": "uniform", "quality": "aesthetic"},
            "batches": {"token_budget": 65536, "text_tokens": TEXT}},
    "omni": {"resolution": {"min_long": 512, "max_long": 1536, "max_aspect": 3.0}, "balance": {"mode": "cap", "cap": 200},
             "batches": {"token_budget": 65536, "same_shape": False, "text_tokens": TEXT}},
}


def make_pool(n: int, k: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, k + 1)
    p = ranks ** -1.1
    p /= p.sum()
    extra = rng.integers(0, 3, n)
    lists = rng.choice(k, size=(n, 3), p=p)
    lengths = 1 + extra
    flat = np.concatenate([lists[lengths > j, j] for j in range(3)])  # column-major; reorder below
    item = np.concatenate([np.flatnonzero(lengths > j) for j in range(3)])
    order = np.lexsort((np.arange(len(item)), item))
    flat, item = flat[order], item[order]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    concepts = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.int64)))
    n_c = np.bincount(flat, minlength=k)
    idf = np.log(n / np.maximum(n_c, 1))
    bm25 = np.bincount(item, weights=idf[flat], minlength=n)
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))
    mp = rng.uniform(0.2e6, 2.5e6, n)
    width = np.sqrt(mp * aspect).astype(np.int64)
    height = np.maximum((mp / width).astype(np.int64), 1)
    words = rng.integers(5, 81, n)
    vocab = rng.integers(0, len(WORDS), (n, 8))
    captions = [" ".join(WORDS[vocab[i]]) * (int(words[i]) // 8 + 1) for i in range(n)]
    ids = pa.array([f"{x:016x}" * 4 for x in rng.integers(0, 2**63 - 1, n, dtype=np.int64)])
    return pa.table({"id": ids, "kind": pa.array(["t2i"] * n), "width": width, "height": height,
                     "concepts": concepts, "bm25": bm25, "weight": np.clip(bm25 / bm25.mean(), 0.05, 20),
                     "aesthetic": rng.uniform(3, 7, n), "caption": pa.array(captions)})


def with_sizes(pool: pa.Table, stage: StageConfig) -> pa.Table:
    bh, bw = stage.training_size(pool["height"].to_numpy(), pool["width"].to_numpy())
    return pool.append_column("bucket_height", pa.array(bh.astype(np.int32))).append_column(
        "bucket_width", pa.array(bw.astype(np.int32)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--concepts", type=int, default=10_000)
    ap.add_argument("--sft-size", type=int, default=100_000)
    ap.add_argument("--loader-images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.data.range(4, override_num_blocks=2).materialize()  # start the workers outside the timings
    t0 = time.perf_counter()
    pool = make_pool(args.items, args.concepts)
    print(f"pool: {args.items:,} items, {args.concepts:,} concepts (Zipf 1.1), made in {time.perf_counter() - t0:.1f}s")

    print("\n1. batch plans: padding waste (ours vs random fixed batches of 32), token budget used")
    results = {}
    for name, spec in STAGES.items():
        stage = from_dict(StageConfig, spec)
        rows = with_sizes(pool, stage)
        size = args.sft_size if name == "sft" else None
        t0 = time.perf_counter()
        result = draw_stage(rows, name, stage, size=size)
        secs = time.perf_counter() - t0
        results[name] = (result, secs)
        s = result.samples
        seq = s["seq_len"].to_numpy()
        ours = result.report["batches"]
        rand = padding_stats(seq, np.random.default_rng(1).permutation(len(seq)) // 32)
        print(f"  {name:6s} {s.num_rows:>9,} items: ours {100 * ours['padding_waste']:.2f}% waste, "
              f"{100 * ours['budget_used']:.1f}% budget used, batch {ours['min_batch_size']}-{ours['max_batch_size']} "
              f"(mean {ours['mean_batch_size']}); random-32 {100 * rand['padding_waste']:.1f}% waste; "
              f"waste ratio ours/random {ours['padding_waste'] / rand['padding_waste']:.3f}")

    print("\n2. SFT uniform balancing: concept marginal")
    bal = results["sft"][0].report["balance"]
    print(f"  pool   : normalised entropy {bal['before']['normalised_entropy']:.4f}, top-10 share "
          f"{bal['before']['top_k_share']:.3f}, {bal['before']['concepts_covered']:,} concepts")
    print(f"  sample : normalised entropy {bal['after']['normalised_entropy']:.4f}, top-10 share "
          f"{bal['after']['top_k_share']:.3f}, {bal['after']['concepts_covered']:,} concepts "
          f"({args.sft_size:,} items drawn)")
    print(f"  ratio sample / pool entropy: {bal['after']['normalised_entropy'] / bal['before']['normalised_entropy']:.3f}")

    print("\n3. throughput (whole draw_stage: balance, Ray Data draw, captions, plan)")
    for name, (result, secs) in results.items():
        print(f"  {name:6s}: {args.items / secs:>12,.0f} pool rows/s ({secs:.1f}s, {result.samples.num_rows:,} drawn)")
    w = np.random.default_rng(2).uniform(0, 1, args.items) ** 2
    table = pa.table({"id": pool["id"], "source": pa.array(np.zeros(args.items, np.int32)), "weight": w})
    k = args.sft_size
    t0 = time.perf_counter()
    draw(table, {0: k}, "bench", use_ray=True)
    ray_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    draw(table, {0: k}, "bench", use_ray=False)
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.random.default_rng(0).choice(args.items, size=k, replace=False, p=w / w.sum())
    numpy_s = time.perf_counter() - t0
    print(f"  draw {k:,} of {args.items:,} by weight: A-ES on Ray Data {args.items / ray_s:,.0f} rows/s, "
          f"A-ES in process {args.items / local_s:,.0f} rows/s, numpy choice(replace=False, p) "
          f"{args.items / numpy_s:,.0f} rows/s; ratio Ray/numpy {numpy_s / ray_s:.2f}x, in-process/numpy "
          f"{numpy_s / local_s:.2f}x")
    ray.shutdown()

    if args.loader_images:
        from benchmarks.feed_bench import run

        print(f"\n4. loader: {args.loader_images} JPEGs, {args.workers} worker(s)")
        with tempfile.TemporaryDirectory() as tmp:
            r = run(args.loader_images, args.workers, tmp)
        per = max(args.workers, 1)
        print(f"  ours {r['ours_images_s'] / per:.1f} images/s per worker, plain DataLoader (fixed batches of 32) "
              f"{r['baseline_images_s'] / per:.1f}; ratio {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
