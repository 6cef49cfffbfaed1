"""Synthetic data generator: determinism, planted ground truth, bad inputs, source layouts."""

from __future__ import annotations

import io
import json
import tarfile
from itertools import combinations
from pathlib import Path

import imagehash
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.demo import (
    BAD_WRITERS, DEFECTS, NEAR_DUPLICATE_MAKERS, QUALITY_KEY, encode, make_demo_corpus, photo_like,
    write_bad_inputs, write_jpegs, write_source_table, write_webdataset,
)
from curation.demo.oddities import HUGE_SIDE, INVALID_UTF8, LONG_CAPTION_CHARS


def _phash(path_or_img) -> imagehash.ImageHash:
    im = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    return imagehash.phash(ImageOps.exif_transpose(im).convert("RGB"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _laplacian_var(im: Image.Image) -> float:
    a = np.asarray(im.convert("L"), dtype=np.float32)
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(lap.var())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_demo_corpus(tmp_path_factory.mktemp("corpus"), n_images=120, seed=0)


# ---- images ------------------------------------------------------------------------------------

def test_photo_like_is_deterministic_and_varied():
    a = photo_like(np.random.default_rng(7), 640, 480)
    b = photo_like(np.random.default_rng(7), 640, 480)
    assert a.mode == "RGB" and a.size == (640, 480)
    assert encode(a, "JPEG") == encode(b, "JPEG")
    hashes = [_phash(photo_like(np.random.default_rng(s), 512, 384)) for s in range(12)]
    dists = [x - y for x, y in combinations(hashes, 2)]
    assert np.mean(dists) >= 14 and min(dists) >= 6


def test_defects_have_their_property():
    rng = np.random.default_rng(3)
    img = photo_like(rng, 800, 600)
    base = np.asarray(img, dtype=np.float32)
    out = {name: f(img, np.random.default_rng(1)) for name, f in DEFECTS.items()}
    assert _laplacian_var(out["blur"]) < 0.05 * _laplacian_var(img)
    assert 20 < np.std(np.asarray(out["noise"], dtype=np.float32) - base) < 30
    fr = np.asarray(out["frame"], dtype=np.float32)
    border = round(0.11 * 600)
    assert fr[:border].std(axis=(0, 1)).max() < 1 and fr[:, -border:].std(axis=(0, 1)).max() < 1
    flat = np.asarray(out["flat"], dtype=np.float32)
    assert np.median(np.abs(flat - np.median(flat, axis=(0, 1)))) < 3
    cast = np.asarray(out["color_cast"], dtype=np.float32).mean(axis=(0, 1))
    assert cast.max() - cast.min() > 60
    assert out["blocky"].info[QUALITY_KEY] == 5
    q = Image.open(io.BytesIO(encode(out["blocky"], "JPEG", 95))).quantization
    assert np.mean(q[0]) > 100  # quality-5 tables, not the 95 asked for
    assert out["low_res"].size == (96, 72)
    assert out["extreme_aspect"].size == (2000, 150)


def test_near_duplicate_makers_stay_close():
    for seed in range(6):
        img = photo_like(np.random.default_rng(seed), 700, 500)
        h0 = _phash(Image.open(io.BytesIO(encode(img, "JPEG"))))
        for name, make in NEAR_DUPLICATE_MAKERS.items():
            copy = Image.open(io.BytesIO(encode(make(img, np.random.default_rng(0)), "JPEG")))
            assert h0 - _phash(copy) <= (6 if name == "cropped" else 4), name


def test_write_jpegs(tmp_path):
    paths = write_jpegs(tmp_path / "a", 3, megapixels=(0.2, 0.3), seed=5)
    again = write_jpegs(tmp_path / "b", 2, megapixels=(0.2, 0.3), seed=5)
    assert [p.name for p in paths] == ["img_000000.jpg", "img_000001.jpg", "img_000002.jpg"]
    assert [p.read_bytes() for p in paths[:2]] == [p.read_bytes() for p in again]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and 0.19e6 <= im.width * im.height <= 0.31e6


# ---- corpus ------------------------------------------------------------------------------------

def test_corpus_planted_categories(corpus):
    expected = set(DEFECTS) | {
        "clean", "grayscale", "palette_transparency", "rgba", "png16", "cmyk", "animated_gif",
        "animated_webp", "exif_rotated", "tiny_1x1", "near_duplicate_copies", "exact_duplicate_copies",
        "unicode_names", "caption_json", "caption_zh", "caption_missing", "caption_empty",
        "caption_invalid_utf8", "caption_long"}
    assert expected <= set(corpus.planted)
    for name in DEFECTS:
        assert len(corpus.planted[name]) == 7  # round(0.06 * 120)
    assert len(corpus.planted["exif_rotated"]) == 3
    rels = {p.relative_to(corpus.root).as_posix() for p in corpus.files}
    for paths in corpus.planted.values():
        assert set(paths) <= rels
    assert set(corpus.bad_files) == set(BAD_WRITERS) and set(corpus.bad_files.values()) <= rels
    assert any(p.stem == "café 東京" for p in corpus.files)
    assert any(len(p.relative_to(corpus.root).parts) >= 4 for p in corpus.files)  # nested folders
    exts = {p.suffix.lower() for p in corpus.files}
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif"} <= exts


def test_corpus_defects_on_disk(corpus):
    def opened(rel):
        return Image.open(corpus.root / rel)
    assert all(opened(r).size in ((96, 72), (72, 96)) for r in corpus.planted["low_res"])
    assert all(opened(r).size == (2000, 150) for r in corpus.planted["extreme_aspect"])
    for r in corpus.planted["blocky"]:
        assert r.lower().endswith(".jpg") and np.mean(opened(r).quantization[0]) > 100
    for r in corpus.files:
        rel = r.relative_to(corpus.root).as_posix()
        small = corpus.planted["low_res"] + corpus.planted["tiny_1x1"] + corpus.planted["near_duplicate_copies"]
        if rel not in corpus.bad_files.values() and rel not in small:
            with Image.open(r) as im:
                w, h = im.size
            assert (min(w, h) >= 384 and max(w, h) <= 1024) or (w, h) == (2000, 150), rel


def test_corpus_special_formats(corpus):
    def one(cat):
        (rel,) = corpus.planted[cat]
        return Image.open(corpus.root / rel)
    assert one("grayscale").mode == "L"
    pal = one("palette_transparency")
    assert pal.mode == "P" and pal.info.get("transparency") == 0
    assert one("rgba").mode == "RGBA"
    assert one("png16").mode in ("I;16", "I")
    assert one("cmyk").mode == "CMYK"
    for cat in ("animated_gif", "animated_webp"):
        assert one(cat).n_frames == 4
    assert one("tiny_1x1").size == (1, 1)
    for rel in corpus.planted["exif_rotated"]:
        im = Image.open(corpus.root / rel)
        assert im.getexif()[0x0112] == 6
        assert ImageOps.exif_transpose(im).size == im.size[::-1]


def test_corpus_duplicates(corpus):
    assert len(corpus.near_duplicate_groups) == 8
    assert sorted(len(g) for g in corpus.near_duplicate_groups) == [2] * 4 + [3] * 4
    for orig, *copies in corpus.near_duplicate_groups:
        h0 = _phash(corpus.root / orig)
        for c in copies:
            assert h0 - _phash(corpus.root / c) <= 4, (orig, c)
            assert Path(orig).parent != Path(c).parent
    assert len(corpus.exact_duplicates) == 3
    for a, b in corpus.exact_duplicates:
        assert (corpus.root / a).read_bytes() == (corpus.root / b).read_bytes()
        assert Path(a).parent != Path(b).parent and Path(a).name != Path(b).name
    clean = [_phash(corpus.root / r) for r in corpus.planted["clean"][:20]]
    assert np.mean([x - y for x, y in combinations(clean, 2)]) >= 10


def test_corpus_captions(corpus):
    root = corpus.root
    for rel in corpus.planted["caption_json"]:
        doc = json.loads((root / rel).with_suffix(".json").read_text(encoding="utf-8"))
        assert set(doc) == {"caption", "caption_zh", "tags", "source_url"} and doc["caption"]
        assert doc["caption"] == corpus.captions[rel]
    for rel in corpus.planted["caption_zh"]:
        assert any("\u4e00" <= ch <= "\u9fff" for ch in (root / rel).with_suffix(".txt").read_text("utf-8"))
    for rel in corpus.planted["caption_missing"]:
        p = root / rel
        assert not p.with_suffix(".txt").exists() and not p.with_suffix(".json").exists()
        assert corpus.captions[rel] is None
    (empty,) = corpus.planted["caption_empty"]
    assert (root / empty).with_suffix(".txt").read_bytes() == b""
    (bad,) = corpus.planted["caption_invalid_utf8"]
    assert (root / bad).with_suffix(".txt").read_bytes() == INVALID_UTF8
    (long,) = corpus.planted["caption_long"]
    assert len((root / long).with_suffix(".txt").read_text("utf-8")) == LONG_CAPTION_CHARS
    n_txt = sum(1 for p in corpus.files if p.with_suffix(".txt").exists())
    assert n_txt > len(corpus.files) / 2


def test_corpus_is_deterministic(tmp_path):
    a = make_demo_corpus(tmp_path / "a", n_images=40, seed=3)
    b = make_demo_corpus(tmp_path / "b", n_images=40, seed=3)
    assert _tree(a.root) == _tree(b.root)
    assert a.planted == b.planted and a.near_duplicate_groups == b.near_duplicate_groups
    c = make_demo_corpus(tmp_path / "c", n_images=40, seed=4)
    assert _tree(c.root) != _tree(a.root)
    json.dumps(a.to_dict())


# ---- bad inputs --------------------------------------------------------------------------------

def test_bad_inputs(tmp_path, monkeypatch):
    paths = write_bad_inputs(tmp_path)
    assert paths["empty"].stat().st_size == 0
    trunc = paths["truncated"].read_bytes()
    assert trunc[:2] == b"\xff\xd8" and not trunc.endswith(b"\xff\xd9")
    im = Image.open(paths["truncated"])
    with pytest.raises(OSError):
        im.load()
    for kind in ("empty", "random_bytes", "html_as_png", "text_as_webp", "unsupported_format"):
        with pytest.raises(UnidentifiedImageError):
            Image.open(paths[kind])
    assert paths["random_bytes"].name == "noise.jpg" and paths["html_as_png"].name == "page.png"
    assert paths["html_as_png"].read_bytes().startswith(b"<!DOCTYPE html>")
    assert paths["unsupported_format"].read_bytes().startswith(b"%PDF")
    # The huge header opens header-only; never .load() it (2.7 GB).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    huge = Image.open(paths["huge_header"])
    assert huge.format == "PNG" and huge.size == (HUGE_SIDE, HUGE_SIDE)
    assert paths["huge_header"].stat().st_size < 1024
    assert paths["caption_invalid_utf8"].read_bytes() == INVALID_UTF8
    assert paths["caption_empty"].with_suffix(".jpg").exists()
    assert Image.open(paths["png16"]).mode in ("I;16", "I")
    assert Image.open(paths["animated_webp"]).n_frames == 4


# ---- other layouts -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_source_table(tmp_path, fmt):
    imgs = write_jpegs(tmp_path / "img", 3, megapixels=(0.05, 0.06))
    caps = ["A dog, at night.", 'A "quoted" cat', None]
    out = write_source_table(tmp_path / f"t.{fmt}", imgs, fmt, caps, uri_column="url",
                             captions_zh=["一只狗", "一只猫", None])
    reader = {"parquet": pq.read_table, "csv": pcsv.read_csv, "jsonl": pjson.read_json}[fmt]
    rows = reader(out).to_pylist()
    assert list(rows[0]) == ["url", "caption", "caption_zh", "license", "aesthetic_hint"]
    assert len(rows) == 5  # 3 images + missing + duplicate
    assert [r["url"] for r in rows[:3]] == [str(p) for p in imgs]
    assert rows[0]["caption"] == caps[0] and rows[1]["caption"] == caps[1] and rows[0]["caption_zh"] == "一只狗"
    assert not Path(rows[3]["url"]).exists()
    assert rows[4] == rows[0]
    assert write_source_table(tmp_path / f"u.{fmt}", imgs, fmt, caps).read_bytes() == \
        write_source_table(tmp_path / f"v.{fmt}", imgs, fmt, caps).read_bytes()


def test_source_table_minimal_and_file_uris(tmp_path):
    imgs = write_jpegs(tmp_path / "img", 2, megapixels=(0.05, 0.06))
    out = write_source_table(tmp_path / "t.parquet", imgs, "parquet", {str(p): "x" for p in imgs},
                             extra_columns=False, include_missing=False, include_duplicate_rows=False,
                             as_file_uri=True)
    t = pq.read_table(out)
    assert t.column_names == ["uri", "caption"] and t.num_rows == 2
    assert t.column("uri")[0].as_py().startswith("file:///")


def test_webdataset(tmp_path):
    imgs = write_jpegs(tmp_path / "img", 5, megapixels=(0.05, 0.06))
    caps = ["a", "b", None, "d", "日本"]
    shards = write_webdataset(tmp_path / "wds", imgs, caps, shard_size=2)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames() == ["000000000.jpg", "000000000.txt", "000000000.json",
                                  "000000001.jpg", "000000001.txt", "000000001.json"]
        assert tar.extractfile("000000000.jpg").read() == imgs[0].read_bytes()
        assert json.loads(tar.extractfile("000000001.json").read())["caption"] == "b"
    with tarfile.open(shards[1]) as tar:
        assert tar.getnames() == ["000000002.jpg", "000000002.json", "000000003.jpg",
                                  "000000003.txt", "000000003.json"]
    with tarfile.open(shards[2]) as tar:
        assert tar.extractfile("000000004.txt").read().decode() == "日本"
    again = write_webdataset(tmp_path / "wds2", imgs, caps, shard_size=2)
    assert [s.read_bytes() for s in shards] == [s.read_bytes() for s in again]


def test_corpus_files_are_exactly_the_images_written(corpus):
    on_disk = sorted(p for p in corpus.root.rglob("*") if p.is_file() and p.suffix not in (".txt", ".json"))
    assert sorted(corpus.files) == on_disk
