"""Trainer feed benchmark: `StageBatches` vs a plain torchvision DataLoader, same files, one process.

    python benchmarks/feed_bench.py [--images 2000] [--workers 4] [--tmpdir /tmp/feed-bench]

The corpus: JPEGs (quality 90) with aspect 1/3..3 (log-uniform) and 0.2..2.5 MP (uniform), cut
from a few photo-like bases and resized, so generation stays at ~10 ms per image; kept in
`tmpdir` between runs. The export: a manifest and an epoch-0 batch plan of one bucket per
batch (buckets of ~256² px area, 32 px steps, up to 32 images per batch, batch order shuffled).

(a) ours: `DataLoader(StageBatches(export), batch_size=None, num_workers=W)`: reduced-size JPEG
    decode, cover-resize and centre-crop to each image's bucket, float [-1, 1];
(b) baseline: `DataLoader(files, batch_size=32, num_workers=W)` whose dataset does Pillow open +
    convert("RGB") + torchvision Resize(256) + CenterCrop(256) + ToTensor.
Both read every image once from the page cache (the files were just written); figures are
images/s including worker start-up, and the ratio is ours / baseline.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms  # noqa: E402

from curation.demo.images import photo_like  # noqa: E402
from curation.feed import StageBatches, plan_name  # noqa: E402
from curation.steps.export.buckets import BucketConfig, assign_buckets, make_buckets, seq_len  # noqa: E402

BATCH = 32
BUCKETS = BucketConfig(resolution=256, step=32)


def make_export(root: Path, n: int, seed: int = 0) -> Path:
    """JPEGs, manifest and epoch-0 plan for n images under root/feed-<n>; reused when complete."""
    out = root / f"feed-{n}"
    if (out / plan_name(0)).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    bases = [photo_like(rng, 2048, 2048) for _ in range(6)]
    ids, uris, heights, widths = [], [], [], []
    for i in range(n):
        aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))  # width / height
        pixels = rng.uniform(0.2e6, 2.5e6)
        w, h = round(math.sqrt(pixels * aspect)), round(math.sqrt(pixels / aspect))
        # A window of the image's aspect from one base, at a random place, scaled to size.
        cw, ch = (2048, round(2048 / aspect)) if aspect >= 1 else (round(2048 * aspect), 2048)
        x, y = int(rng.integers(0, 2049 - cw)), int(rng.integers(0, 2049 - ch))
        im = bases[i % len(bases)].resize((w, h), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
        path = out / f"img_{i:06d}.jpg"
        im.save(path, "JPEG", quality=90)
        ids.append(f"img_{i:06d}")
        uris.append(str(path))
        heights.append(h)
        widths.append(w)
    _write_tables(out, ids, uris, heights, widths, rng)
    print(f"generated {n} JPEGs (aspect 1/3..3, 0.2..2.5 MP) in {time.perf_counter() - t0:.0f}s")
    return out


def _write_tables(out: Path, ids, uris, heights, widths, rng: np.random.Generator) -> None:
    meta = {b"curation.manifest_version": b"1", b"curation.stage": b"bench"}
    null = pa.nulls(len(ids), pa.int64())
    pq.write_table(pa.table({
        "id": ids, "uri": uris, "byte_offset": null, "byte_size": null, "kind": ["t2i"] * len(ids),
        "source_uri": pa.nulls(len(ids), pa.string()), "source_byte_offset": null, "source_byte_size": null,
    }).replace_schema_metadata(meta), out / "manifest.parquet")
    bh, bw = assign_buckets(heights, widths, make_buckets(BUCKETS))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(bh.tolist(), bw.tolist())):
        groups.setdefault(key, []).append(i)
    batches = [members[k:k + BATCH] for members in groups.values() for k in range(0, len(members), BATCH)]
    batches = [batches[j] for j in rng.permutation(len(batches))]
    rows = {"batch": [], "position": [], "id": [], "kind": [], "caption": [], "caption_level": [],
            "bucket_height": [], "bucket_width": [], "seq_len": []}
    for b, members in enumerate(batches):
        for p, i in enumerate(members):
            for key, value in (("batch", b), ("position", p), ("id", ids[i]), ("kind", "t2i"),
                               ("caption", f"image {i}"), ("caption_level", "short"),
                               ("bucket_height", int(bh[i])), ("bucket_width", int(bw[i])),
                               ("seq_len", seq_len(int(bh[i]), int(bw[i]), BUCKETS))):
                rows[key].append(value)
    schema = pa.schema([("batch", pa.int64()), ("position", pa.int32()), ("id", pa.string()),
                        ("kind", pa.string()), ("caption", pa.string()), ("caption_level", pa.string()),
                        ("bucket_height", pa.int32()), ("bucket_width", pa.int32()), ("seq_len", pa.int32())])
    meta.update({b"curation.epoch": b"0", b"curation.token_budget": str(BATCH * 256).encode(),
                 b"curation.same_shape": b"true"})
    pq.write_table(pa.table(rows, schema=schema.with_metadata(meta)), out / plan_name(0))


class Baseline(Dataset):
    """The usual map-style dataset: full decode, torchvision resize + centre crop to 256²."""

    def __init__(self, files: list[str]):
        self.files = files
        self.transform = transforms.Compose(
            [transforms.Resize(256), transforms.CenterCrop(256), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB"))


def _rate(loader, count) -> float:
    t0 = time.perf_counter()
    n = sum(count(batch) for batch in loader)
    return n / (time.perf_counter() - t0)


def run(images: int, workers: int, tmpdir: str) -> dict:
    """images/s of ours and of the baseline over the same `images` JPEGs with `workers` workers."""
    export = make_export(Path(tmpdir), images)
    ours = _rate(DataLoader(StageBatches(str(export)), batch_size=None, num_workers=workers),
                 lambda b: len(b["ids"]))
    files = pq.read_table(export / "manifest.parquet", columns=["uri"])["uri"].to_pylist()
    baseline = _rate(DataLoader(Baseline(files), batch_size=BATCH, num_workers=workers), len)
    return {"images": images, "workers": workers, "ours_images_s": ours, "baseline_images_s": baseline,
            "ratio": ours / baseline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tmpdir", default=None, help="where the corpus is kept (default: a fresh temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as fresh:
        r = run(args.images, args.workers, args.tmpdir or fresh)
    per = max(args.workers, 1)
    print(f"{r['images']} images, {r['workers']} workers")
    print(f"  ours (StageBatches, buckets ~256²):       {r['ours_images_s']:7.1f} images/s "
          f"({r['ours_images_s'] / per:.1f} per worker)")
    print(f"  baseline (torchvision Resize+CenterCrop): {r['baseline_images_s']:7.1f} images/s "
          f"({r['baseline_images_s'] / per:.1f} per worker)")
    print(f"  ratio ours / baseline: {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
