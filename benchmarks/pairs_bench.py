"""Edit pairs: the three builders against their baselines, in one process.

1. **Expert graph** (`curation.steps.pairs.graph.build_pairs`): G groups of an original and
   N = 4 edits (the demo's tasks, so inverse and mixed instructions are composed where the edits
   are disjoint) -> every ordered pair, N(N+1) per group, with instructions, tasks, provenance
   and pair ids. Baseline: the obvious loop, `itertools.permutations` per group, the same
   composition rules called per pair, sha256 pair ids, `pa.Table.from_pylist`. Target: pure
   table work at >= 1M pairs/s.
2. **Video frames** (`benchmarks/pairs_video_bench.py`): minutes of 720p video turned into
   pairs per minute on this machine, ours (one decode pass, shot detection, frames sampled
   `interval_s` apart, only those embedded) vs decoding and embedding every frame. Target >= 5x.
3. **Rendered text** (`benchmarks/pairs_render_bench.py`): pairs per second and the share that
   reads back under OCR. Targets: >= 95% Latin, >= 90% CJK at the default sizes.

    .venv/bin/python benchmarks/pairs_bench.py [--groups 10000] [--video-seconds 60] [--render 200]
                                               [--skip-video] [--skip-render]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time

import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from curation.steps.pairs import compose  # noqa: E402
from curation.steps.pairs.graph import build_pairs, members_table  # noqa: E402
from curation.storage import schemas  # noqa: E402

TASKS = [("grayscale", "Make the photo black and white", {}), ("add_border", "Add a red border", {}),
         ("colour_shift", "Shift the colours", {}), ("add_object", "Put a yellow ball in the corner", {"object": "ball"}),
         ("crop_zoom", "Zoom in on the centre", {}), ("blur", "Blur the picture", {})]


def member_rows(groups: int, n: int = 4) -> list[dict]:
    rows = []
    for g in range(groups):
        gid = f"g{g:06d}"
        prov = json.dumps({"generator": "bench", "group": gid})
        rows.append(dict(group_id=gid, id=hashlib.sha256(f"{gid}/o".encode()).hexdigest(), pos=0, language="en",
                         provenance_json=prov))
        for i in range(n):
            task, instruction, params = TASKS[(g + i) % len(TASKS)]
            rows.append(dict(group_id=gid, id=hashlib.sha256(f"{gid}/{i}".encode()).hexdigest(), pos=i + 1, task=task,
                             instruction=instruction, params=params, language="en", provenance_json=prov))
    return rows


def naive_pairs(rows: list[dict]) -> pa.Table:
    """The per-pair loop a script would write."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group_id"], []).append(r)
    out = []
    for gid, members in groups.items():
        members.sort(key=lambda r: r["pos"])
        for a, b in itertools.permutations(members, 2):
            if a["pos"] == 0:
                kind, instruction, tasks = "expert", b["instruction"], [b["task"]]
            elif b["pos"] == 0:
                kind, tasks = "inverse", [a["task"]]
                instruction = compose.inverse_instruction(a["task"], "en", a["params"])
            else:
                kind, tasks = "mixed", [a["task"], b["task"]]
                inv = compose.inverse_instruction(a["task"], "en", a["params"])
                sa, sb = compose.aspects_of(a["task"]), compose.aspects_of(b["task"])
                instruction = (compose.join_steps(inv, b["instruction"], "en")
                               if inv and sa is not None and sb is not None and not sa & sb else None)
            out.append({"pair_id": hashlib.sha256(f"{a['id']}>{b['id']}:{kind}".encode()).hexdigest(),
                        "group_id": gid, "source_id": a["id"], "target_id": b["id"], "kind": kind,
                        "instruction": instruction,
                        "instruction_source": "pending" if instruction is None else
                        ("known" if kind == "expert" else "composed"),
                        "similarity": None, "tasks": tasks, "provenance_json": a["provenance_json"], "error": None})
    return pa.Table.from_pylist(out, schema=schemas.EDIT_PAIRS_SCHEMA)


def bench_experts(groups: int) -> dict:
    rows = member_rows(groups)
    t0 = time.perf_counter()
    members = members_table(rows)
    prep_s = time.perf_counter() - t0
    build_pairs(members.slice(0, 1000))  # warm-up: first-call costs of the Arrow kernels
    ours_s = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        t0 = time.perf_counter()
        ours = build_pairs(members)
        ours_s = min(ours_s, time.perf_counter() - t0)
    t0 = time.perf_counter()
    naive = naive_pairs(rows)
    naive_s = time.perf_counter() - t0
    same = (sorted(zip(ours["source_id"].to_pylist(), ours["target_id"].to_pylist(), ours["instruction"].to_pylist()),
                   key=str) ==
            sorted(zip(naive["source_id"].to_pylist(), naive["target_id"].to_pylist(),
                       naive["instruction"].to_pylist()), key=str))
    return {"groups": groups, "pairs": ours.num_rows, "members_s": prep_s, "ours_s": ours_s, "naive_s": naive_s,
            "ours_pairs_per_s": ours.num_rows / ours_s, "naive_pairs_per_s": naive.num_rows / naive_s,
            "same_pairs_and_instructions": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--video-seconds", type=float, default=60.0)
    ap.add_argument("--render", type=int, default=200)
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--skip-render", action="store_true")
    args = ap.parse_args()

    e = bench_experts(args.groups)
    print(f"expert graph: {e['groups']} groups of N=4 -> {e['pairs']} pairs")
    print(f"  ours  {e['ours_s'] * 1e3:8.1f} ms  {e['ours_pairs_per_s'] / 1e6:6.2f} M pairs/s "
          f"(+ {e['members_s'] * 1e3:.0f} ms building the per-image members table)  target >= 1 M pairs/s: "
          f"{'met' if e['ours_pairs_per_s'] >= 1e6 else 'MISSED'}")
    print(f"  naive {e['naive_s'] * 1e3:8.1f} ms  {e['naive_pairs_per_s'] / 1e6:6.2f} M pairs/s")
    print(f"  ratio {e['ours_pairs_per_s'] / e['naive_pairs_per_s']:.1f}x; same pairs and instructions: "
          f"{e['same_pairs_and_instructions']}")

    if not args.skip_video:
        import pairs_video_bench

        v = pairs_video_bench.run(args.video_seconds)
        print(f"video: {v['video_s']:.0f} s at {v['side'][0]}x{v['side'][1]}, {v['cuts']} cuts")
        for way in ("ours", "naive"):
            s = v[way]
            print(f"  {way:6s} {s['wall_s']:6.1f} s  {s['video_min_per_min']:6.2f} min of video per min  "
                  f"{s['frames_embedded']:5d} frames embedded  {s['pairs']} pairs, {s['pairs_in_band']} in band")
        print(f"  ratio {v['ratio']:.1f}x (target >= 5x)")

    if not args.skip_render:
        import pairs_render_bench

        r = pairs_render_bench.run(args.render)
        print(f"render: {r['attempts']} attempts, {r['rendered']} pairs, rejected {r['rejections'] or 'none'}")
        print(f"  {r['render_pairs_per_s']:.1f} pairs/s rendering, {r['render_verify_pairs_per_s']:.2f} pairs/s "
              "with the OCR read-back (one core)")
        for key, goal in (("en", 0.95), ("zh", 0.90)):
            share, count = r["pass"][key]
            print(f"  OCR read-back {key}: {share:.1%} of {count} (target >= {goal:.0%}: "
                  f"{'met' if share >= goal else 'MISSED'})")


if __name__ == "__main__":
    main()
