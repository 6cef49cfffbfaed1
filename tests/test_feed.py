"""The trainer feed (`curation.feed`): an export dir written here exactly as the exporter does."""

from __future__ import annotations

import io as pyio
import logging
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from curation.feed import PlanBatchSampler, StageBatches, StageImages, collate_batch, decode_cover, rank_schedule
import procs

ROOT = Path(__file__).resolve().parents[1]
B64, TALL = (64, 64), (96, 64)
# Epoch 0: (id, kind, bucket) per batch; "crop" is 200x100 with a red centre half, blue sides.
EPOCH0 = [
    [("crop", "t2i", B64), ("j0", "t2i", B64), ("tar0", "t2i", B64)],  # one bucket: stacked
    [("j1", "t2i", B64), ("j2", "t2i", TALL)],                          # two buckets: a list
    [("e0", "i2i", B64), ("e1", "i2i", B64)],                           # edit pairs only
    [("j3", "t2i", B64), ("e2", "i2i", B64), ("garbage", "t2i", B64)],  # mixed kinds, one bad item
    [("j4", "t2i", TALL), ("j5", "t2i", TALL)],
]
# Epoch 1: a batch whose every item is bad, between good ones.
EPOCH1 = [[("j0", "t2i", B64)], [("truncated", "t2i", B64), ("missing", "t2i", B64)], [("j1", "t2i", B64)]]


def _jpeg(seed: int, w: int, h: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = pyio.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_plan(path: Path, batches, version: str = "5", epoch: int = 0) -> None:
    rows = [dict(batch=b, position=p, id=i, kind=k, caption=f"a photo of {i}", caption_level="short",
                 bucket_height=bh, bucket_width=bw, seq_len=bh * bw // 256)
            for b, items in enumerate(batches) for p, (i, k, (bh, bw)) in enumerate(items)]
    schema = pa.schema([("batch", pa.int64()), ("position", pa.int32()), ("id", pa.string()),
                        ("kind", pa.string()), ("caption", pa.string()), ("caption_level", pa.string()),
                        ("bucket_height", pa.int32()), ("bucket_width", pa.int32()), ("seq_len", pa.int32())],
                       metadata={b"curation.manifest_version": version.encode(), b"curation.stage": b"sft",
                                 b"curation.epoch": str(epoch).encode(), b"curation.token_budget": b"64",
                                 b"curation.same_shape": b"false"})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export")
    crop = np.zeros((100, 200, 3), np.uint8)
    crop[..., 2] = 255
    crop[:, 50:150] = (255, 0, 0)
    Image.fromarray(crop).save(d / "crop.png")
    files = {"crop": (str(d / "crop.png"), None, None)}
    for n, (w, h) in enumerate([(300, 200), (120, 160), (90, 140), (256, 256), (640, 480), (100, 300)]):
        (d / f"j{n}.jpg").write_bytes(_jpeg(n, w, h))
        files[f"j{n}"] = (str(d / f"j{n}.jpg"), None, None)
    with tarfile.open(d / "shard.tar", "w") as tar:
        data = _jpeg(9, 150, 150)
        info = tarfile.TarInfo("tar0.jpg")
        info.size = len(data)
        tar.addfile(info, pyio.BytesIO(data))
    with tarfile.open(d / "shard.tar") as tar:
        member = tar.getmember("tar0.jpg")
        files["tar0"] = (f"{d / 'shard.tar'}#tar0.jpg", member.offset_data, member.size)
    for n in range(3):  # edit pairs: the edited image, and its source as PNG
        (d / f"e{n}.jpg").write_bytes(_jpeg(20 + n, 80, 80))
        Image.fromarray(np.full((70, 90, 3), 40 * n, np.uint8)).save(d / f"e{n}-src.png")
        files[f"e{n}"] = (str(d / f"e{n}.jpg"), None, None)
    (d / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    (d / "truncated.jpg").write_bytes(_jpeg(7, 200, 200)[:600])
    files["garbage"] = (str(d / "garbage.jpg"), None, None)
    files["truncated"] = (str(d / "truncated.jpg"), None, None)
    files["missing"] = (str(d / "nowhere.jpg"), None, None)
    rows = [dict(id=i, uri=u, byte_offset=o, byte_size=s, kind="i2i" if i[0] == "e" else "t2i",
                 source_uri=str(d / f"{i}-src.png") if i[0] == "e" else None,
                 source_byte_offset=None, source_byte_size=None, width=0)  # width: an ignored column
            for i, (u, o, s) in files.items()]
    schema = pa.schema([("id", pa.string()), ("uri", pa.string()), ("byte_offset", pa.int64()),
                        ("byte_size", pa.int64()), ("kind", pa.string()), ("source_uri", pa.string()),
                        ("source_byte_offset", pa.int64()), ("source_byte_size", pa.int64()),
                        ("width", pa.int32())],
                       metadata={b"curation.manifest_version": b"5", b"curation.stage": b"sft"})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "manifest.parquet")
    _write_plan(d / "batches-e00000.parquet", EPOCH0)
    _write_plan(d / "batches-e00001.parquet", EPOCH1, epoch=1)
    return d


def _ids(batches) -> list:
    return [(b["step"], b["batch"], b["ids"]) for b in batches]


def test_shapes_values_and_layouts(export):
    batches = list(StageBatches(export))
    assert [b["batch"] for b in batches] == [0, 1, 2, 3, 4] and [b["step"] for b in batches] == [0, 1, 2, 3, 4]
    first = batches[0]
    assert first["pixel_values"].shape == (3, 3, 64, 64) and first["pixel_values"].dtype == torch.float32
    assert -1 <= first["pixel_values"].min() < 0 < first["pixel_values"].max() <= 1
    assert first["captions"] == ["a photo of crop", "a photo of j0", "a photo of tar0"]
    assert first["source_pixel_values"] is None and first["kinds"] == ["t2i"] * 3
    mixed = batches[1]["pixel_values"]  # two buckets: a list of CHW tensors
    assert isinstance(mixed, list) and [t.shape for t in mixed] == [(3, 64, 64), (3, 96, 64)]
    edits = batches[2]
    assert edits["source_pixel_values"].shape == (2, 3, 64, 64)
    assert torch.allclose(edits["source_pixel_values"][1], torch.full((3, 64, 64), 40 / 127.5 - 1))
    kinds = batches[3]  # t2i + i2i, "garbage" dropped: sources are a list with None for t2i
    assert kinds["ids"] == ["j3", "e2"] and kinds["skipped_ids"] == ["garbage"]
    assert kinds["source_pixel_values"][0] is None and kinds["source_pixel_values"][1].shape == (3, 64, 64)
    raw = next(iter(StageBatches(export, normalize=False)))["pixel_values"]
    assert raw.dtype == torch.uint8 and raw.shape == (3, 3, 64, 64)


def test_cover_then_centre_crop(export):
    ds = StageImages(export, normalize=False)
    item = ds[0]  # 200x100 to 64x64: scaled to 128x64, the centre 64 columns are the red half
    assert item["id"] == "crop" and item["error"] is None
    red, _, blue = item["pixel_values"].int()
    assert (red > 200).all() and (blue < 60).all()


def test_cover_is_exact_for_awkward_sizes_and_exif_rotation():
    for (w, h), (bh, bw) in [((300, 500), (352, 192)), ((1001, 333), (160, 384)), ((97, 700), (256, 256))]:
        assert decode_cover(_jpeg(w, w, h), bh, bw).size == (bw, bh)  # float box rounding stays in bounds
    raw = np.zeros((200, 400, 3), np.uint8)
    raw[:, :200] = 255  # left half white; EXIF 6 turns it 90° clockwise: the top half is white
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = pyio.BytesIO()
    Image.fromarray(raw).save(buf, "JPEG", exif=exif.tobytes())
    shown = np.asarray(decode_cover(buf.getvalue(), 128, 64).convert("L"), np.float64)
    assert shown.shape == (128, 64) and shown[:56].mean() > 240 and shown[72:].mean() < 15


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_sharding_covers_every_batch_with_equal_steps(export, world_size):
    runs = [list(StageBatches(export, rank=r, world_size=world_size)) for r in range(world_size)]
    steps = -(-5 // world_size)
    assert all(len(run) == steps for run in runs)
    assert {b["batch"] for run in runs for b in run} == set(range(5))
    for r, run in enumerate(runs):
        assert [b["batch"] for b in run] == [(s * world_size + r) % 5 for s in range(steps)]
    assert rank_schedule(7, rank=2, world_size=3) == [(0, 2), (1, 5), (2, 1)]  # last round wraps


def test_workers_give_the_same_batches_in_step_order(export):
    alone = list(DataLoader(StageBatches(export), batch_size=None, num_workers=0))
    pooled = list(DataLoader(StageBatches(export), batch_size=None, num_workers=2))
    assert _ids(pooled) == _ids(alone)
    assert torch.equal(pooled[0]["pixel_values"], alone[0]["pixel_values"])


def test_start_step_resumes_with_the_tail(export):
    full = list(StageBatches(export, rank=1, world_size=2))
    tail = StageBatches(export, rank=1, world_size=2, start_step=1)
    assert tail.steps_per_rank == 3 and len(tail) == 2
    assert _ids(tail) == _ids(full)[1:]
    with pytest.raises(ValueError, match="start_step"):
        StageBatches(export, start_step=6)


def test_map_style_matches_iterable(export):
    ds = StageImages(export)
    sampler = PlanBatchSampler(ds, rank=1, world_size=2)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch, num_workers=2)
    assert _ids(loader) == _ids(StageBatches(export, rank=1, world_size=2))


def test_bad_items_are_skipped_and_counted(export, caplog):
    ds = StageBatches(export, epoch=1)
    with caplog.at_level(logging.WARNING, logger="curation.feed"):
        batches = list(ds)
    assert [b["ids"] for b in batches] == [["j0"], ["j1"]] and [b["step"] for b in batches] == [0, 2]
    assert ds.skipped == 2 and ds.skipped_batches == 1
    text = caplog.text
    assert "truncated" in text and "missing" in text and "FileNotFoundError" in text
    images = StageImages(export, epoch=1)
    assert collate_batch(images.items([1, 2])) is None and images.skipped == 2


def test_mismatched_plan_is_rejected(export, tmp_path):
    _write_plan(tmp_path / "old.parquet", EPOCH0, version="3")
    with pytest.raises(ValueError, match=r"manifest version 3, but manifest .* is version 5"):
        StageBatches(manifest=str(export / "manifest.parquet"), plan=str(tmp_path / "old.parquet"))
    _write_plan(tmp_path / "unknown.parquet", [[("j0", "t2i", B64), ("ghost", "t2i", B64)]])
    with pytest.raises(ValueError, match=r"1 ids missing .*'ghost'"):
        StageImages(manifest=str(export / "manifest.parquet"), plan=str(tmp_path / "unknown.parquet"))


def test_file_uri_export(export):
    assert _ids(StageBatches(export.as_uri())) == _ids(StageBatches(str(export)))


def test_imports_no_ray(export):
    code = ("import sys, curation.feed\n"
            f"batches = list(curation.feed.StageBatches({str(export)!r}))\n"
            "assert len(batches) == 5, batches\n"
            "assert 'ray' not in sys.modules, 'curation.feed imported ray'\n")
    done = procs.run([sys.executable, "-c", code], what="the feed in a fresh process", cwd=ROOT)
    assert done.returncode == 0, done.stderr
