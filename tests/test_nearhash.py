"""Near duplicates that survive frames, crops and small rotations: the `nearhash` operator on
real photos (shipped in scikit-image's wheel) and the one decision export and dedup use."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageOps

from curation.steps.export.neardup import NearDupConfig, mark_near_duplicates, near_duplicate_labels, window_links
from curation.steps.profiling.profile import ProfileRunner
from operators.nearhash import FRAME_COLUMNS, HASH_COLUMNS, frame_box, near_hashes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
neardup_data = pytest.importorskip("neardup_data")


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage")
    return neardup_data.real_photos(max_side=512)


def _profile(images: list[Image.Image], tmp_path: Path) -> pa.Table:
    """phash + nearhash through the profile stage's runner, from JPEG files."""
    uris = []
    for i, img in enumerate(images):
        path = tmp_path / f"{i:04d}.jpg"
        img.convert("RGB").save(path, "JPEG", quality=90)
        uris.append(str(path))
    table = pa.table({"id": [f"{i:04d}" for i in range(len(uris))], "uri": uris})
    out = ProfileRunner(["phash", "nearhash"])(table)
    assert out["error"].null_count == out.num_rows
    return out.sort_by("id")


def test_frame_box_finds_mats_bars_and_frames(photos):
    _, photo = photos[0]
    grey = photo.convert("L")
    w, h = grey.size
    cases = {
        "white mat": (ImageOps.expand(grey, border=(30, 20, 30, 20), fill=255), (30, 20, 30, 20)),
        "letterbox": (ImageOps.expand(grey, border=(0, 40, 0, 40), fill=0), (0, 40, 0, 40)),
        "grey frame": (ImageOps.expand(grey, border=12, fill=128), (12, 12, 12, 12)),
        "none": (grey, (0, 0, 0, 0)),
    }
    for name, (img, expected) in cases.items():
        found = frame_box(np.asarray(img))
        assert all(abs(f - e) <= 2 for f, e in zip(found, expected)), (name, found, expected)
    fractions = near_hashes(cases["white mat"][0])
    assert abs(fractions["frame_left"] - 30 / (w + 60)) < 0.02 and abs(fractions["frame_top"] - 20 / (h + 40)) < 0.02


def test_flat_windows_get_no_hash():
    out = near_hashes(Image.new("L", (300, 200), 200))
    assert all(out[c] is None for c in HASH_COLUMNS)
    sky = Image.new("L", (300, 200), 30)  # flat but for a textured strip along the bottom
    sky.paste(Image.effect_noise((300, 16), 60), (0, 184))
    out = near_hashes(sky)
    assert out["frame_top"] == pytest.approx(0.3, abs=0.02)  # flat rows count as frame, up to 30 %
    assert out["nh_full"] is not None and out["nh_tl"] is None and out["nh_tr"] is None


def test_every_edit_kind_is_grouped_and_distinct_photos_are_not(photos, tmp_path):
    chosen = photos[:6]
    images, photo_of, kind_of = [], [], []
    for i, (_, img) in enumerate(chosen):
        images.append(img)
        photo_of.append(i)
        kind_of.append("original")
        for kind, copies in neardup_data.edited_copies(img, seed=i).items():
            images.extend(copies)
            photo_of.extend([i] * len(copies))
            kind_of.extend([kind] * len(copies))
    table = _profile(images, tmp_path)
    assert set(HASH_COLUMNS + FRAME_COLUMNS) <= set(table.column_names)
    labels = near_duplicate_labels(table, NearDupConfig())
    photo_of, kind_of = np.array(photo_of), np.array(kind_of)
    original = {p: labels[np.flatnonzero((photo_of == p) & (kind_of == "original"))[0]] for p in range(len(chosen))}
    # precision: no group spans two photos
    for label in np.unique(labels):
        assert len(set(photo_of[labels == label])) == 1
    recall = {}
    for kind in neardup_data.EDIT_KINDS:
        rows = np.flatnonzero(kind_of == kind)
        recall[kind] = np.mean([labels[r] == original[photo_of[r]] for r in rows])
    assert min(recall.values()) >= 0.6 and np.mean(list(recall.values())) >= 0.8, recall
    for kind in ("reencode", "resize", "border", "brightness_contrast"):
        assert recall[kind] == 1.0, recall
    # the old decision (pHash only) misses the framed copies the new one finds
    old = near_duplicate_labels(table, NearDupConfig(windows=False))
    border = np.flatnonzero(kind_of == "border")
    assert np.mean([old[r] == old[np.flatnonzero((photo_of == photo_of[r]) & (kind_of == "original"))[0]]
                    for r in border]) < recall["border"]


def test_export_decision_drops_the_framed_copy(photos, tmp_path):
    _, img = photos[1]
    framed = ImageOps.expand(img, border=int(0.06 * img.width), fill="white")
    other = photos[2][1]
    table = _profile([img, framed, other], tmp_path)
    table = table.append_column("width", pa.array([img.width, framed.width, other.width], pa.int32()))
    table = table.append_column("height", pa.array([img.height, framed.height, other.height], pa.int32()))
    marks = mark_near_duplicates(table, NearDupConfig(keep_by=["pixels desc"]))
    assert marks["phash_group"].to_pylist() == ["0001", "0001", "0002"]
    assert marks["phash_keep"].to_pylist() == [False, True, True]  # the larger file is kept
    off = mark_near_duplicates(table, NearDupConfig(windows=False, keep_by=["pixels desc"]))
    assert off["phash_keep"].to_pylist() == [True, True, True]


def _flip(h: int, positions) -> int:
    """h with the bits at `positions` (0 = most significant) flipped: high frequencies only
    (rows 5-7), which no coarse key includes, so the pair stays a candidate."""
    for p in positions:
        h ^= 1 << (63 - p)
    return h


def test_window_links_verification():
    """One window relation counts when within the strict distance; beyond it (and within the
    window distance) only when a second, different relation agrees; nothing beyond it."""
    rng = np.random.default_rng(3)
    rand = lambda: int(rng.integers(0, 2**63)) << 1  # noqa: E731
    far = list(range(40, 64))  # row 5 onwards: outside every coarse key
    rows = []
    # 0-1: B's whole image is A's top-left window, 6 bits apart (strict): linked
    a = {c: rand() for c in HASH_COLUMNS}
    rows += [a, {**{c: rand() for c in HASH_COLUMNS}, "nh_full": _flip(a["nh_tl"], far[:6])}]
    # 2-3: one relation 10 bits apart: not linked
    c = {col: rand() for col in HASH_COLUMNS}
    rows += [c, {**{col: rand() for col in HASH_COLUMNS}, "nh_full": _flip(c["nh_tl"], far[:10])}]
    # 4-5: two relations 10 bits apart (whole to top-left, 85 % centre to 70 % centre): linked
    e = {col: rand() for col in HASH_COLUMNS}
    rows += [e, {**{col: rand() for col in HASH_COLUMNS}, "nh_full": _flip(e["nh_tl"], far[:10]),
                 "nh_c70": _flip(e["nh_c85"], far[10:20])}]
    # 6-7: 12 bits apart on every window: beyond the window distance
    g = {col: rand() for col in HASH_COLUMNS}
    rows += [g, {col: _flip(v, far[:12]) for col, v in g.items()}]
    table = pa.Table.from_pylist(rows, schema=pa.schema([(col, pa.uint64()) for col in HASH_COLUMNS]))
    labels = near_duplicate_labels(table, NearDupConfig(window_distance=10, window_strict_distance=8))
    assert labels.tolist() == [0, 0, 2, 3, 4, 4, 6, 7]
    looser = near_duplicate_labels(table, NearDupConfig(window_distance=10, window_strict_distance=10))
    assert looser.tolist() == [0, 0, 2, 2, 4, 4, 6, 7]
    a_rows, b_rows = window_links(table, 12, strict_distance=12)
    assert {(int(x), int(y)) for x, y in zip(a_rows, b_rows)} == {(0, 1), (2, 3), (4, 5), (6, 7)}


def test_halves_of_one_photo_stay_apart(photos, tmp_path):
    """Different photos with the same look (the two halves of one shot: same colours, light and
    texture), each with its framed, cropped and rotated copies, are never merged."""
    halves = [(name, img) for name, img in photos if "#" in name]
    assert len(halves) >= 4
    images, photo_of = [], []
    for i, (_, img) in enumerate(halves):
        copies = neardup_data.edited_copies(img, seed=100 + i)
        for item in [img] + copies["border"] + copies["crop"] + copies["rotate"]:
            images.append(item)
            photo_of.append(i)
    labels = near_duplicate_labels(_profile(images, tmp_path), NearDupConfig())
    photo_of = np.array(photo_of)
    for label in np.unique(labels):
        assert len(set(photo_of[labels == label])) == 1
    assert len(np.unique(labels)) < len(images)  # copies were grouped with their half
