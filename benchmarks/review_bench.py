"""Active-curation benchmarks, one process. Part 1: hard-case mining (`bench_mining`); part 2:
the review queue's round trip on a 10k-item batch (`bench_queue`).

    python benchmarks/review_bench.py [--items 1000000] [--queries 1000] [--dim 512] [--batch 10000]
                                      [--skip-mining] [--skip-queue]

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

Part 2 builds a lake of `5 x batch` pool items (files on disk, scores, kg weights with concepts)
and times `review propose` (a `batch`-item run: low alignment, audit, concept-balanced draw,
alignment verifier), `review export` (Label Studio tasks; images referenced where they lie
under the document root) and `review import` of a simulated reviewer's export
(`curation.demo.annotator`) — the three together, target <= 10 s. Baseline, same process: the
import done the way a script would, one Delta MERGE per answered item, timed on 100 items and
scaled to the batch.
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


def make_queue_lake(root: Path, n_pool: int, seed: int = 0):
    """A lake of `n_pool` items whose images are small JPEG files under `root/images`."""
    import pyarrow as pa
    from PIL import Image

    from curation.storage import schemas
    from curation.storage.lake import Lake

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    ids = [f"{i:064x}" for i in range(n_pool)]
    data = __import__("io").BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data, "JPEG")
    for i in ids:  # the same small picture under every item's name: the bench times table work
        (images / f"{i}.jpg").write_bytes(data.getvalue())
    lake = Lake(str(root / "lake"))
    n = n_pool
    words = ["cat", "dog", "car", "tree", "house", "boat", "bird", "flower", "mountain", "city"]
    lake.write(schemas.POOL, schemas.table_spec(schemas.POOL).conform(pa.table({
        "id": ids, "uri": [str(images / f"{i}.jpg") for i in ids], "uris": [[str(images / f"{i}.jpg")] for i in ids],
        "sources": [["bench"]] * n,
        "caption": [f"a photo of a {words[i % 10]} and a {words[(i // 10) % 10]}" for i in range(n)],
        "tags": [[words[i % 10], words[(i // 10) % 10]] for i in range(n)], "bytes_len": [data.tell()] * n})))
    lake.write(schemas.SCORES, pa.table({
        "id": ids, "error": pa.nulls(n, pa.string()),
        "clip_alignment": rng.normal(0.25, 0.05, n).astype(np.float32),
        "aesthetic": rng.uniform(0, 1, n).astype(np.float32), "score_producer": ["bench"] * n}))
    nodes = [[int(i % 10), 10 + int((i // 10) % 10)] for i in range(n)]
    lake.write(schemas.WEIGHTS, schemas.table_spec(schemas.WEIGHTS).conform(pa.table({
        "id": ids, "weight": np.ones(n), "bm25": rng.uniform(0.5, 2.0, n), "nodes": nodes})))
    return lake


def bench_queue(batch: int = 10_000, seed: int = 0) -> dict:
    """Time propose + export + import of a `batch`-item review run (see the module)."""
    import tempfile

    import pyarrow as pa
    import pyarrow.compute as pc

    from curation.demo.annotator import simulate_annotations
    from curation.steps.review import labelstudio as ls
    from curation.steps.review.annotate import export_reviews, import_reviews
    from curation.steps.review.config import LabelStudioConfig, ProposeConfig, ReviewConfig
    from curation.steps.review.queue import propose
    from curation.storage import schemas

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        lake = make_queue_lake(root, 5 * batch, seed)
        setup_s = time.perf_counter() - t0
        cfg = ReviewConfig(propose=ProposeConfig(size=batch, balance="uniform"),
                           labelstudio=LabelStudioConfig(document_root=str(root)))
        t0 = time.perf_counter()
        proposed = propose(lake, cfg, "bench")
        t1 = time.perf_counter()
        exported = export_reviews(lake, str(root / "ls" / "tasks.json"), cfg, "bench")
        t2 = time.perf_counter()
        simulate_annotations(root / "ls" / "tasks.json", root / "ls" / "export.json")
        t3 = time.perf_counter()
        imported = import_reviews(lake, str(root / "ls" / "export.json"))
        t4 = time.perf_counter()
        # baseline: one MERGE per answered item, on the first 100 answers
        answers = ls.parse_export((root / "ls" / "export.json").read_bytes()).annotations[:100]
        reviews = lake.read(schemas.REVIEWS)
        t5 = time.perf_counter()
        for a in answers:
            row = reviews.filter(pc.equal(reviews["review_id"], a.review_id)).to_pylist()[0]
            row.update(human_note="baseline", updated_at="2027-01-01T00:00:00+00:00")
            one = pa.Table.from_pylist([row], schema=schemas.REVIEWS_SCHEMA)
            lake.transact(schemas.REVIEWS, lambda snap, one=one: one, key="review_id",
                          update_columns=[c for c in schemas.REVIEWS_SCHEMA.names if c != "review_id"])
        per_item_s = (time.perf_counter() - t5) / len(answers)
    return {"pool": 5 * batch, "batch": batch, "setup_s": round(setup_s, 1), "propose_s": t1 - t0,
            "export_s": t2 - t1, "import_s": t4 - t3, "total_s": (t1 - t0) + (t2 - t1) + (t4 - t3),
            "proposed": proposed["proposed"], "by_reason": proposed["by_reason"], "tasks": exported["tasks"],
            "applied": imported["applied"], "by_verdict": imported["by_verdict"],
            "baseline_import_s": per_item_s * imported["annotations"], "baseline_per_item_ms": per_item_s * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--skip-mining", action="store_true")
    ap.add_argument("--skip-queue", action="store_true")
    args = ap.parse_args()
    if not args.skip_queue:
        q = bench_queue(args.batch)
        print(f"review queue: {q['batch']:,}-item run over {q['pool']:,} items (lake made in {q['setup_s']} s, not timed)")
        print(f"  propose {q['propose_s']:.2f} s ({q['proposed']:,} proposed, {q['by_reason']}), export "
              f"{q['export_s']:.2f} s ({q['tasks']:,} tasks), import {q['import_s']:.2f} s ({q['applied']:,} applied, "
              f"{q['by_verdict']})")
        print(f"  together {q['total_s']:.2f} s (target <= 10 s); per-item MERGE import "
              f"{q['baseline_per_item_ms']:.0f} ms/item -> {q['baseline_import_s']:.0f} s for the batch: ratio "
              f"{q['baseline_import_s'] / q['import_s']:.0f}x")
    if args.skip_mining:
        return
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
