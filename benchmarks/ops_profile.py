"""Cost of the profiling operators on one core, against a plain full RGB decode.

    .venv/bin/python benchmarks/ops_profile.py --n 40

Fused: one `open_item` with the union plan of all default operators, then every operator on the
same item (views are shared, so a view's cost lands on the first operator that asks for it).
Isolated: each operator on a fresh, already-decoded item (its own views, decode excluded).
The target is fused >= 0.5x the rate of `Image.open(f).convert("RGB")`.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from operators.decode import open_item, plan_for  # noqa: E402
from operators.registry import DEFAULT_PROFILE_OPERATORS, get_operator  # noqa: E402
from phash_agreement import synth_jpegs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--megapixels", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    args = parser.parse_args()

    corpus = synth_jpegs(args.n, seed=1, megapixels=(args.megapixels, args.megapixels))
    ops = [get_operator(name)() for name in DEFAULT_PROFILE_OPERATORS]
    plan = plan_for(op.need for op in ops)

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) / len(corpus)

    decode_only = best(lambda: [Image.open(io.BytesIO(d)).convert("RGB") for d in corpus])

    fused_parts = {"open_item (decode)": [], **{op.name: [] for op in ops}}

    def fused() -> None:
        for key in fused_parts:
            fused_parts[key].clear()
        for d in corpus:
            t0 = time.perf_counter()
            item = open_item(d, plan)
            t1 = time.perf_counter()
            fused_parts["open_item (decode)"].append(t1 - t0)
            for op in ops:
                op.compute(item)
                t2 = time.perf_counter()
                fused_parts[op.name].append(t2 - t1)
                t1 = t2

    fused_total = best(fused)
    items = [open_item(d, plan) for d in corpus]
    isolated = {}
    for op in ops:
        fresh = [open_item(d, plan) for d in corpus]
        start = time.perf_counter()
        for item in fresh:
            op.compute(item)
        isolated[op.name] = (time.perf_counter() - start) / len(corpus)
    del items

    print(f"{len(corpus)} JPEGs of {args.megapixels} MP, {np.mean([len(d) for d in corpus]) / 1e3:.0f} kB mean; "
          f"plan {plan}")
    print(f"{'step':22s} {'fused ms':>9s} {'isolated ms':>12s}")
    for key, values in fused_parts.items():
        iso = f"{isolated[key] * 1e3:12.2f}" if key in isolated else f"{'':12s}"
        print(f"{key:22s} {np.mean(values) * 1e3:9.2f} {iso}")
    print(f"fused total {fused_total * 1e3:.2f} ms/img ({1 / fused_total:.0f} img/s); "
          f"full RGB decode {decode_only * 1e3:.2f} ms/img ({1 / decode_only:.0f} img/s); "
          f"ratio {decode_only / fused_total:.2f}x the decode-only rate")


if __name__ == "__main__":
    main()
