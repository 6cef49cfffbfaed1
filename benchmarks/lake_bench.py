"""Lake benchmark: the Delta lake vs the previous layout, on the same tables, in one process.

    python benchmarks/lake_bench.py [--rows 1000000] [--workdir /tmp/lake-bench]

The previous layout (versioned Parquet directories plus a JSON commit record of our own,
`benchmarks/legacy_lake.py`) is the baseline. For 1M `pool` rows and 1M `profiles` rows:
1. write rows/s through `Lake.write` vs the old writer (target >= 0.8x);
2. read rows/s of the whole latest snapshot vs the old reader (target >= 1x), and pyarrow
   reading the same files bare (the floor both share: both layouts are the same Parquet);
3. a keyed append (the idempotent path every incremental step takes) of 10k new rows onto
   the 1M-row table, reported on its own;
4. the latency of one commit: a 1-row append, median of 20, both layouts.
Both write zstd Parquet from the same Arrow tables; the files land on the same disk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402

from benchmarks.legacy_lake import LegacyLake  # noqa: E402
from curation.storage import schemas  # noqa: E402
from curation.storage.lake import Lake  # noqa: E402
from curation.steps.profiling.profile import ProfileRunner  # noqa: E402
from operators.registry import DEFAULT_PROFILE_OPERATORS  # noqa: E402


def pool_rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [f"{x:064x}" for x in rng.integers(0, 2**63, n, dtype=np.int64).astype(object) * (2**190 + 7)]
    uris = [f"s3://bucket/shards/{i // 10_000:05d}.tar#{i:09d}.jpg" for i in range(n)]
    words = np.array("a photo of red blue dog cat house tree city street night river mountain".split())
    caps = [" ".join(words[rng.integers(0, len(words), 8)]) for _ in range(min(n, 50_000))]
    caption = [caps[i % len(caps)] for i in range(n)]
    table = pa.table({
        "id": ids, "uri": uris, "byte_offset": rng.integers(0, 2**30, n), "byte_size": rng.integers(10_000, 500_000, n),
        "uris": pa.array([[u] for u in uris], pa.list_(pa.string())),
        "sources": pa.array([["laion"]] * n, pa.list_(pa.string())),
        "caption": caption,
        "caption_fields": pa.array([[{"key": "caption", "value": c}] for c in caption], schemas.CAPTION_FIELDS_TYPE),
        "tags": pa.array([["photo", "dog"]] * n, pa.list_(pa.string())),
        "caption_issue": pa.nulls(n, pa.string()), "extra_json": pa.nulls(n, pa.string()),
        "bytes_len": rng.integers(10_000, 500_000, n), "ingest_batch": ["20261202T000000-abcdef"] * n,
        "error": pa.nulls(n, pa.string()),
    })
    return schemas.conform(table, schemas.POOL_SCHEMA)


def profile_rows(ids: pa.Array, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    schema = ProfileRunner(list(DEFAULT_PROFILE_OPERATORS)).schema
    n = len(ids)
    cols = {}
    for f in schema:
        if f.name == "id":
            cols[f.name] = ids
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.nulls(n, f.type) if f.name == "error" else pa.array(["JPEG"] * n, f.type)
        elif pa.types.is_floating(f.type):
            cols[f.name] = pa.array(rng.random(n).astype(f.type.to_pandas_dtype()))
        elif pa.types.is_integer(f.type):
            cols[f.name] = pa.array(rng.integers(0, 2**31 - 1, n).astype(f.type.to_pandas_dtype()))
        elif pa.types.is_boolean(f.type):
            cols[f.name] = pa.array(rng.random(n) < 0.5)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=schema)


def timed(fn, repeat: int = 2) -> float:
    """Best of `repeat` wall-clock seconds (the first run also warms the page cache)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_table(name: str, data: pa.Table, work: Path) -> dict:
    n = data.num_rows
    out = {}
    runs = {"new": 0, "old": 0}

    def new_write():
        runs["new"] += 1
        Lake(str(work / f"new-{name}-{runs['new']}")).write(name, data)

    def old_write():
        runs["old"] += 1
        LegacyLake(str(work / f"old-{name}-{runs['old']}")).write(name, data)

    writes_new, writes_old = [], []
    for _ in range(3):  # interleaved, best of 3 (each into a fresh lake)
        writes_new.append(timed(new_write, repeat=1))
        writes_old.append(timed(old_write, repeat=1))
    out["write_new"], out["write_old"] = min(writes_new), min(writes_old)
    new, old = Lake(str(work / f"new-{name}-1")), LegacyLake(str(work / f"old-{name}-1"))
    # The floor both layouts share: pyarrow reading the very files of the new table.
    files = new.files(name)
    reads_new, reads_old, reads_bare = [], [], []
    for _ in range(9):  # interleaved, best of 9: page cache and allocator state even out
        reads_new.append(timed(lambda: new.read(name), repeat=1))
        reads_old.append(timed(lambda: old.read(name), repeat=1))
        reads_bare.append(timed(lambda: pads.dataset(files, format="parquet").to_table(), repeat=1))
    out["read_new"], out["read_old"], out["read_bare"] = min(reads_new), min(reads_old), min(reads_bare)
    assert new.read(name).num_rows == old.read(name).num_rows == n
    extra = data.slice(0, 10_000)
    extra = extra.set_column(0, extra.schema.field(0), pa.array([f"new-{i}" for i in range(extra.num_rows)]))
    t0 = time.perf_counter()
    new.write(name, extra, key="id")
    out["keyed_append_10k"] = time.perf_counter() - t0
    print(f"{name}: {n:,} rows, {data.nbytes / 2**20:.0f} MiB in memory")
    for way in ("write", "read"):
        a, b = n / out[f"{way}_new"], n / out[f"{way}_old"]
        print(f"  {way:<5} delta {a:>12,.0f} rows/s   previous layout {b:>12,.0f} rows/s   ratio {a / b:.2f}x")
    print(f"  read  bare pyarrow on the same files {n / out['read_bare']:>12,.0f} rows/s "
          f"(the Delta layer's share: {(out['read_new'] - out['read_bare']) * 1000:+.0f} ms per read)")
    print(f"  keyed append of 10k new rows onto {n:,}: {out['keyed_append_10k']:.2f}s")
    return out


def commit_latency(work: Path, k: int = 20) -> tuple[float, float]:
    one = pa.table({"id": ["x"], "v": [1]})
    new, old = Lake(str(work / "lat-new")), LegacyLake(str(work / "lat-old"))
    new.write("t", one)
    old.write("t", one)
    tn, to = [], []
    for _ in range(k):
        t0 = time.perf_counter()
        new.write("t", one)
        tn.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        old.write("t", one)
        to.append(time.perf_counter() - t0)
    return statistics.median(tn), statistics.median(to)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lake-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    pool = pool_rows(args.rows)
    prof = profile_rows(pool["id"])
    print(f"generated {args.rows:,} pool and profile rows in {time.perf_counter() - t0:.1f}s; workdir {work}")
    bench_table("pool", pool, work)
    bench_table("profiles", prof, work)
    new, old = commit_latency(work)
    print(f"commit latency (1-row append, median of 20): delta {new * 1000:.1f} ms, previous layout "
          f"{old * 1000:.1f} ms ({new / old:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
