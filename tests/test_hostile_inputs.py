"""Hostile inputs are answered per item (a row with an `error`, or a flagged caption), never by
harm: no decode of a bomb, no read outside the source, no aborted ingest, no lost item."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageFile

from curation.demo import encode, photo_like
from curation.demo.oddities import (
    BIG_CELL_BYTES, PNG_BOMB_SIDE, write_deep_json, write_duplicate_member_tar, write_hostile_inputs,
    write_hostile_table, write_non_utf8_name, write_png_bomb, write_surrogate_json, write_symlinks,
)
from curation.steps.ingest.captions import MAX_CAPTION_CHARS
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.steps.items import ItemError, read_item
from curation.steps.profiling.profile import ProfileConfig, ProfileRunner, profile
from curation.steps.profiling.score import prepare_batch
from curation.storage import io as cio
from curation.storage.lake import Lake
from operators.decode import DEFAULT_MAX_PIXELS, DecodeError, DecodePlan, open_header, open_item
from operators.registry import DEFAULT_PROFILE_OPERATORS

FULL = DecodePlan("rgb", 0, 1)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pool(lake: Lake) -> list[dict]:
    return lake.read("pool").to_pylist()


def _by_uri(rows: list[dict]) -> dict[str, dict]:
    return {u: r for r in rows for u in r["uris"]}


@pytest.fixture
def no_pixel_decode(monkeypatch):
    """Pillow's load (every pixel decode, and what PNG getexif() calls) refuses and is recorded:
    the test checks the record is empty, since callers may swallow the exception."""
    attempts: list[tuple] = []

    def refuse(self, *a, **k):
        attempts.append((self.format, self.size))
        raise AssertionError(f"pixels of a {self.size} {self.format} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    yield attempts
    assert attempts == []


# ---- 1. image bombs are refused on the header, before anything is decoded ------------------------

def test_png_bomb_is_refused_on_its_header_without_decoding(tmp_path, no_pixel_decode):
    path = tmp_path / "bomb.png"
    write_png_bomb(path)
    data = path.read_bytes()
    assert len(data) < 500_000  # 437 KB on disk, 3.6 GB decoded
    with pytest.raises(ItemError, match=r"^decode: too many pixels: 60000x60000") as info:
        read_item(str(path), FULL)
    # the header is still described, its EXIF (stored after the image data) included
    header = info.value.item.header
    assert (header.raw_width, header.raw_height, header.orientation) == (PNG_BOMB_SIDE, PNG_BOMB_SIDE, 6)
    with pytest.raises(DecodeError, match="max_pixels"):
        open_header(data, max_pixels=10_000_000)
    with pytest.raises(DecodeError, match="max_pixels"):
        open_item(data, FULL)
    # profiling: one row, the error, the header columns, no pixel features
    out = ProfileRunner(list(DEFAULT_PROFILE_OPERATORS))(pa.table({"id": ["b"], "uri": [str(path)]})).to_pylist()
    assert len(out) == 1 and out[0]["error"].startswith("decode: too many pixels")
    assert out[0]["width"] == PNG_BOMB_SIDE and out[0]["exif_orientation"] == 6 and out[0]["phash"] is None
    # scoring's decode stage shares the same read and decode
    class Prep:
        size = (8, 8)

        def __call__(self, image):
            raise AssertionError("a refused image reached an encoder's preprocessing")

    batch = prepare_batch(pa.table({"id": ["b"], "uri": [str(path)], "error": [None]}), {"enc": Prep()}, [],
                          DEFAULT_MAX_PIXELS)
    assert batch["error"][0].startswith("decode: too many pixels")


def _png_with_exif_after_idat(img: Image.Image, orientation: int) -> bytes:
    """A PNG whose eXIf chunk sits after the image data (allowed by the PNG spec)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "PNG")
    body = exif.tobytes()[6:]
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def test_exif_after_the_image_data_still_orients_normal_images(monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    rgb = photo_like(np.random.default_rng(1), 40, 20)
    data = _png_with_exif_after_idat(rgb, 6)
    header = open_header(data).header
    assert not loads  # the header parse decoded nothing
    assert (header.orientation, header.width, header.height) == (6, 20, 40)
    item = open_item(data, FULL)
    assert item.image.size == (20, 40)  # decoded, and rotated upright
    assert np.array_equal(np.asarray(item.image), np.asarray(rgb.convert("RGB").transpose(Image.Transpose.ROTATE_270)))


# ---- the shared read-and-decode helper ------------------------------------------------------

def test_read_item_errors_are_read_or_decode_messages(tmp_path):
    with pytest.raises(ItemError, match=r"^read: FileNotFoundError") as info:
        read_item({"uri": str(tmp_path / "gone.jpg")})
    assert info.value.item is None
    (tmp_path / "page.png").write_bytes(b"<!DOCTYPE html><html></html>")
    with pytest.raises(ItemError, match=r"^decode: not a recognised image \(looks like HTML\)"):
        read_item(str(tmp_path / "page.png"), FULL)
    data = encode(photo_like(np.random.default_rng(2), 64, 48), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ItemError, match=r"^decode: corrupt or truncated JPEG") as info:
        read_item(str(tmp_path / "cut.jpg"), FULL)
    assert info.value.item.header.width == 64  # the header survives for header-only operators
    (tmp_path / "ok.jpg").write_bytes(data)
    item = read_item({"uri": str(tmp_path / "ok.jpg"), "byte_offset": None}, FULL)
    assert item.image.size == (64, 48) and read_item(str(tmp_path / "ok.jpg")).image is None


# ---- 2. symbolic links ----------------------------------------------------------------------------

def _links(tmp_path):
    try:
        return write_symlinks(tmp_path / "src", tmp_path / "outside")
    except (OSError, NotImplementedError):
        pytest.skip("no symbolic links on this file system")


def test_links_out_of_the_source_loops_and_dangling_links_are_error_rows(ray_session, tmp_path):
    links = _links(tmp_path)
    src = tmp_path / "src"
    secret = (tmp_path / "outside" / "secret.jpg").read_bytes()
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(src)))
    rows = _pool(lake)
    by_uri = _by_uri(rows)
    assert _sha(secret) not in {r["id"] for r in rows}
    assert not any("outside the source" in (r["caption"] or "") for r in rows)
    for name, says in [("escape.jpg", "symlink leaves the source, not followed"),
                       ("escape_dir", "symlink leaves the source, not followed"),
                       ("loop.jpg", "symlink loop"), ("self", "symlink loop"),
                       ("dangling.jpg", "dangling symlink")]:
        row = by_uri[str(links[name])]
        assert row["error"].startswith(f"ingest: {says}: {links[name]}"), row["error"]
    captioned = by_uri[str(links["captioned.jpg"])]
    assert "caption sidecar not read: symlink leaves the source" in captioned["error"]
    assert "captioned.txt" in captioned["error"] and captioned["caption"] is None
    # a link inside the source is followed: the same bytes, one row, both uris
    inside = by_uri[str(links["inside.jpg"])]
    assert inside["error"] is None and sorted(inside["uris"]) == sorted([str(links["inside.jpg"]), str(links["alias.jpg"])])
    assert s.errors["ingest: symlink leaves the source, not followed"] == 2

    followed = Lake(str(tmp_path / "lake2"))
    ingest(followed, IngestConfig(source=str(src), follow_symlinks=True))
    by_uri = _by_uri(_pool(followed))
    assert by_uri[str(links["escape.jpg"])]["id"] == _sha(secret)
    assert by_uri[str(links["escape.jpg"])]["error"] is None
    assert by_uri[str(links["captioned.jpg"])]["caption"] == "a caption from outside the source"
    assert by_uri[str(src / "escape_dir" / "other.jpg")]["error"] is None
    assert by_uri[str(links["loop.jpg"])]["error"].startswith("ingest: symlink loop")
    assert by_uri[str(links["dangling.jpg"])]["error"].startswith("ingest: dangling symlink")


# ---- 3. hostile JSON sidecars ---------------------------------------------------------------

def test_deep_and_surrogate_json_sidecars_do_not_stop_the_ingest(ray_session, tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(3)
    images = {stem: encode(photo_like(rng, 48, 32), "JPEG") for stem in ("deep", "odd", "plain")}
    src.mkdir()
    for stem, data in images.items():
        (src / f"{stem}.jpg").write_bytes(data)
    write_deep_json(src / "deep.json")
    write_surrogate_json(src / "odd.json")
    (src / "plain.txt").write_text("a plain caption")
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(src)))
    assert s.rows_in == 3
    rows = {r["id"]: r for r in _pool(lake)}
    deep = rows[_sha(images["deep"])]
    assert deep["error"] == "ingest: bad JSON sidecar: invalid JSON sidecar: nested too deep"
    odd = rows[_sha(images["odd"])]
    assert odd["error"] is None and odd["caption_issue"] == "invalid_utf8"
    assert odd["caption"].startswith("half \ufffd") and odd["tags"] == ["ok", "\ufffd"]
    assert list(json.loads(odd["extra_json"]).items()) == [("note\ufffd", "x\ufffd")]
    assert rows[_sha(images["plain"])]["caption"] == "a plain caption"


# ---- 4. file names that are not UTF-8 ------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_ingested_by_its_bytes(ray_session, tmp_path):
    src = tmp_path / "src"
    try:
        path = write_non_utf8_name(src)
    except OSError:
        pytest.skip("this file system only takes UTF-8 names")
    (src / "plain.jpg").write_bytes(encode(photo_like(np.random.default_rng(4), 48, 32), "JPEG"))
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(src)))
    assert s.rows_in == 2 and not s.errors
    data = open(os.fsencode(path), "rb").read()
    row = {r["id"]: r for r in _pool(lake)}[_sha(data)]
    assert row["uri"].startswith("file://") and "bad_%FF%FE_name.jpg" in row["uri"]
    assert row["caption"] == "a caption beside a file name that is not UTF-8"
    assert cio.read_bytes(row["uri"]) == data
    out = ProfileRunner(["metadata", "phash"])(lake.read("pool")).to_pylist()
    assert [r["error"] for r in out] == [None, None]


# ---- 5. repeated tar member names ----------------------------------------------------------------

def test_repeated_tar_member_names_are_rows_of_their_own(ray_session, tmp_path):
    shard = tmp_path / "shards" / "dup.tar"
    images = write_duplicate_member_tar(shard)
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(shard.parent)))
    rows = _pool(lake)
    assert s.rows_in == 4 and len(rows) == 4 and not s.errors
    by_id = {r["id"]: r for r in rows}
    uris = [by_id[_sha(blob)]["uri"] for _, blob, _ in images]
    assert uris == [f"{shard}#a.jpg@0", f"{shard}#a.jpg@1", f"{shard}#b.jpg", f"{shard}#b.png"]
    for (name, blob, caption), uri in zip(images, uris):
        r = by_id[_sha(blob)]
        assert r["caption"] == caption
        assert cio.read_bytes(uri, r["byte_offset"], r["byte_size"]) == blob  # the stored range
        assert cio.read_bytes(uri) == blob  # and the uri alone, by scanning the shard


# ---- 6. table files with bad lines ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_bad_table_line_is_one_error_row(ray_session, tmp_path, fmt):
    rng = np.random.default_rng(5)
    imgs = []
    for i in range(5):
        imgs.append(tmp_path / "imgs" / f"{i}.jpg")
        imgs[-1].parent.mkdir(exist_ok=True)
        imgs[-1].write_bytes(encode(photo_like(rng, 48, 32), "JPEG"))
    table = tmp_path / f"src.{fmt}"
    lines = write_hostile_table(table, imgs)
    assert table.stat().st_size > BIG_CELL_BYTES
    lake = Lake(str(tmp_path / "lake"))
    s = ingest(lake, IngestConfig(source=str(table)))
    assert s.rows_in == 5
    rows = _pool(lake)
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["error"].startswith(
        f"ingest: bad table row: src.{fmt} line {lines['malformed']}: ")
    by_uri = _by_uri(rows)
    assert str(imgs[2]) not in by_uri  # the malformed line's uri cannot be trusted
    assert by_uri[str(imgs[1])]["caption_issue"] == "invalid_utf8" and "\ufffd" in by_uri[str(imgs[1])]["caption"]
    big = by_uri[str(imgs[3])]
    assert big["caption_issue"] == "truncated" and len(big["caption"]) == MAX_CAPTION_CHARS
    assert by_uri[str(imgs[4])]["caption"] == "image 4" and by_uri[str(imgs[0])]["error"] is None


# ---- everything, through ingest and profile ---------------------------------------------------------

def test_hostile_inputs_through_ingest_and_profile(ray_session, tmp_path):
    """Each source into its own lake, then `profile`: one profile row per pool row, never a crash."""
    paths = write_hostile_inputs(tmp_path / "hostile", big_cell_bytes=200_000)
    errors: dict[str, str | None] = {}
    for key in ("dir", "tar", "csv", "jsonl"):
        lake = Lake(str(tmp_path / f"lake-{key}"))
        ingest(lake, IngestConfig(source=str(paths[key]), name=key))
        pool = lake.read("pool").to_pylist()
        s = profile(lake, ProfileConfig(batch_size=4))
        profiles = {r["id"]: r for r in lake.read("profiles").to_pylist()}
        assert s.rows_in == len(pool) and sorted(profiles) == sorted(r["id"] for r in pool)
        errors.update({f"{key}:{u}": profiles[r["id"]]["error"] for r in pool for u in r["uris"] or [r["uri"]]})
    assert errors[f"dir:{paths['png_bomb']}"].startswith("decode: too many pixels")
    assert errors[f"dir:{paths['dir'] / 'deep.jpg'}"].startswith("ingest: bad JSON sidecar")
    assert errors[f"dir:{paths['dir'] / 'plain_0.jpg'}"] is None
    assert errors[f"dir:{paths['dir'] / 'surrogates.jpg'}"] is None
    if "non_utf8_name" in paths:
        assert [e for u, e in errors.items() if "%FF%FE" in u] == [None]
    if "link:loop.jpg" in paths:
        assert errors[f"dir:{paths['link:loop.jpg']}"].startswith("ingest: symlink loop")
        assert errors[f"dir:{paths['link:escape.jpg']}"].startswith("ingest: symlink leaves the source")
    assert errors[f"tar:{paths['tar']}#a.jpg@0"] is None and errors[f"tar:{paths['tar']}#a.jpg@1"] is None
    for fmt in ("csv", "jsonl"):
        table_errors = [e for u, e in errors.items() if u.startswith(f"{fmt}:")]
        assert len(table_errors) == 5 and sum(1 for e in table_errors if e) == 1
        assert any(e and e.startswith("ingest: bad table row") for e in table_errors)
