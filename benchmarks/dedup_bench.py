"""Semantic dedup benchmark: ours vs the exact threshold graph, same embeddings, one process.

    python benchmarks/dedup_bench.py [--sizes 100000 1000000] [--backend auto]

Generated 512-d L2-normalised embeddings: topic clusters (within-topic cosine ~0.35, far below
tau), planted near-duplicate groups (copies at cosine ~0.97) and chains (consecutive links at
~0.93, ends ~0.7, which connected components merge and Leiden splits).

- ours: k-NN graph (faiss) -> edges >= tau -> connected components -> Leiden per component;
- exact: faiss range_search at tau over an exact index, then connected components. Where the
  full exact run would exceed the time budget it is timed on a sample of queries and
  extrapolated (its cost is linear in the number of queries); the output says so, and the
  agreement metrics are then computed on the sampled queries' pairs;
- SD3's Algorithm 1 (k-means + per-cluster range_search, keep-first) at the smallest size;
- the scaling exponent of our time between the sizes, and peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import dedup_reference as ref  # noqa: E402
from curation.steps.vectors.dedup import DedupConfig, semantic_groups  # noqa: E402

TAU = 0.9


def make_embeddings(n: int, dim: int = 512, seed: int = 0, dup_frac: float = 0.1, chain_frac: float = 0.01):
    """(vectors float32 [n, dim], planted group label per row, bool mask of chain rows)."""
    rng = np.random.default_rng(seed)
    n_topics = max(64, n // 1000)
    topics = rng.standard_normal((n_topics, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    x = np.empty((n, dim), np.float32)
    truth = np.arange(n, dtype=np.int64)
    n_chain_items = int(n * chain_frac) // 6 * 6
    n_copies = int(n * dup_frac)
    n_base = n - n_copies - n_chain_items
    for start in range(0, n_base, 65536):
        m = min(65536, n_base - start)
        t = rng.integers(0, n_topics, m)
        v = topics[t] * 0.6 + rng.standard_normal((m, dim)).astype(np.float32) * (0.8 / math.sqrt(dim))
        x[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    # planted near-duplicate copies of random base items (groups of 2-5)
    orig = rng.integers(0, n_base, n_copies)
    noise = rng.standard_normal((n_copies, dim)).astype(np.float32) * (0.25 / math.sqrt(dim))
    v = x[orig] + noise
    x[n_base:n_base + n_copies] = v / np.linalg.norm(v, axis=1, keepdims=True)
    truth[n_base:n_base + n_copies] = orig
    # chains of 6: each link ~0.93, so end to end ~0.7
    pos = n_base + n_copies
    for _ in range(n_chain_items // 6):
        v = rng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        for j in range(6):
            x[pos + j] = v
            truth[pos + j] = pos
            v = v + rng.standard_normal(dim).astype(np.float32) * (0.39 / math.sqrt(dim))
            v /= np.linalg.norm(v)
        pos += 6
    chain = np.zeros(n, bool)
    chain[n_base + n_copies:pos] = True
    return x, truth, chain


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_size(n: int, args) -> dict:
    print(f"\n== N = {n:,} ({args.dim}-d) ==", flush=True)
    t0 = time.perf_counter()
    x, _, chain = make_embeddings(n, args.dim, seed=0)
    print(f"  generated in {time.perf_counter() - t0:.1f}s; peak RSS {peak_gib():.2f} GiB", flush=True)

    params = {k: float(v) if "." in v else int(v) for k, v in (p.split("=", 1) for p in args.knn_params)}
    cfg = DedupConfig(k=args.k, tau=TAU, levels=[], backend=args.backend, knn_params=params)
    t0 = time.perf_counter()
    result = semantic_groups(x, cfg)
    ours_s = time.perf_counter() - t0
    cc_ours = ref.components(n, result.src, result.dst)
    print(f"  ours: {ours_s:8.1f} s  ({n / ours_s:,.0f} items/s), {len(result.src):,} edges, "
          f"saturation {result.saturation:.4f}; peak RSS {peak_gib():.2f} GiB", flush=True)

    # exact threshold graph + connected components, sampled when it would take too long
    sample = min(n, args.exact_queries) if n > args.exact_full_max else n
    rows = np.arange(n) if sample == n else np.sort(np.random.default_rng(1).choice(n, sample, replace=False))
    t0 = time.perf_counter()
    src, dst = ref.exact_pairs(x, TAU, None if sample == n else rows)
    exact_s = (time.perf_counter() - t0) * (n / sample)
    if sample == n:
        t1 = time.perf_counter()
        exact = ref.components(n, src, dst)
        exact_s += time.perf_counter() - t1
        note = "full run"
    else:
        note = f"range_search timed on {sample:,} sampled queries and extrapolated x{n / sample:.0f}"
    print(f"  exact threshold graph + CC: {exact_s:8.1f} s  ({note})", flush=True)
    out = {"n": n, "ours_s": ours_s, "exact_s": exact_s, "speedup": exact_s / ours_s}

    if sample == n:
        for name, labels in (("ours (Leiden)", result.groups), ("ours (components stage)", cc_ours)):
            m = ref.pairwise_f1(labels, exact)
            print(f"  {name:<24} vs exact: pairwise P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f}, "
                  f"ARI {ref.adjusted_rand(labels, exact):.4f}, removed-set Jaccard "
                  f"{ref.jaccard(ref.removed_set(labels), ref.removed_set(exact)):.4f}")
        # Leiden is meant to split chains; away from the planted chains it should agree exactly.
        rest = ~chain
        m = ref.pairwise_f1(result.groups[rest], exact[rest])
        print(f"  ours (Leiden) vs exact on the {rest.sum():,} items outside planted chains: F1 {m['f1']:.4f}")
        out["f1_no_chains"] = m["f1"]
        out["f1"] = ref.pairwise_f1(result.groups, exact)["f1"]
        out["f1_cc"] = ref.pairwise_f1(cc_ours, exact)["f1"]
        print(f"  residual duplicate rate after ours: {ref.residual_duplicate_rate(x, result.groups, TAU):.5f}")
        if args.sd3:
            t0 = time.perf_counter()
            sd3 = ref.sd3_dedup(x, TAU, n_clusters=max(16, n // 1000))
            m = ref.pairwise_f1(sd3, exact)
            print(f"  SD3 Algorithm 1: {time.perf_counter() - t0:.1f}s, vs exact F1 {m['f1']:.4f}, "
                  f"residual duplicate rate {ref.residual_duplicate_rate(x, sd3, TAU):.5f}")
    else:
        # recall of the exact pairs among the sampled queries: is each found pair in one of our groups?
        same = result.groups[src] == result.groups[dst]
        same_cc = cc_ours[src] == cc_ours[dst]
        r = same_cc.mean() if len(src) else 1.0
        print(f"  pair recall on the sampled queries' {len(src):,} exact pairs: Leiden {same.mean():.4f}, "
              f"components stage {r:.4f} (pairwise F1 {2 * r / (1 + r):.4f} at precision 1, which our edges "
              f"have by construction: each is an exact similarity >= tau)")
        out["pair_recall"] = float(same_cc.mean()) if len(src) else 1.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--knn-params", nargs="*", default=[], metavar="NAME=VALUE",
                    help="k-NN backend parameters, e.g. ef_search=64 ef_construction=80")
    ap.add_argument("--exact-full-max", type=int, default=200_000, help="largest N run exactly in full")
    ap.add_argument("--exact-queries", type=int, default=20_000, help="sampled queries above that")
    ap.add_argument("--no-sd3", dest="sd3", action="store_false")
    args = ap.parse_args()
    results = [run_size(n, args) for n in args.sizes]
    print("\nsummary:")
    for r in results:
        print(f"  N={r['n']:>9,}: ours {r['ours_s']:8.1f}s, exact {r['exact_s']:9.1f}s -> {r['speedup']:6.1f}x faster"
              + (f", pairwise F1 vs exact: components stage {r['f1_cc']:.4f}, after Leiden {r['f1']:.4f} "
                 f"({r['f1_no_chains']:.4f} outside planted chains)" if "f1" in r else "")
              + (f", pair recall {r['pair_recall']:.4f}" if "pair_recall" in r else ""))
    if len(results) >= 2:
        a, b = results[0], results[-1]
        exponent = math.log(b["ours_s"] / a["ours_s"]) / math.log(b["n"] / a["n"])
        print(f"  scaling exponent of our time {a['n']:,} -> {b['n']:,}: {exponent:.2f} (target <= 1.2)")
    print(f"  peak memory (max RSS of this process): {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
