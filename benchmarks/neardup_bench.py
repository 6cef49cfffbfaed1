"""pHash near-duplicate grouping: multi-index hashing vs brute force, same data, same process.

Data: N uniformly random 64-bit hashes, a fraction of them replaced by planted groups (a base
hash plus copies 0-2 bits away, like resized/re-encoded copies under the DCT-domain pHash).
Brute force on all N would take hours, so it is timed on a sample of query rows against all N
(a blocked numpy XOR+popcount kernel with preallocated buffers) and extrapolated linearly to
N query rows; the output says so. Both the full square and the half (i<j) extrapolations are
printed; the ratio uses the half, the fairer baseline.

    .venv/bin/python benchmarks/neardup_bench.py [--n 1000000] [--distance 4] [--sample 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from curation.steps.export.neardup import near_duplicate_groups  # noqa: E402

_popcount = np.bitwise_count  # numpy >= 2 (out= buffers below)


def make_data(n: int, planted_fraction: float, seed: int):
    """(hashes, group_of_planted_row) with planted groups of 2-4 rows, copies <= 2 bits off."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    n_planted = int(n * planted_fraction)
    sizes = rng.integers(2, 5, size=n_planted // 3)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_planted, side="right")]
    group = np.repeat(np.arange(sizes.size), sizes)
    base = rng.integers(0, 2**64, size=sizes.size, dtype=np.uint64)[group]
    k = rng.integers(0, 3, size=group.size)  # bits flipped per copy: 0, 1 or 2
    b1 = rng.integers(0, 64, size=group.size).astype(np.uint64)
    b2 = (b1 + rng.integers(1, 64, size=group.size).astype(np.uint64)) % np.uint64(64)
    one = np.uint64(1)
    flips = np.where(k >= 1, one << b1, 0).astype(np.uint64) ^ np.where(k >= 2, one << b2, 0).astype(np.uint64)
    first = np.r_[True, group[1:] != group[:-1]]
    flips[first] = 0  # the first member is the base itself
    rows = rng.choice(n, size=group.size, replace=False)
    hashes[rows] = base ^ flips
    return hashes, rows, group


def brute_force_sample(hashes: np.ndarray, queries: np.ndarray, d: int) -> tuple[float, list]:
    """Time comparing `queries` rows against all rows; return (seconds, neighbour pairs).

    The kernel is given its best shot: preallocated XOR/popcount/compare buffers and a block
    size picked from a short calibration (small blocks stay in cache).
    """
    n = hashes.size

    def run(q_rows: np.ndarray, block: int) -> list:
        xor = np.empty((block, n), np.uint64)
        cnt = np.empty((block, n), np.uint8)
        close = np.empty((block, n), bool)
        out = []
        for s in range(0, q_rows.size, block):
            q = q_rows[s : s + block]
            m = q.size
            np.bitwise_xor(hashes[q, None], hashes[None, :], out=xor[:m])
            _popcount(xor[:m], out=cnt[:m])
            np.less_equal(cnt[:m], d, out=close[:m])
            if close[:m].any():
                i, j = np.nonzero(close[:m])
                out.append((q[i], j))
        return out

    calib = queries[: min(64, queries.size)]
    timings = {}
    for block in (1, 2, 4, 8):
        t0 = time.perf_counter()
        run(calib, block)
        timings[block] = time.perf_counter() - t0
    best = min(timings, key=timings.get)
    t0 = time.perf_counter()
    neigh = run(queries, best)
    return time.perf_counter() - t0, neigh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--distance", type=int, default=4)
    ap.add_argument("--sample", type=int, default=2000, help="brute-force query rows timed")
    ap.add_argument("--planted", type=float, default=0.1, help="fraction of rows in planted groups")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="MIH runs; the fastest is reported")
    args = ap.parse_args()
    n, d = args.n, args.distance

    hashes, rows, group = make_data(n, args.planted, args.seed)
    print(f"data: {n:,} hashes, {group.size:,} in {group.max() + 1:,} planted groups (copies <= 2 bits apart), d = {d}")

    def best_of(runs: int, fn):
        """(result, fastest wall time of `runs` calls): the machine may be shared."""
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return result, min(times)

    labels, t_mih = best_of(args.repeat, lambda: near_duplicate_groups(hashes, d))
    exact, t_exact = best_of(args.repeat, lambda: near_duplicate_groups(hashes, 0))

    def recovered(lab: np.ndarray) -> int:
        """Planted groups found exactly: members share one label and no other row has it."""
        lab_p = lab[rows]
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
        lab_first = lab_p[starts]
        split = np.bincount(group, weights=lab_p != lab_first[group]) > 0
        extra = np.bincount(lab, minlength=n)[lab_first] != np.bincount(group)
        return int((~split & ~extra).sum())

    n_groups = group.max() + 1
    print(f"(MIH times: best of {args.repeat} runs)")
    print(f"MIH (d={d}):            {t_mih:8.2f} s   planted groups recovered exactly: {recovered(labels):,}/{n_groups:,}")
    print(f"exact-hash match (d=0): {t_exact:8.2f} s   planted groups recovered exactly: {recovered(exact):,}/{n_groups:,}")

    rng = np.random.default_rng(args.seed + 1)
    queries = np.sort(rng.choice(n, size=min(args.sample, n), replace=False))
    t_sample, neigh = brute_force_sample(hashes, queries, d)
    per_row = t_sample / queries.size
    full = per_row * n
    half = full / 2
    # correctness on the sample: every brute-force neighbour pair is in one MIH group
    qi = np.concatenate([a for a, _ in neigh])
    qj = np.concatenate([b for _, b in neigh])
    missed = int((labels[qi] != labels[qj]).sum())
    print(
        f"brute force: {queries.size:,} query rows x {n:,} rows took {t_sample:.2f} s -> "
        f"EXTRAPOLATED to all {n:,} rows: {full:,.0f} s (N^2), {half:,.0f} s (N^2/2, i<j only)"
    )
    print(f"brute-force neighbour pairs of the sampled rows missed by MIH: {missed} of {qi.size:,}")
    print(f"speed-up MIH vs brute force (extrapolated, N^2/2): {half / t_mih:,.0f}x")
    combined_decision(n, args.seed)


def balanced_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 64-bit hashes with 32 bits set, as DCT hashes (bits above a median) have."""
    order = np.argsort(rng.random((n, 64)), axis=1)[:, :32]
    bits = np.zeros((n, 64), bool)
    np.put_along_axis(bits, order, True, axis=1)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def combined_decision(n: int, seed: int) -> None:
    """The one decision export and dedup use, on n rows with a pHash and the seven nearhash
    window hashes each (random balanced hashes: a pool of distinct images), default config."""
    import pyarrow as pa

    from curation.steps.export.neardup import NearDupConfig, near_duplicate_labels
    from operators.nearhash import HASH_COLUMNS

    rng = np.random.default_rng(seed + 2)
    table = pa.table({c: pa.array(balanced_hashes(rng, n)) for c in ("phash",) + HASH_COLUMNS})
    for name, cfg in (("pHash only (windows off)", NearDupConfig(windows=False)), ("combined (default)", NearDupConfig())):
        t0 = time.perf_counter()
        labels = near_duplicate_labels(table, cfg)
        dt = time.perf_counter() - t0
        merged = n - np.unique(labels).size
        print(f"{name:<26} {n:,} rows: {dt:6.2f} s, {merged:,} rows merged into another (all distinct: false merges)")


if __name__ == "__main__":
    main()
