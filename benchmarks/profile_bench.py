"""Profiling benchmark: ours vs baselines on the same generated JPEGs, in one process.

    python benchmarks/profile_bench.py [--n 500] [--workdir /tmp/profile-bench]

1. fused stage (one read, one decode at the plan's size, all operators) vs a naive loop that
   computes the same features the usual way: a full decode per feature, `imagehash.phash`
   on the full image (target >= 3x images/s);
2. fused stage vs the decode-only ceiling: Pillow full RGB decode of the same files
   (target >= 0.5x);
3. ingest + profile through Ray Data on 2 CPUs (lake writes included, Ray start excluded) vs
   the fused stage in 2 local processes (target >= 0.7x);
4. the fused stage with every default operator vs the same without `nearhash` (the frame trim
   and window hashes of near-duplicate detection; target: a drop of <= 15 %, i.e. >= 0.85x).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.jpegs import cached_jpegs  # noqa: E402
from curation.steps.profiling.profile import ProfileRunner  # noqa: E402
from operators.decode import DecodePlan, open_item  # noqa: E402
from operators.registry import DEFAULT_PROFILE_OPERATORS, get_operator  # noqa: E402


def corpus(workdir: Path, n: int) -> list[Path]:
    return cached_jpegs(workdir, n, megapixels=(1.0, 2.0))


def table_of(files: list[Path]) -> pa.Table:
    return pa.table({"id": [f.name for f in files], "uri": [str(f) for f in files]})


def decode_only(files: list[Path]) -> None:
    for f in files:
        with Image.open(f) as im:
            im.convert("RGB")


def naive(files: list[Path]) -> None:
    """The usual way: each feature opens and fully decodes the file itself."""
    full = {kind: DecodePlan(kind, 0, 1) for kind in ("header", "luma", "rgb")}
    ops = [get_operator(n)() for n in DEFAULT_PROFILE_OPERATORS if n != "phash"]
    for f in files:
        for op in ops:
            data = f.read_bytes()
            op.compute(open_item(data, full[op.need.kind]))
        with Image.open(f) as im:
            imagehash.phash(im)


def fused(files: list[Path], operators: list[str] | None = None) -> None:
    ProfileRunner(list(operators or DEFAULT_PROFILE_OPERATORS))(table_of(files))


def _fused_chunk(paths: list[str]) -> int:
    return ProfileRunner(list(DEFAULT_PROFILE_OPERATORS))(table_of([Path(p) for p in paths])).num_rows


def fused_2proc(files: list[Path]) -> None:
    chunks = [[str(f) for f in files[i::8]] for i in range(8)]
    with mp.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(_fused_chunk, chunks)) == len(files)


def through_ray(source: Path, n: int, lake_dir: Path) -> None:
    from curation.steps.ingest.pool import IngestConfig, ingest
    from curation.storage.lake import Lake
    from curation.steps.profiling.profile import ProfileConfig, profile

    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = Lake(str(lake_dir))
    ingest(lake, IngestConfig(source=str(source), name="bench"))
    s = profile(lake, ProfileConfig())
    assert s.rows_out == n, s


def timed(name: str, fn, n: int, results: dict, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    dt = time.perf_counter() - t0
    results[name] = n / dt
    print(f"  {name:<34} {dt:7.2f} s  {n / dt:8.1f} img/s", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--naive-n", type=int, default=150, help="the naive loop is slow: time it on a prefix")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "profile-bench"))
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = corpus(workdir, args.n)
    r: dict[str, float] = {}
    print(f"single process, {len(files)} files (page cache warmed first):")
    decode_only(files[:50])  # warm the page cache and Pillow
    timed("decode-only (PIL full RGB)", decode_only, len(files), r, files)
    timed("fused stage (ours)", fused, len(files), r, files)
    without = [n for n in DEFAULT_PROFILE_OPERATORS if n != "nearhash"]
    timed("fused stage without nearhash", fused, len(files), r, files, without)
    sub = files[: args.naive_n]
    timed(f"naive loop ({len(sub)} files)", naive, len(sub), r, sub)

    print("two CPUs:")
    import ray

    from curation.runtime import RuntimeConfig, init_ray

    os.environ.setdefault("CURATE_PROGRESS", "0")
    init_ray(RuntimeConfig(num_cpus=2))
    warm = workdir / "warm-src"  # warm the workers: their start-up is not throughput
    warm.mkdir(exist_ok=True)
    for f in files[:40]:
        if not (warm / f.name).exists():
            shutil.copy(f, warm / f.name)
    through_ray(warm, 40, workdir / "warm-lake")
    timed("fused stage, 2 local processes", fused_2proc, len(files), r, files)
    timed("ingest + profile via Ray (ours)", through_ray, len(files), r, files[0].parent, len(files), workdir / "lake")
    ray.shutdown()

    fused_rate = r["fused stage (ours)"]
    naive_rate = r[f"naive loop ({len(sub)} files)"]
    print("\nratios (same files, same process):")
    print(f"  fused / naive loop              {fused_rate / naive_rate:6.2f}x   (target >= 3)")
    print(f"  fused / decode-only ceiling     {fused_rate / r['decode-only (PIL full RGB)']:6.2f}x   (target >= 0.5)")
    print(f"  Ray ingest+profile / 2 procs    {r['ingest + profile via Ray (ours)'] / r['fused stage, 2 local processes']:6.2f}x   (target >= 0.7)")
    print(f"  with / without nearhash         {fused_rate / r['fused stage without nearhash']:6.2f}x   (target >= 0.85)")


if __name__ == "__main__":
    main()
