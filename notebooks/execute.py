"""Re-execute the notebooks on a fresh demo lake and save them with their outputs (plots
included), so they read as examples on any code host without running them.

    .venv/bin/python notebooks/execute.py [--workdir /tmp/curate-notebooks] [--images 120]
    .venv/bin/python notebooks/execute.py --lake /tmp/demo1/lake --only 05_edit_pairs

It runs `curate demo` into WORKDIR (generated corpus, local Ray, local lake), then executes
every `notebooks/NN_*.ipynb` top to bottom against that lake and writes it back in place. A
notebook that raises stops the script (exit 1) and is not written. `--lake` uses a lake a
finished `curate demo` made instead of running one; `--only` executes just the notebooks named
(file name, with or without `.ipynb`; repeatable). The test suite executes the
same notebooks on its own demo lake (`tests/test_notebooks.py`) without touching these files.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
# What each notebook reads from the environment (see its first cell).
ENV = {"01_profile_explore.ipynb": {"CURATE_STAGE": "lowres"}}


def run_demo(workdir: Path, images: int) -> Path:
    env = dict(os.environ, CURATE_PROGRESS="0", RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([sys.executable, "-m", "curation.cli.main", "demo", "--workdir", str(workdir),
                    "--images", str(images)], check=True, env=env, cwd=HERE.parent,
                   stdout=subprocess.DEVNULL)
    return workdir / "lake"


def execute(path: Path, lake: Path) -> int:
    """Execute one notebook in place; returns the number of images it shows."""
    os.environ.update({"CURATE_LAKE": str(lake), **ENV.get(path.name, {})})
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    nbformat.write(nb, path)
    return sum("image/png" in o.get("data", {}) for o in outputs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/curate-notebooks", help="where the demo corpus and lake go")
    ap.add_argument("--images", type=int, default=120, help="demo images (as `curate demo --images`)")
    ap.add_argument("--lake", help="a finished demo lake to run against (no `curate demo` run)")
    ap.add_argument("--only", action="append", metavar="NAME", help="execute only this notebook (repeatable)")
    args = ap.parse_args()
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        wanted = {n if n.endswith(".ipynb") else f"{n}.ipynb" for n in args.only}
        unknown = wanted - {p.name for p in paths}
        if unknown:
            ap.error(f"no such notebook: {', '.join(sorted(unknown))}")
        paths = [p for p in paths if p.name in wanted]
    t0 = time.perf_counter()
    if args.lake:
        lake = Path(args.lake).resolve()
        if not lake.is_dir():
            ap.error(f"--lake {args.lake}: no such directory")
    else:
        lake = run_demo(Path(args.workdir).resolve(), args.images)
    print(f"demo lake: {lake} ({time.perf_counter() - t0:.0f}s)")
    for path in paths:
        t1 = time.perf_counter()
        try:
            images = execute(path, lake)
        except Exception as exc:  # report which notebook failed, leave it unwritten
            print(f"{path.name}: FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"{path.name}: executed, {images} plot(s) ({time.perf_counter() - t1:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
