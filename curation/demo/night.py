"""The demo's second night: a small batch that lands after the first curation, and the spec
that folds it in with `curate nightly`.

The batch (`write_second_batch`) holds what a real day brings:
- new images (photo-like, with English caption sidecars);
- byte-identical copies of images already in the lake (ingest records the extra uri on the
  existing item; nothing new is profiled or embedded);
- larger re-encodes of items the first run kept: the dedup's keep rule prefers more pixels,
  so each one takes over its group and the item kept before becomes a duplicate (the run's
  report lists these kept -> duplicate changes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from curation.demo.captions import make_caption
from curation.demo.images import photo_like, save_image

__all__ = ["write_second_batch", "night_spec"]


def write_second_batch(lake, out_dir: str | Path, *, n_new: int = 6, n_copies: int = 3, n_larger: int = 2,
                       seed: int = 1) -> dict[str, list[str]]:
    """Write the batch to `out_dir` (must not exist; written beside it, then renamed, so a
    crash never leaves half a batch) from the first run's `lake`; returns what was planted:
    file names per kind, and `replaced`, the ids whose keep decision the larger copies flip."""
    from curation.storage.schemas import DEDUP, POOL

    final = Path(out_dir)
    if final.exists():
        raise ValueError(f"{final} exists already: the second batch needs a new folder")
    out = final.with_name(f".{final.name}.partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    planted: dict[str, list[str]] = {"new": [], "copies": [], "larger": [], "replaced": []}
    for i in range(n_new):
        r = np.random.default_rng([seed, 10_000 + i])
        w, h = (int(x) for x in r.integers(512, 1024, size=2))
        path = save_image(photo_like(r, w, h), out / f"night_{i:03d}.jpg")
        path.with_suffix(".txt").write_text(make_caption(r).en, encoding="utf-8")
        planted["new"].append(path.name)

    pool = lake.read(POOL, columns=["id", "uris", "error"])
    files = {i: next((u for u in uris or [] if Path(u).is_file()), None)
             for i, uris, err in zip(pool["id"].to_pylist(), pool["uris"].to_pylist(), pool["error"].to_pylist())
             if err is None}
    decided = lake.read(DEDUP, columns=["id", "keep", "group_size"]).sort_by("id").to_pylist()
    singles = [r["id"] for r in decided if r["keep"] and r["group_size"] == 1 and files.get(r["id"])
               and Path(files[r["id"]]).suffix.lower() in (".jpg", ".jpeg", ".png")]
    for k, i in enumerate(singles[:n_copies]):
        src = Path(files[i])
        dst = out / f"resaved_{k:03d}{src.suffix}"
        dst.write_bytes(src.read_bytes())
        planted["copies"].append(dst.name)
    for k, i in enumerate(singles[n_copies:n_copies + n_larger]):
        with Image.open(files[i]) as img:
            big = img.convert("RGB").resize((round(img.width * 1.25), round(img.height * 1.25)),
                                            Image.Resampling.LANCZOS)
        path = save_image(big, out / f"hires_{k:03d}.jpg", quality=95)
        planted["larger"].append(path.name)
        planted["replaced"].append(i)
    out.rename(final)
    return planted


def night_spec(spec, source: str, run_id: str):
    """The demo spec for the second night: ingest `source`, then profile, OCR, score,
    incremental dedup and weights, and the lowres export, as nightly run `run_id`."""
    from curation.config.spec import StepSpec
    from curation.config.typed import override

    # the demo's pool grows ~5% in one night, so the idf may move that much (a real pool: ~1%)
    night = override(spec, {"dedup.mode": "incremental", "kg.weights.mode": "incremental",
                            "kg.weights.idf_tolerance": 0.05, "nightly.run_id": run_id})
    export = next(s for s in spec.steps if s.step == "export" and s.stage == "lowres")
    night.steps = [StepSpec("ingest", source=source, name="night-2"), StepSpec("profile"), StepSpec("ocr"),
                   StepSpec("score"), StepSpec("dedup"), StepSpec("kg-weights"),
                   StepSpec("export", stage="lowres", out=export.out, skip_unchanged=True)]
    return night
