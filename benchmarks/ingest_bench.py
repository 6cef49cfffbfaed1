"""Ingest benchmark: images/s into the lake from the layouts users have, on a local Ray.

    python benchmarks/ingest_bench.py [--n 10000] [--workdir /tmp/ingest-bench]

(a) a folder of JPEGs with caption sidecars, (b) the same images as img2dataset output shards
(`00000.tar` + `00000.parquet` + `00000_stats.json`, 1,000 samples a shard), (c) a CSV of
their URLs served by a local HTTP server (127.0.0.1) that answers each request after 20 ms.
Ingest hashes and indexes (reads every byte once, sha256, sidecars / shard members and the
img2dataset columns; for (c) downloads and stores the bytes in the lake's shards), no decode;
Ray start-up is excluded. The images are the same photo-like JPEGs of 0.15-0.3 MP (~40 KB,
web-thumbnail size) throughout. Targets: (a) and (b) >= 500 images/s on 2 cores; (c) within
0.7x of img2dataset at the same concurrency. img2dataset is not installed here, so (c) is
compared with the fallback the issue names: a plain `requests` thread pool with the same total
concurrency that downloads, hashes and writes the bytes into tar shards.
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.jpegs import cached_jpegs  # noqa: E402
from curation.runtime import RuntimeConfig, init_ray  # noqa: E402
from curation.steps.ingest.download import DownloadConfig  # noqa: E402
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


LATENCY_S = 0.02
CONCURRENCY = 16  # download threads per Ray task; 2 tasks run at once on 2 CPUs


def serve(root: Path) -> ThreadingHTTPServer:
    """Files under `root` on 127.0.0.1, each answer delayed by LATENCY_S."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            time.sleep(LATENCY_S)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url_table(files: list[Path], port: int, out: Path) -> Path:
    rows = [{"url": f"http://127.0.0.1:{port}/{f.name}", "caption": f.with_suffix(".txt").read_text()} for f in files]
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out


def requests_baseline(urls: list[str], out: Path, threads: int) -> float:
    """The plain way: a thread pool of `requests` downloads, sha256 each body, tar shards."""
    import requests

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))

    def fetch(url: str) -> tuple[str, bytes]:
        body = session.get(url, timeout=10).content
        return hashlib.sha256(body).hexdigest(), body

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for s in range(0, len(urls), SHARD):
            with tarfile.open(out / f"{s // SHARD:05d}.tar", "w") as tar:
                for digest, body in pool.map(fetch, urls[s:s + SHARD]):
                    info = tarfile.TarInfo(digest + ".jpg")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
    return time.perf_counter() - t0


def timed_ingest(source: Path, lake_dir: Path, **options) -> tuple[float, int]:
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = Lake(str(lake_dir))
    t0 = time.perf_counter()
    summary = ingest(lake, IngestConfig(source=str(source), **options))
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
    server = serve(files[0].parent)
    try:
        table = url_table(files, server.server_address[1], work / "urls.parquet")
        seconds, rows = timed_ingest(table, work / "lake", download=DownloadConfig(concurrency=CONCURRENCY))
        assert rows == args.n, f"(c): {rows} rows for {args.n} URLs"
        ours = args.n / seconds
        urls = pq.read_table(table)["url"].to_pylist()
        base = args.n / requests_baseline(urls, work / "baseline-shards", threads=2 * CONCURRENCY)
    finally:
        server.shutdown()
    print(f"{'(c) URL table, 20 ms':<26} {args.n / ours:6.1f} s  {ours:8.0f} images/s; requests thread pool "
          f"({2 * CONCURRENCY} threads) {base:.0f} images/s: ratio {ours / base:.2f}x (target >= 0.7)")


if __name__ == "__main__":
    main()
