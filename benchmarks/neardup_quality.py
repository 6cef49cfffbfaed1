"""Near-duplicate quality on real photos: pair recall per edit kind and pair precision, per method.

    .venv/bin/python benchmarks/neardup_quality.py [--method NAME ...] [--detail] [--sweep]
                                                   [--max-side 768] [--seed 0]

The set: the 24 photos of `neardup_data.real_photos` (photos shipped in PyPI wheels; needs the
`test` extra's scikit-image) and, for each, the 22 copies of `neardup_data.edited_copies`: 552
items, each encoded as a JPEG at quality 90, so every method reads files as the pipeline does.

A method maps the list of JPEG files to one group label per item (items sharing a label are
predicted near-duplicates): `METHODS[name] = fn`, one line, adds one.

- pair recall of an edit kind: the fraction of (original, copy of that kind) pairs put in one
  group; overall: the same over all (original, copy) pairs;
- pair precision: true pairs among all pairs predicted in one group, where a pair is true when
  both items derive from the same photo (original-copy and copy-copy pairs alike). The halves of
  one source photo are different photos: grouping them is a false pair.

--detail adds recall per variant (e.g. rotate "inner crop +"); --sweep prints, for each pHash
function, recall and precision at Hamming distances 0..16 instead of the method table.

Baselines (seed 0, 2-core machine, about 2 s a method, 10 s a run):

    method               reencode resize crop border rotate bright/contr overlay recall precision
    phash d4 (old)           1.00   1.00 0.02   0.11   0.15         1.00    0.83   0.53      1.00
    imagehash.phash d10      1.00   1.00 0.43   0.61   0.64         1.00    0.96   0.77      1.00
    combined (new)           1.00   1.00 0.74   0.97   0.79         1.00    1.00   0.91      1.00
"combined" is the profile stage's `phash` + `nearhash` columns (computed as the stage does, from
the grey view at longer side 512) grouped by `neardup.near_duplicate_labels` with the default
NearDupConfig (pHash 4 bits; window hashes: one pair within 8 bits or two within 10).
Our pHash equals imagehash.phash on all 552 files, so these differ only in distance. Precision
stays 1.00 up to distance 15 and falls to 0.59 at 16: the closest items of different photos are
16 bits apart (seed 1: 12, two white-matted copies, yet precision still rounds to 1.00 at 14; a
frame pulls unrelated hashes together). Originals are >= 22 bits apart (median 32). Seed 1's
recall is within 0.04 of these. Corner crops are the hardest edit (d10: 4-21% found, centred
crops 71-75%).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import pyarrow as pa  # noqa: E402

from curation.steps.export.neardup import NearDupConfig, near_duplicate_groups, near_duplicate_labels  # noqa: E402
from neardup_data import EDIT_KINDS, edited_copies, real_photos  # noqa: E402
from operators.nearhash import FRAME_COLUMNS, HASH_COLUMNS, VIEW_SIDE, near_hashes  # noqa: E402
from operators.phash import phash_from_luma  # noqa: E402

ORIGINAL = "original"
JPEG_QUALITY = 90  # how every item is stored: a typical web / pipeline file, not lossless
SWEEP_DISTANCES = range(17)  # near_duplicate_groups accepts 0..16 bits

Method = Callable[[list[bytes]], np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """Items (originals and copies) as JPEG files, with where each one came from."""

    blobs: list[bytes]
    photo: np.ndarray  # int64 per item: index into names of the photo it derives from
    kind: np.ndarray  # str per item: ORIGINAL or an edit kind
    variant: np.ndarray  # str per item: the copy's variant name, "" for originals
    names: list[str]  # one per photo


def build_set(max_side: int, seed: int) -> EvalSet:
    """Every photo followed by its copies; copies of photo i use seed `seed * 1000 + i`."""
    blobs, photo, kind, variant = [], [], [], []
    photos = real_photos(max_side)
    for i, (_, img) in enumerate(photos):
        items = [(ORIGINAL, img)] + [(k, c) for k, copies in edited_copies(img, seed * 1000 + i).items()
                                     for c in copies]
        for k, item in items:
            blobs.append(_jpeg_bytes(item))
            photo.append(i)
            kind.append(k)
            variant.append(item.info.get("variant", "") if k != ORIGINAL else "")
    return EvalSet(blobs, np.array(photo, dtype=np.int64), np.array(kind), np.array(variant),
                   [name for name, _ in photos])


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _open(blob: bytes) -> Image.Image:
    return Image.open(io.BytesIO(blob))


def phash_ours(blobs: list[bytes]) -> np.ndarray:
    """Our pHash of each full-size decoded file, uint64[n] (bit-compatible with imagehash)."""
    return np.array([phash_from_luma(_open(b)) for b in blobs], dtype=np.uint64)


def phash_imagehash(blobs: list[bytes]) -> np.ndarray:
    """imagehash.phash of each file as uint64[n], bit order int(str(hash), 16)."""
    return np.array([int(str(imagehash.phash(_open(b))), 16) for b in blobs], dtype=np.uint64)


def hash_groups(hasher: Callable[[list[bytes]], np.ndarray], max_distance: int) -> Method:
    """A method: hash every file, then group by Hamming distance <= max_distance (transitively)."""
    return lambda blobs: near_duplicate_groups(hasher(blobs), max_distance)


HASHERS = {"phash": phash_ours, "imagehash.phash": phash_imagehash}


def profile_signals(blobs: list[bytes]) -> pa.Table:
    """What the profile stage stores per file: `phash` and the `nearhash` columns, computed as
    its operators do, from the grey view at longer side 512 (area filter) of the decode."""
    rows = []
    for blob in blobs:
        img = _open(blob)
        img.draft("RGB", (VIEW_SIDE, VIEW_SIDE))  # the stage's reduced JPEG decode
        img = img.convert("RGB")
        scale = VIEW_SIDE / max(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BOX, reducing_gap=2.0)
        view = img.convert("L")
        rows.append({"phash": phash_from_luma(view), **near_hashes(view)})
    return pa.Table.from_pylist(rows, schema=pa.schema(
        [("phash", pa.uint64())] + [(c, pa.float32()) for c in FRAME_COLUMNS] + [(c, pa.uint64()) for c in HASH_COLUMNS]))


def combined(cfg: NearDupConfig) -> Method:
    """The profile signals grouped by the one near-duplicate decision export and dedup use."""
    return lambda blobs: near_duplicate_labels(profile_signals(blobs), cfg)


METHODS: dict[str, Method] = {
    "phash d4 (old)": hash_groups(phash_ours, 4),
    "imagehash.phash d10": hash_groups(phash_imagehash, 10),
    "combined (new)": combined(NearDupConfig()),
}


def _pairs_within(keys: np.ndarray) -> int:
    """Number of unordered pairs of items that share a key."""
    counts = np.unique(keys, return_counts=True)[1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _with_original(labels: np.ndarray, data: EvalSet) -> np.ndarray:
    """bool per item: it has the label of its photo's original (True for originals)."""
    originals = np.flatnonzero(data.kind == ORIGINAL)
    original_of_photo = originals[np.argsort(data.photo[originals])]
    return labels == labels[original_of_photo[data.photo]]


@dataclass(frozen=True)
class Score:
    recall: dict[str, float]  # per edit kind, and "all" over every (original, copy) pair
    precision: float  # nan when no pair was predicted
    predicted_pairs: int


def score(labels: np.ndarray, data: EvalSet) -> Score:
    """Pair recall per edit kind and overall, pair precision (definitions in the module doc)."""
    labels = np.asarray(labels, dtype=np.int64)
    hit = _with_original(labels, data)
    recall = {k: float(hit[data.kind == k].mean()) for k in EDIT_KINDS}
    recall["all"] = float(hit[data.kind != ORIGINAL].mean())
    predicted = _pairs_within(labels)
    # Encode (group, photo) as one key: pairs inside a group that also share the photo are true.
    _, group = np.unique(labels, return_inverse=True)
    true_predicted = _pairs_within(group.reshape(-1) * len(data.names) + data.photo)
    precision = true_predicted / predicted if predicted else float("nan")
    return Score(recall, precision, predicted)


def _variant_recall(labels: np.ndarray, data: EvalSet) -> dict[tuple[str, str], float]:
    """Pair recall per (edit kind, variant name), in the order the variants appear."""
    hit = _with_original(labels, data)
    is_copy = data.kind != ORIGINAL
    keys = dict.fromkeys(zip(data.kind[is_copy], data.variant[is_copy], strict=True))
    return {(k, v): float(hit[(data.kind == k) & (data.variant == v)].mean()) for k, v in keys}


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _header(data: EvalSet) -> str:
    n = len(data.blobs)
    copies = int((data.kind != ORIGINAL).sum())
    true_pairs = _pairs_within(data.photo)
    return (f"{len(data.names)} photos, {copies} copies ({copies // len(data.names)} per photo), "
            f"{n} items; {n * (n - 1) // 2} pairs, {true_pairs} true, "
            f"{copies} original-copy pairs scored for recall")


def print_methods(data: EvalSet, names: list[str], detail: bool) -> None:
    """The method table (recall per kind, overall, precision, seconds), then per-variant recall."""
    short = {"brightness_contrast": "bright/contr"}
    cols = [short.get(k, k) for k in EDIT_KINDS] + ["recall", "precision", "pred pairs", "s"]
    width = max(len(n) for n in names) + 2
    print(_header(data))
    print("recall per edit kind = (original, copy) pairs found / all of that kind\n")
    print(f"{'method':<{width}}" + "".join(f"{c:>13}" for c in cols))
    variant_rows = {}
    for name in names:
        t0 = time.perf_counter()
        labels = METHODS[name](data.blobs)
        seconds = time.perf_counter() - t0
        s = score(labels, data)
        cells = [_fmt(s.recall[k]) for k in EDIT_KINDS] + [
            _fmt(s.recall["all"]), _fmt(s.precision), str(s.predicted_pairs), f"{seconds:.1f}"]
        print(f"{name:<{width}}" + "".join(f"{c:>13}" for c in cells))
        variant_rows[name] = _variant_recall(labels, data)
    if detail:
        _print_variants(variant_rows, len(data.names))


def _print_variants(rows: dict[str, dict[tuple[str, str], float]], n_photos: int) -> None:
    print(f"\nrecall per variant (each over {n_photos} photos, parameters drawn per photo)")
    keys = next(iter(rows.values()))
    width = max(len(f"{k}: {v}") for k, v in keys) + 2
    print(f"{'variant':<{width}}" + "".join(f"{n:>22}" for n in rows))
    for k, v in keys:
        print(f"{k + ': ' + v:<{width}}" + "".join(f"{_fmt(r[(k, v)]):>22}" for r in rows.values()))


def _closest_distinct(hashes: np.ndarray, data: EvalSet) -> str:
    """The smallest Hamming distance between items of different photos, and one such pair.

    Every pHash has exactly 32 of 64 bits set (bits are "above the median" of 64 values), so all
    distances are even and an odd threshold groups exactly as the even one below it.
    """
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
    dist[data.photo[:, None] == data.photo[None, :]] = 65  # more than any 64-bit distance
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    return (f"closest items of different photos {dist[i, j]} bits apart: "
            f"{_describe(data, i)} vs {_describe(data, j)}")


def _describe(data: EvalSet, item: int) -> str:
    """"photo name (kind variant)" of one item."""
    return f"{data.names[data.photo[item]]} ({data.kind[item]} {data.variant[item]})".replace(" )", ")")


def print_sweep(data: EvalSet) -> None:
    """Recall per kind, overall recall and precision at each Hamming distance, per pHash function."""
    print(_header(data))
    seen: dict[str, np.ndarray] = {}
    for hname, hasher in HASHERS.items():
        hashes = hasher(data.blobs)
        same = [other for other, h in seen.items() if np.array_equal(h, hashes)]
        seen[hname] = hashes
        if same:
            print(f"\n{hname}: the same hashes as {same[0]} on every item, so the same table")
            continue
        print(f"\n{hname}: {_closest_distinct(hashes, data)}\n{'d':>3}" + "".join(f"{k[:12]:>13}" for k in EDIT_KINDS)
              + f"{'recall':>9}{'precision':>10}{'pred pairs':>11}")
        for d in SWEEP_DISTANCES:
            s = score(near_duplicate_groups(hashes, d), data)
            print(f"{d:>3}" + "".join(f"{_fmt(s.recall[k]):>13}" for k in EDIT_KINDS)
                  + f"{_fmt(s.recall['all']):>9}{_fmt(s.precision):>10}{s.predicted_pairs:>11}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", action="append", choices=sorted(METHODS),
                        help="run only this method (repeatable); default: all")
    parser.add_argument("--detail", action="store_true", help="also print recall per variant")
    parser.add_argument("--sweep", action="store_true",
                        help="recall/precision of the pHash functions at distances 0..16 instead")
    parser.add_argument("--max-side", type=int, default=768, help="photos' long side cap, px")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits' parameters")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = build_set(args.max_side, args.seed)
    print(f"built the set in {time.perf_counter() - t0:.1f}s")
    if args.sweep:
        print_sweep(data)
    else:
        print_methods(data, args.method or list(METHODS), args.detail)


if __name__ == "__main__":
    main()
