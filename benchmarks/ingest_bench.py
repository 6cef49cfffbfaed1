"""Ingest benchmark: images/s into the lake from the layouts users have, on a local Ray.

    python benchmarks/ingest_bench.py [--n 10000] [--workdir /tmp/ingest-bench]

(a) a folder of JPEGs with caption sidecars, (b) the same images as img2dataset output shards
(`00000.tar` + `00000.parquet` + `00000_stats.json`, 1,000 samples a shard). Ingest hashes
and indexes (reads every byte once, sha256, sidecars / shard members and the img2dataset
columns), no decode; Ray start-up is excluded. Target: (a) and (b) >= 500 images/s on 2 cores.
The images are the same photo-like JPEGs of 0.15-0.3 MP (~40 KB, web-thumbnail size) in both.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.jpegs import cached_jpegs  # noqa: E402
from curation.runtime import RuntimeConfig, init_ray  # noqa: E402
from curation.steps.ingest.pool import IngestConfig, ingest  # noqa: E402
from curation.storage.lake import Lake  # noqa: E402

SHARD = 1000


def corpus(work: Path, n: int) -> list[Path]:
    files = cached_jpegs(work, n, megapixels=(0.15, 0.3), quality=85)
    for i, f in enumerate(files):
        f.with_suffix(".txt").write_text(f"a photo, number {i}")
    return files


def img2dataset_shards(files: list[Path], out: Path) -> Path:
    """The files as img2dataset's webdataset output: tar + parquet + stats per shard."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for s in range(0, len(files), SHARD):
        rows = []
        with tarfile.open(out / f"{s // SHARD:05d}.tar", "w") as tar:
            for i, f in enumerate(files[s:s + SHARD]):
                key = f"{s // SHARD:05d}{i:04d}"
                data = f.read_bytes()
                caption = f.with_suffix(".txt").read_text()
                meta = {"key": key, "caption": caption, "url": f"https://example.org/{f.name}", "status": "success",
                        "error_message": None, "width": 512, "height": 384, "original_width": 1024,
                        "original_height": 768, "exif": "{}", "sha256": hashlib.sha256(data).hexdigest()}
                for ext, blob in ((".jpg", data), (".json", json.dumps(meta).encode()), (".txt", caption.encode())):
                    info = tarfile.TarInfo(key + ext)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
                rows.append(meta)
        pq.write_table(pa.Table.from_pylist(rows), out / f"{s // SHARD:05d}.parquet")
        (out / f"{s // SHARD:05d}_stats.json").write_text(json.dumps({"count": len(rows), "successes": len(rows)}))
    return out


def timed_ingest(source: Path, lake_dir: Path) -> tuple[float, int]:
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = Lake(str(lake_dir))
    t0 = time.perf_counter()
    summary = ingest(lake, IngestConfig(source=str(source)))
    return time.perf_counter() - t0, summary.rows_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "ingest-bench"))
    args = ap.parse_args()
    work = Path(args.workdir)
    files = corpus(work, args.n)
    shards = img2dataset_shards(files, work / "img2dataset")
    init_ray(RuntimeConfig(num_cpus=2))
    timed_ingest(files[0].parent, work / "warmup-lake")  # Ray workers and imports warm up once
    results = {}
    for name, source in (("(a) folder + sidecars", files[0].parent), ("(b) img2dataset shards", shards)):
        seconds, rows = timed_ingest(source, work / "lake")
        assert rows == args.n, f"{name}: {rows} rows for {args.n} images"
        results[name] = args.n / seconds
        print(f"{name:<26} {seconds:6.1f} s  {results[name]:8.0f} images/s  (target >= 500)")


if __name__ == "__main__":
    main()
