"""Nightly re-curation benchmark: a night with 1% new items, incremental vs a full recomputation
of the same steps, on copies of one lake, in one process.

    python benchmarks/nightly_bench.py [--n 200000] [--new-frac 0.01] [--dim 256]

The lake (generated, no images): `pool` (ids, uris, caption tags drawn Zipf-like from the demo
wiki's vocabulary plus a long tail of free tags), `profiles` (metadata, pHash, JPEG bpp; copies
share their original's pHash up to a few bits), `embeddings/synth` (the dedup benchmark's
generator: topic clusters, planted near-duplicate groups and chains; `dedup_bench.make_embeddings`)
and the demo wiki's knowledge graph. Night 0 runs the steps fully; then 1% new rows (random
draws of the same generator, so some are copies of old items) are added to pool, profiles
and embeddings, as ingest / profile / score would (those steps are per-row incremental already).

The night's steps: dedup, kg weights, the lowres export.
- nightly: `curate nightly` with `dedup.mode: incremental`, `kg.weights.mode: incremental`;
- full:    the same run with both modes `full`, on a copy of the same lake.
Reported: wall time of each and the ratio (target nightly <= 10% of full), per-step seconds,
dedup agreement (pair F1 of the duplicate groups, target >= 0.99), weight agreement, and the
time of a no-op rerun of the finished night as `curate nightly` in a fresh process (target
<= 5 s plus Ray start; a finished night never starts Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from dedup_bench import make_embeddings  # noqa: E402

ENC = "synth"
SPEC = """lake: {lake}
nightly: {{run_id: {run_id}}}
dedup: {{encoder: {enc}, k: 16, tau: 0.9, levels: [1.0], level_tau: 0.8, phash_max_distance: 4,
        window_distance: null, keep_by: [pixels desc, jpeg_bpp desc], mode: {mode}}}
kg:
  build:
    page: {wiki}/demowiki-20240101-page.sql.gz
    pagelinks: {wiki}/demowiki-20240101-pagelinks.sql.gz
    linktarget: {wiki}/demowiki-20240101-linktarget.sql.gz
    redirect: {wiki}/demowiki-20240101-redirect.sql.gz
  weights: {{mode: {mode}, idf_tolerance: 0.01}}
stages:
  lowres:
    rules: {{min_side: 256, max_aspect: 4.0}}
    buckets: {{resolution: 256, step: 32, max_aspect: 4.0}}
    balance: {{mode: weight}}
steps:
{steps}
"""
NIGHT_STEPS = ("  - {step: dedup}\n  - {step: kg-weights}\n"
               "  - {step: export, stage: lowres, out: \"%s\", skip_unchanged: true}")


def _ids(rng, n: int) -> list[str]:
    return [f"{a:016x}{b:016x}" * 2 for a, b in rng.integers(0, 2**63, size=(n, 2))]


def _tags(rng, n: int, vocab: list[str]) -> pa.Array:
    """Per item 0-6 tags: Zipf over the wiki vocabulary, one in five from a long tail."""
    p = 1 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    k = rng.integers(0, 7, n)
    offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int32)
    m = int(offsets[-1])
    words = np.asarray(vocab, object)[rng.choice(len(vocab), m, p=p)]
    tail = rng.random(m) < 0.2
    words[tail] = [f"tag{t}" for t in rng.zipf(1.3, int(tail.sum())) % 200_000]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(words.tolist(), pa.string()))


def _tables(ids, x, truth, rows, rng, vocab, base_phash):
    """pool, profiles and embeddings rows for `rows` of the generated set."""
    from curation.steps.vectors.embeddings import embeddings_rows
    from curation.storage.schemas import POOL_SCHEMA, conform, profile_schema
    from operators.registry import get_operator

    n = len(rows)
    sel = pa.array([ids[i] for i in rows], pa.string())
    uris = [f"s3://bucket/images/{ids[i][:16]}.jpg" for i in rows]
    pool = conform(pa.table({"id": sel, "uri": uris, "uris": [[u] for u in uris], "sources": [["bench"]] * n,
                             "tags": _tags(rng, n, vocab)}), POOL_SCHEMA)
    w = rng.integers(256, 1600, n).astype(np.int32)
    h = rng.integers(256, 1600, n).astype(np.int32)
    flip = np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
    phash = base_phash[truth[rows]] ^ np.where(truth[rows] != rows, flip, np.uint64(0))  # copies: 1 bit off
    schema = profile_schema([get_operator(o) for o in ("metadata", "phash", "jpeg_bpp")])
    profiles = conform(pa.table({"id": sel, "format": ["JPEG"] * n, "width": w, "height": h, "mode": ["RGB"] * n,
                                 "channels": pa.array(np.full(n, 3, np.int8)), "file_size": w.astype(np.int64) * h // 4,
                                 "phash": pa.array(phash, pa.uint64()),
                                 "jpeg_bpp": pa.array(rng.uniform(0.5, 3.0, n).astype(np.float32)),
                                 "profile_producer": ["bench"] * n}), schema)
    return pool, profiles, embeddings_rows(sel, ENC, x[rows])


def build(root: Path, n: int, new_frac: float, dim: int, seed: int = 0) -> dict:
    from curation.demo.wiki import write_demo_wiki
    from curation.steps.kg.steps import KgBuildConfig, kg_build
    from curation.storage.lake import Lake
    from curation.storage.schemas import PROFILES, embeddings_table

    t0 = time.perf_counter()
    n_new = int(round(n * new_frac))
    x, truth, _ = make_embeddings(n + n_new, dim=dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(n + n_new)  # the night's items: a random draw (some copy old items)
    old_rows, new_rows = np.sort(order[:n]), np.sort(order[n:])
    ids = _ids(rng, n + n_new)
    base_phash = rng.integers(0, 2**63, n + n_new, dtype=np.int64).astype(np.uint64)
    wiki = write_demo_wiki(root / "wiki")
    from curation.demo.wiki import BROADER
    vocab = sorted({t.lower() for titles in BROADER.values() for t in titles} | {b.lower() for b in BROADER})
    lake = Lake(str(root / "lake"))
    pool, profiles, emb = _tables(ids, x, truth, old_rows, rng, vocab, base_phash)
    lake.write("pool", pool, mode="overwrite")
    lake.write(PROFILES, profiles, mode="overwrite")
    lake.write(embeddings_table(ENC), emb, mode="overwrite")
    kg_build(lake, KgBuildConfig(page=str(wiki["page"]), pagelinks=str(wiki["pagelinks"]),
                                 linktarget=str(wiki["linktarget"]), redirect=str(wiki["redirect"])))
    return {"lake": lake, "ids": ids, "x": x, "truth": truth, "new_rows": new_rows, "rng": rng, "vocab": vocab,
            "base_phash": base_phash, "wiki": wiki["page"].parent, "seconds": time.perf_counter() - t0}


def add_night(data: dict) -> None:
    from curation.storage.schemas import PROFILES, embeddings_table

    lake = data["lake"]
    pool, profiles, emb = _tables(data["ids"], data["x"], data["truth"], data["new_rows"], data["rng"],
                                  data["vocab"], data["base_phash"])
    lake.write("pool", pool, key="id")
    lake.write(PROFILES, profiles, key="id")
    lake.write(embeddings_table(ENC), emb, key="id")


def spec_for(root: Path, lake: Path, mode: str, run_id: str, wiki: Path) -> Path:
    path = root / f"{lake.name}-{run_id}.yaml"
    path.write_text(SPEC.format(lake=lake, run_id=run_id, enc=ENC, mode=mode, wiki=wiki,
                                steps=NIGHT_STEPS % (root / f"out-{lake.name}")))
    return path


def night(spec_path: Path, lake, lines: list | None = None) -> tuple[float, dict]:
    from curation.config.spec import load_spec
    from curation.steps.nightly.night import nightly

    t0 = time.perf_counter()
    result = nightly(load_spec(str(spec_path)), printer=(lines if lines is not None else []).append, lake=lake)
    seconds = time.perf_counter() - t0
    if result.exit_code != 0:
        raise SystemExit(f"nightly failed: {result.run.get('error')}")
    steps = json.loads(result.run["steps_json"])
    return seconds, {s["step"]: s for s in steps}


def _pairs(table) -> set:
    groups: dict = {}
    for i, g in zip(table["id"].to_pylist(), table["group_id"].to_pylist()):
        groups.setdefault(g, []).append(i)
    return {(a, b) for m in groups.values() if len(m) > 1 for a in m for b in m if a < b}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="items in the lake before the night")
    ap.add_argument("--new-frac", type=float, default=0.01, help="the night's new items, as a share of --n")
    ap.add_argument("--dim", type=int, default=256, help="embedding dimension")
    ap.add_argument("--workdir", help="where the lakes go (default: a temporary folder, removed)")
    args = ap.parse_args()

    from curation.runtime import RuntimeConfig, init_ray
    from curation.storage.lake import Lake
    from curation.storage.schemas import DEDUP, WEIGHTS

    root = Path(args.workdir or tempfile.mkdtemp(prefix="nightly-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    session = init_ray(RuntimeConfig())
    print(f"ray: {session['cpus']} CPU(s); lake: {args.n} items + {args.new_frac:.1%} new, dim {args.dim}, in {root}")
    data = build(root, args.n, args.new_frac, args.dim)
    print(f"built the lake in {data['seconds']:.0f}s")
    lake_dir = root / "lake"
    t0 = time.perf_counter()
    night(spec_for(root, lake_dir, "full", "night-0", data["wiki"]), data["lake"])
    print(f"night 0 (full, untimed setup) in {time.perf_counter() - t0:.0f}s")
    add_night(data)
    full_dir = root / "full"
    shutil.copytree(lake_dir, full_dir)

    report: list[str] = []
    inc_s, inc_steps = night(spec_for(root, lake_dir, "incremental", "night-1", data["wiki"]), data["lake"], report)
    full_lake = Lake(str(full_dir))
    full_s, full_steps = night(spec_for(root, full_dir, "full", "night-1", data["wiki"]), full_lake)

    inc, full = data["lake"].read(DEDUP), full_lake.read(DEDUP)
    a, b = _pairs(inc), _pairs(full)
    f1 = 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0
    keep_agree = float(np.mean(np.asarray(inc.sort_by("id")["keep"]) == np.asarray(full.sort_by("id")["keep"])))
    wi, wf = data["lake"].read(WEIGHTS).sort_by("id"), full_lake.read(WEIGHTS).sort_by("id")
    rel = np.abs(wi["weight"].to_numpy() / wf["weight"].to_numpy() - 1)

    env = dict(os.environ, CURATE_PROGRESS="0", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t0 = time.perf_counter()
    noop = subprocess.run([sys.executable, "-m", "curation.cli.main", "nightly", str(lake_dir), "--spec",
                           str(spec_for(root, lake_dir, "incremental", "night-1", data["wiki"]))],
                          env=env, capture_output=True, text=True)
    noop_s = time.perf_counter() - t0
    if noop.returncode != 0 or "already finished" not in noop.stdout:
        raise SystemExit(f"no-op rerun did not report a finished night: {noop.stdout[-500:]} {noop.stderr[-1500:]}")

    print("\nthe incremental night's report:\n" + "\n".join(report))
    print(f"\n{'step':12s} {'nightly s':>10s} {'full s':>10s}")
    for step in full_steps:
        print(f"{step:12s} {inc_steps[step]['seconds']:10.1f} {full_steps[step]['seconds']:10.1f}")
    print(f"{'total':12s} {inc_s:10.1f} {full_s:10.1f}   (whole run: lock, run record, steps)")
    print(f"\nnightly / full wall time: {inc_s / full_s:.3f} (target <= 0.10)")
    print(f"dedup agreement: pair F1 {f1:.4f} (target >= 0.99) over {len(b)} duplicate pairs of the full run; "
          f"keep decisions equal on {keep_agree:.4%} of {inc.num_rows} items")
    print(f"weights: median relative difference {np.median(rel):.2e}, max {rel.max():.2e}")
    print(f"no-op rerun (`curate nightly` in a fresh process; no Ray started): {noop_s:.1f}s (target <= 5 s + Ray start)")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
