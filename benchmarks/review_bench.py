"""Active-curation benchmarks, one process. Part 1: hard-case mining (`bench_mining`).

    python benchmarks/review_bench.py [--items 1000000] [--queries 1000] [--dim 512]

Part 1 times the path `curation.steps.review.hardcases.mine` takes after embedding the
queries: ONE batched search of the index plus the vectorised grouping of the hits by
community (`search_and_group`, the very function `mine` calls), on synthetic embeddings:

- items: L2-normalised float32 rows of `dim` = 512 (the width of CLIP ViT-B/32 embeddings, a
  production encoder; the demo's tiny random encoder is 64-d and would flatter the search 8x),
  clustered as topics (200 items each) split into communities of 10 (a topic direction +
  0.7 x a community direction + 0.5 x noise: items of a community ~0.86 cosine, of a topic
  ~0.57, others ~0); community ids are their first member's id, as `dedup` writes them.
- queries: a random topic + a fresh community direction + noise, so a query's hits spread
  over about 20 communities of its topic (cosine ~0.57 > min_similarity 0.25).
- the index: what `VectorSearch.open` builds for n items on CPU (`choose_backend(n, gpu=False)`:
  faiss IVF at 1M), built once and not timed (a mining run builds it once too).

Baselines, same process, same index and data:
- per query: one `index.search` per query and a Python dict grouping per query (the loop
  `prune()` ran): the ratio is what batching and array grouping buy; `group_communities`
  over the same search results is checked to give identical output;
- exact numpy: a brute-force `vectors @ q` per query plus the same Python grouping, on
  `baseline_queries` queries (each scans all n x dim floats).
Recall@k of the index against exact numpy search, over `recall_queries` queries, and the share
of the exact hits' communities the index's hits reach (what mining reports and prunes); for
faiss IVF, the same figures and the speed at nprobe 4 (default), 8 and 16.
Target: >= 200 queries/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from curation.steps.review.hardcases import CommunityIndex, group_communities, search_and_group  # noqa: E402
from graph.knn import KnnResult, choose_backend, make_index, recall_at_k  # noqa: E402

TOPIC_SIZE = 200       # items per topic
COMMUNITY_SIZE = 10    # items per community (a topic holds 20)
_BLOCK = 65_536        # rows generated / scanned per block (bounds temporaries)
NPROBE_SWEEP = (4, 8, 16)  # IVF lists probed per query, reported when the index is faiss-ivf


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_embeddings(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items float32 (n, dim), queries float32 (n_queries, dim), community int64 (n,): each
    item's community number); rows are unit vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_topics = max(1, n // TOPIC_SIZE)
    n_comm = max(1, n // COMMUNITY_SIZE)
    scale = np.float32(1 / np.sqrt(dim))  # a standard normal row * scale has norm ~1
    topics = _unit(rng.standard_normal((n_topics, dim), dtype=np.float32))
    directions = _unit(rng.standard_normal((n_comm, dim), dtype=np.float32))
    community = np.arange(n) // COMMUNITY_SIZE % n_comm
    topic = community // (TOPIC_SIZE // COMMUNITY_SIZE) % n_topics
    items = np.empty((n, dim), np.float32)
    for start in range(0, n, _BLOCK):
        end = min(start + _BLOCK, n)
        noise = rng.standard_normal((end - start, dim), dtype=np.float32) * scale
        items[start:end] = _unit(topics[topic[start:end]] + 0.7 * directions[community[start:end]] + 0.5 * noise)
    q_topic = rng.integers(0, n_topics, n_queries)
    fresh = _unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    noise = rng.standard_normal((n_queries, dim), dtype=np.float32) * scale
    queries = _unit(topics[q_topic] + 0.7 * fresh + 0.5 * noise).astype(np.float32)
    return items, queries, community


def exact_search(items: np.ndarray, queries: np.ndarray, k: int) -> KnnResult:
    """Exact top-k by inner product with numpy, items scanned in blocks (the recall reference)."""
    best_ids = np.full((len(queries), 0), -1, np.int64)
    best_sims = np.full((len(queries), 0), -np.inf, np.float32)
    for start in range(0, len(items), _BLOCK):
        sims = queries @ items[start:start + _BLOCK].T
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_ids = np.hstack([best_ids, top + start])
        best_sims = np.hstack([best_sims, np.take_along_axis(sims, top, axis=1)])
    order = np.argsort(-best_sims, axis=1, kind="stable")[:, :k]
    return KnnResult(np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_sims, order, axis=1))


def python_group(rows, sims, community_of: list[int], communities: CommunityIndex, ids: np.ndarray,
                 samples: int, min_similarity: float) -> str:
    """One query's hit communities with a dict, hit by hit: the per-query baseline (same
    output as `group_communities`)."""
    groups: dict[int, list] = {}
    for r, s in zip(rows, sims):
        if r < 0 or s < min_similarity:
            continue
        c = community_of[r]
        if c < 0:
            continue
        g = groups.setdefault(c, [0, 0.0, float(s), []])
        g[0] += 1
        g[1] += float(s)
        if len(g[3]) < samples:
            g[3].append(ids[r])
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1][0], -kv[1][2], kv[0]))
    return json.dumps([{"community": communities.names[c], "level": communities.level, "size": int(communities.size[c]),
                        "hits": g[0], "mean_similarity": round(g[1] / g[0], 4), "max_similarity": round(g[2], 4),
                        "sample_ids": g[3]} for c, g in ordered], ensure_ascii=False)


def bench_mining(n_items: int = 1_000_000, n_queries: int = 1000, dim: int = 512, k: int = 50, samples: int = 6,
                 min_similarity: float = 0.25, baseline_queries: int = 20, recall_queries: int = 200,
                 seed: int = 0) -> dict:
    """Queries/s of hard-case mining's search + community grouping vs its baselines, and the
    index's recall@k (see the module docstring). Returns the figures (seconds, queries/s)."""
    t0 = time.perf_counter()
    items, queries, community = make_embeddings(n_items, n_queries, dim, seed)
    ids = np.array([f"{i:064x}" for i in range(n_items)], dtype=object)
    names = ids[np.arange(n_items) // COMMUNITY_SIZE * COMMUNITY_SIZE]  # a community's id: its first member's
    communities = CommunityIndex.from_columns(0, ids, ids, names)
    made = time.perf_counter() - t0

    backend = choose_backend(n_items, gpu=False)
    t0 = time.perf_counter()
    index = make_index(backend)
    index.add(items)
    built = time.perf_counter() - t0

    t0 = time.perf_counter()
    mined = search_and_group(index, ids, queries, communities, k=k, min_similarity=min_similarity, samples=samples)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(queries, k)
    search_only = time.perf_counter() - t0

    community_of = communities.code.tolist()
    t0 = time.perf_counter()
    per_query, results = [], []
    for q in queries:
        res = index.search(q[None], k)
        per_query.append(python_group(res.ids[0].tolist(), res.sims[0].tolist(), community_of, communities, ids,
                                      samples, min_similarity))
        results.append(res)
    looped = time.perf_counter() - t0
    # The vectorised grouping of the same search results must give the same JSON (the batched
    # search itself may differ from single-query searches in the last float bit: BLAS).
    same_ids = np.vstack([res.ids for res in results])
    same_sims = np.vstack([res.sims for res in results])
    keep = (same_ids >= 0) & (same_sims >= min_similarity)
    identical = per_query == group_communities(np.r_[0, np.cumsum(keep.sum(axis=1))], same_ids[keep],
                                               same_sims[keep], communities, ids, samples)

    m = min(baseline_queries, n_queries)
    t0 = time.perf_counter()
    for q in queries[:m]:
        sims = items @ q
        top = np.argpartition(-sims, k)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        python_group(top.tolist(), sims[top].tolist(), community_of, communities, ids, samples, min_similarity)
    exact_numpy = time.perf_counter() - t0

    r = min(recall_queries, n_queries)
    exact = exact_search(items, queries[:r], k)
    approx = index.search(queries[:r], k)
    hits = np.diff(mined.offsets)
    n_groups = [len(json.loads(text)) for text in mined.communities]
    out = {
        "items": n_items, "queries": n_queries, "dim": dim, "k": k, "backend": backend,
        "index_params": index.params, "data_s": round(made, 1), "build_s": round(built, 1),
        "batched_s": round(batched, 3), "search_s": round(search_only, 3),
        "batched_qps": n_queries / batched, "per_query_qps": n_queries / looped,
        "exact_numpy_qps": m / exact_numpy, "identical_to_per_query": identical,
        "recall": recall_at_k(approx, exact, k), "community_recall": community_recall(approx, exact, communities,
                                                                                     min_similarity),
        "recall_queries": r, "hits_per_query": float(hits.mean()), "communities_per_query": float(np.mean(n_groups)),
    }
    if backend == "faiss-ivf":  # the recall / speed knob of the CPU index: lists probed per query
        out["nprobe"] = {}
        default = index.nprobe
        for nprobe in NPROBE_SWEEP:
            index.nprobe = nprobe
            t0 = time.perf_counter()
            search_and_group(index, ids, queries, communities, k=k, min_similarity=min_similarity, samples=samples)
            qps = n_queries / (time.perf_counter() - t0)
            approx = index.search(queries[:r], k)
            out["nprobe"][nprobe] = {"qps": qps, "recall": recall_at_k(approx, exact, k),
                                     "community_recall": community_recall(approx, exact, communities, min_similarity)}
        index.nprobe = default
    return out


def community_recall(approx: KnnResult, exact: KnnResult, communities: CommunityIndex, min_similarity: float) -> float:
    """Fraction of the communities the exact hits (cosine >= min_similarity) fall in that the
    approximate hits reach too, over all queries: what mining reports and prunes."""
    found = total = 0
    for a_ids, a_sims, e_ids, e_sims in zip(approx.ids, approx.sims, exact.ids, exact.sims):
        want = set(communities.code[e_ids[(e_ids >= 0) & (e_sims >= min_similarity)]].tolist()) - {-1}
        got = set(communities.code[a_ids[(a_ids >= 0) & (a_sims >= min_similarity)]].tolist())
        found += len(want & got)
        total += len(want)
    return 1.0 if total == 0 else found / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    r = bench_mining(args.items, args.queries, args.dim)
    print(f"hard-case mining: {r['items']:,} items x {r['dim']}-d, {r['queries']} queries, k={r['k']}, "
          f"index {r['backend']} {r['index_params']} (data {r['data_s']} s, build {r['build_s']} s, not timed)")
    print(f"  hits/query {r['hits_per_query']:.1f}, communities/query {r['communities_per_query']:.1f}")
    print(f"  batched search + grouping: {r['batched_s']} s = {r['batched_qps']:,.0f} queries/s "
          f"(search alone {r['search_s']} s; target >= 200 queries/s)")
    print(f"  per-query search + Python grouping: {r['per_query_qps']:,.0f} queries/s -> "
          f"ratio {r['batched_qps'] / r['per_query_qps']:.1f}x (same grouping output: {r['identical_to_per_query']})")
    print(f"  exact numpy per query + Python grouping: {r['exact_numpy_qps']:,.1f} queries/s -> "
          f"ratio {r['batched_qps'] / r['exact_numpy_qps']:,.0f}x")
    print(f"  recall@{r['k']} vs exact numpy: {r['recall']:.4f}, hit communities found: {r['community_recall']:.4f} "
          f"(over {r['recall_queries']} queries)")
    for nprobe, f in r.get("nprobe", {}).items():
        print(f"  nprobe {nprobe:2d}: {f['qps']:,.0f} queries/s, recall@{r['k']} {f['recall']:.4f}, "
              f"hit communities found {f['community_recall']:.4f}")


if __name__ == "__main__":
    main()
