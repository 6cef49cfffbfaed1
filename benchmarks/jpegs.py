"""Generated benchmark JPEGs, kept between runs (one folder per count, size and quality)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def cached_jpegs(root: Path, n: int, megapixels: tuple[float, float], quality: int = 90) -> list[Path]:
    """n photo-like JPEGs of `megapixels` (1e6 px) under `root`, generated once (seed 0)."""
    from curation.demo import write_jpegs

    out = Path(root) / f"jpegs-{n}-{megapixels[0]:g}-{megapixels[1]:g}mp-q{quality}"
    files = sorted(out.glob("*.jpg")) if out.exists() else []
    if len(files) != n:
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        files = sorted(write_jpegs(out, n, megapixels=megapixels, seed=0, quality=quality))
        size = sum(f.stat().st_size for f in files) / max(n, 1) / 1024
        print(f"generated {n} JPEGs of {megapixels[0]:g}-{megapixels[1]:g} MP ({size:.0f} KB each) "
              f"in {time.perf_counter() - t0:.0f}s")
    return files
