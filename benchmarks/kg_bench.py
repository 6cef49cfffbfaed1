"""Knowledge-graph benchmark: dumps -> graph -> PageRank -> pruning, PageRank vs networkx, BM25
weights vs rank-bm25. Each comparison runs ours and the baseline in this process on the same data.

    python benchmarks/kg_bench.py [--nodes 1000000 --edges 10000000] [--pr-nodes 100000]
                                  [--samples 1000000 --tags-per-sample 10 --vocab 50000]

1. A generated wiki (power-law links, redirects, links through redirects, other namespaces)
   written as gzipped SQL dumps in the current schema (page, redirect, linktarget, pagelinks);
   parse + build + PageRank + prune (rules + bottom 10% by PageRank) wall time, peak memory.
2. PageRank on a 100k-node generated wiki: ours (scipy power iteration, L1 tol 1e-9) vs
   `networkx.pagerank` as users call it (default tol 1e-6) on a prebuilt DiGraph; both bottom-10%
   sets against networkx run with tol 1e-12 (the reference). Ranks: ascending score rounded to
   9 significant digits (ties among link-less articles are float noise), ties by position.
3. BM25: 1M samples x ~10 tags (Zipf over the vocabulary). Ours: every (sample, tag) score
   from the tag column (fold + flatten + score). rank-bm25: `BM25Okapi` on the same folded tag
   lists, `get_scores([tag])` per distinct tag (the same per-tag scores), timed on sampled tags
   and extrapolated to the whole vocabulary (it is one pure-Python pass per tag); values
   compared with ours in rank-bm25's idf form ('okapi'), where the formulas coincide.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from graph.kg.bm25 import bm25_pairs, tag_occurrences  # noqa: E402
from graph.kg.pagerank import pagerank  # noqa: E402
from graph.kg.prune import PruneConfig, prune  # noqa: E402
from graph.kg.synth import write_sql_dumps  # noqa: E402
from graph.kg.wikipedia import build_from_sql  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_and_prune(n: int, m: int, tmp: Path) -> None:
    print(f"\n== 1. dumps -> graph -> PageRank -> prune: {n:,} articles, {m:,} links ==", flush=True)
    t0 = time.perf_counter()
    # written by a child process, so this process's peak memory is the build's alone
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = pool.submit(write_sql_dumps, tmp / "big", n, m, schema="linktarget", seed=0).result()
    size = sum(p.stat().st_size for p in paths.values()) / 2**20
    print(f"  wrote dumps in {time.perf_counter() - t0:.0f}s ({size:,.0f} MiB gzipped; not timed below)", flush=True)
    rss0 = peak_gib()
    t0 = time.perf_counter()
    kg = build_from_sql(paths["page"], paths["pagelinks"], redirect=paths["redirect"], linktarget=paths["linktarget"])
    t_parse = time.perf_counter() - t0
    t1 = time.perf_counter()
    pr = pagerank(kg.n, kg.link_src, kg.link_dst)
    t_pr = time.perf_counter() - t1
    kg.attrs["pagerank"] = pr.scores
    t1 = time.perf_counter()
    summary = prune(kg, PruneConfig(pagerank_percentile=10, rules=True), scores=pr.scores)
    t_prune = time.perf_counter() - t1
    total = time.perf_counter() - t0
    print(f"  graph: {kg.n:,} articles, {len(kg.link_src):,} links, {len(kg.alias_node):,} aliases")
    print(f"  parse + build {t_parse:.1f}s ({m / t_parse:,.0f} links/s), PageRank {t_pr:.1f}s "
          f"({pr.iterations} iterations, L1 change {pr.l1_change:.1e}), prune {t_prune:.1f}s")
    print(f"  total {total:.1f}s; dropped {summary['dropped']}; kept {summary['kept']:,}")
    print(f"  peak memory (max RSS): {peak_gib():.2f} GiB (before the build: "
          f"{rss0:.2f} GiB)", flush=True)


def bottom_set(scores: np.ndarray, frac: float = 0.1) -> set[int]:
    rounded = np.array([float(f"{s:.9g}") for s in scores])
    return set(np.argsort(rounded, kind="stable")[: int(len(scores) * frac)].tolist())


def pagerank_vs_networkx(n: int, tmp: Path) -> None:
    import networkx as nx

    print(f"\n== 2. PageRank vs networkx: {n:,} articles, {10 * n:,} links ==", flush=True)
    paths = write_sql_dumps(tmp / "pr", n, 10 * n, schema="legacy", seed=1)
    kg = build_from_sql(paths["page"], paths["pagelinks"], redirect=paths["redirect"])
    t0 = time.perf_counter()
    ours = pagerank(kg.n, kg.link_src, kg.link_dst, backend="scipy")
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = nx.DiGraph()
    g.add_nodes_from(range(kg.n))
    g.add_edges_from(zip(kg.link_src.tolist(), kg.link_dst.tolist()))
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    nx_default = nx.pagerank(g)
    t_nx = time.perf_counter() - t0
    reference = nx.pagerank(g, tol=1e-12, max_iter=1000)
    as_array = lambda d: np.array([d[i] for i in range(kg.n)])  # noqa: E731
    ref = as_array(reference)
    truth = bottom_set(ref)
    print(f"  ours (scipy, tol 1e-9): {t_ours:.2f}s, {ours.iterations} iterations; "
          f"networkx.pagerank (tol 1e-6): {t_nx:.2f}s (+ {t_graph:.1f}s building its DiGraph)")
    print(f"  speed: ours {t_nx / t_ours:.0f}x faster than networkx's pagerank call, "
          f"{(t_nx + t_graph) / t_ours:.0f}x counting its graph build")
    for name, scores in (("ours", ours.scores), ("networkx default", as_array(nx_default))):
        got = bottom_set(scores)
        print(f"  {name:<17} bottom-10% set vs reference: {len(got & truth) / len(truth):.4f} overlap "
              f"({'identical' if got == truth else f'{len(truth - got)} missing'}), "
              f"L1 error {np.abs(scores - ref).sum():.1e}", flush=True)


def bm25_vs_rank_bm25(n_docs: int, per_doc: int, vocab: int, sample_terms: int) -> None:
    from rank_bm25 import BM25Okapi

    print(f"\n== 3. BM25: {n_docs:,} samples x ~{per_doc} tags, vocabulary {vocab:,} (Zipf) ==", flush=True)
    rng = np.random.default_rng(2)
    names = np.array([f"tag {i}" for i in range(vocab)], dtype=object)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.05
    lengths = np.clip(rng.poisson(per_doc, n_docs), 1, None)
    flat = names[rng.choice(vocab, int(lengths.sum()), p=p / p.sum())]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tags = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.string()))
    t0 = time.perf_counter()
    occ = tag_occurrences(tags)
    lucene = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms, idf="lucene")
    t_ours = time.perf_counter() - t0
    okapi = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms, idf="okapi")
    print(f"  ours: {t_ours:.2f}s for {len(lucene.score):,} (sample, tag) scores, {occ.n_terms:,} distinct tags", flush=True)

    corpus = [occ.vocab[occ.term[offsets[i]:offsets[i + 1]]].tolist() for i in range(n_docs)]
    t0 = time.perf_counter()
    bm = BM25Okapi(corpus)
    t_init = time.perf_counter() - t0
    df = np.bincount(np.unique(occ.term * n_docs + occ.doc) // n_docs, minlength=occ.n_terms)
    # sample across the frequency range: the cost per tag is one pass over all samples regardless
    picks = np.unique(np.concatenate([np.argsort(-df)[:sample_terms // 2],
                                      rng.choice(occ.n_terms, sample_terms - sample_terms // 2, replace=False)]))
    worst = 0.0
    t0 = time.perf_counter()
    for t in picks:
        scores = bm.get_scores([occ.vocab[t]])
        mine = np.zeros(n_docs)
        sel = okapi.term == t
        mine[okapi.doc[sel]] = okapi.score[sel]
        worst = max(worst, float(np.abs(scores - mine).max()))
    per_term = (time.perf_counter() - t0) / len(picks)
    t_base = t_init + per_term * occ.n_terms
    print(f"  rank-bm25: index {t_init:.1f}s + get_scores {per_term * 1e3:.0f} ms per tag x {occ.n_terms:,} tags "
          f"= {t_base:,.0f}s (extrapolated from {len(picks)} tags)")
    print(f"  speed: ours {t_base / t_ours:,.0f}x faster; max |difference| vs rank-bm25 (okapi idf, "
          f"{len(picks)} tags, all samples): {worst:.1e}")
    print(f"  lucene idf min {lucene.idf[df > 0].min():.4f} (> 0 for every tag), okapi idf min "
          f"{okapi.idf[df > 0].min():.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--pr-nodes", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--tags-per-sample", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--sample-terms", type=int, default=20)
    ap.add_argument("--skip", nargs="*", default=[], choices=["build", "pagerank", "bm25"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kg_bench_") as tmp:
        if "build" not in args.skip:  # first: the peak memory printed after it is its own
            build_and_prune(args.nodes, args.edges, Path(tmp))
        if "pagerank" not in args.skip:
            pagerank_vs_networkx(args.pr_nodes, Path(tmp))
        if "bm25" not in args.skip:
            bm25_vs_rank_bm25(args.samples, args.tags_per_sample, args.vocab, args.sample_terms)


if __name__ == "__main__":
    main()
