"""Captioner throughput through the HTTP backend: concurrency 1, 4, 16 against a local server.

    python benchmarks/caption_bench.py [--images 400] [--latency 0.05]

A local OpenAI-compatible server (`curation.demo.vlm_stub.VlmStub`) answers every request after
`latency` seconds (the simulated model time), with a schema-valid caption. The same pool is
captioned three times (a new served-model name each time, so each run redoes every item) with
`caption.http.concurrency` 1, 4 and 16, in one process. Figures: rows/s of the whole
`curate caption` step (Ray start of the stage, image preparation, requests, validation, lake
write) and requests/s while requests were in flight (first to last request at the server).
Target: throughput scales ≥ 10x from concurrency 1 to 16.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()

    from curation.demo import photo_like, save_image
    from curation.runtime import RuntimeConfig, init_ray
    from curation.steps.ingest.pool import IngestConfig, ingest
    from curation.steps.run import run_step
    from curation.storage.lake import Lake

    init_ray(RuntimeConfig(num_cpus=2))
    # The server runs in its own process, as a real one would (in this process it would share
    # the interpreter lock with the Ray driver).
    server = subprocess.Popen([sys.executable, "-m", "curation.demo.vlm_stub", "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        stats_url = url.split("/v1/")[0] + "/stats"
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "imgs"
            src.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.images):
                save_image(photo_like(rng, 256, 192), src / f"{i:05d}.jpg")
            lake = Lake(str(Path(tmp) / "lake"))
            ingest(lake, IngestConfig(source=str(src)))
            results = {}
            for c in (1, 4, 16):
                urllib.request.urlopen(stats_url + "?reset=1").read()
                t0 = time.perf_counter()
                s = run_step(lake, "caption", overrides={
                    "caption.http.url": url, "caption.http.model": f"bench-c{c}", "caption.http.concurrency": c,
                    "caption.http.batch_size": 64, "caption.use_meta": False})
                secs = time.perf_counter() - t0
                after = json.load(urllib.request.urlopen(stats_url))
                n = after["requests"]
                span = after["last"] - after["first"] + args.latency  # arrivals plus one answer time
                results[c] = (s.rows_out / secs, n / span)
                print(f"concurrency {c:2d}: {s.rows_out} captions in {secs:.1f}s -> {s.rows_out / secs:7.1f} rows/s "
                      f"end to end; {n / span:7.1f} requests/s in flight; errors {s.errors or 'none'}")
    finally:
        server.terminate()
    r1, r16 = results[1], results[16]
    print(f"scaling 1 -> 16: {r16[0] / r1[0]:.1f}x rows/s end to end, {r16[1] / r1[1]:.1f}x requests/s "
          f"({args.latency * 1000:.0f} ms per request, {args.images} images)")


if __name__ == "__main__":
    main()
