"""Profiling operators and the decode they share, on tiny images made in memory."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageFilter

from operators.base import DecodeNeed
from operators.decode import DecodeError, DecodePlan, open_header, open_item, plan_for
from operators.degradation import Degradation, blockiness
from operators.entropy import BorderStd, JpegBpp
from operators.metadata import _ANNEX_K_LUMA, Compression, Metadata, estimate_jpeg_quality
from operators.phash import PHash, hamming, phash_from_luma
from operators.registry import DEFAULT_OCR_OPERATORS, DEFAULT_PROFILE_OPERATORS, OPERATORS, get_operator

FULL = DecodePlan("rgb", 0, 1)
ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def run(op_cls, data: bytes, plan: DecodePlan | None = None) -> dict:
    item = open_item(data, plan or plan_for([op_cls.need]))
    return op_cls().compute(item)


def smooth_texture(seed: int, size=(320, 240), grey: bool = False) -> Image.Image:
    """A photo-ish image: a smooth random field, a few hard shapes, mild noise."""
    rng = np.random.default_rng(seed)
    field = rng.uniform(40, 215, (4, 5, 1 if grey else 3)).astype(np.uint8)
    base = Image.fromarray(field.squeeze()).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.float32).copy()
    for _ in range(4):
        y0, x0 = rng.integers(0, size[1] - 20), rng.integers(0, size[0] - 20)
        arr[y0:y0 + rng.integers(10, 80), x0:x0 + rng.integers(10, 80)] = rng.uniform(0, 255, arr.shape[2:] or ())
    arr += rng.normal(0, 2, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def flat_png() -> bytes:
    return encode(Image.new("RGB", (200, 150), (128, 128, 128)))


# ---- degradation -------------------------------------------------------------------------


def test_flat_image_has_no_blur_noise_colour_cast_or_blocking(flat_png):
    out = run(Degradation, flat_png)
    assert out["laplacian_var"] == 0
    assert out["noise_sigma"] == 0
    assert out["colorfulness"] == 0
    assert out["color_cast"] == pytest.approx(0, abs=1e-3)
    assert out["blockiness"] == pytest.approx(1.0)
    assert run(BorderStd, flat_png)["border_std"] == 0


def test_noise_sigma_recovers_added_gaussian_noise():
    rng = np.random.default_rng(0)
    arr = np.clip(128 + rng.normal(0, 10, (256, 256)), 0, 255).astype(np.uint8)
    out = run(Degradation, encode(Image.fromarray(arr)))
    assert out["noise_sigma"] == pytest.approx(10, rel=0.2)


def test_blur_lowers_laplacian_variance():
    sharp = smooth_texture(1)
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    v_sharp = run(Degradation, encode(sharp))["laplacian_var"]
    v_blur = run(Degradation, encode(blurred))["laplacian_var"]
    assert v_blur < v_sharp / 4


def test_colorfulness_of_half_red_half_blue_matches_hand_computation():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, :32, 0] = 255
    arr[:, 32:, 2] = 255
    # rg: mean 127.5, std 127.5; yb: values 127.5 and -255 -> mean -63.75, std 191.25
    expected = np.hypot(127.5, 191.25) + 0.3 * np.hypot(127.5, 63.75)
    assert run(Degradation, encode(Image.fromarray(arr)))["colorfulness"] == pytest.approx(expected, rel=1e-6)


def test_red_tint_gives_a_large_colour_cast():
    neutral = np.asarray(smooth_texture(2, grey=True).convert("RGB"), dtype=np.int16)
    tinted = neutral.copy()
    tinted[..., 0] += 70
    tinted[..., 2] -= 30
    k_neutral = run(Degradation, encode(Image.fromarray(neutral.astype(np.uint8))))["color_cast"]
    k_tinted = run(Degradation, encode(Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))))["color_cast"]
    assert k_neutral < 0.2
    assert k_tinted > 1.5


def test_strong_jpeg_compression_shows_as_blockiness():
    img = smooth_texture(3, size=(203, 157))  # sizes off the 8-px grid
    low = run(Degradation, encode(img, "JPEG", quality=10))["blockiness"]
    high = run(Degradation, encode(img, "JPEG", quality=95))["blockiness"]
    assert low > 1.5
    assert high < 1.15


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_blockiness_follows_the_grid_through_exif_orientation(orientation):
    img = smooth_texture(4, size=(203, 157))
    upright = run(Degradation, encode(img, "JPEG", quality=10))["blockiness"]
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    turned = run(Degradation, encode(img, "JPEG", quality=10, exif=exif))["blockiness"]
    assert turned == pytest.approx(upright, rel=0.02)


def test_blockiness_reads_the_grid_at_half_scale():
    img = smooth_texture(5, size=(1200, 800))
    item = open_item(encode(img, "JPEG", quality=10), plan_for([Degradation.need]))
    assert item.reduction == 2
    assert Degradation().compute(item)["blockiness"] > 1.3


def test_blockiness_of_pure_8px_blocks_is_large_and_phase_sensitive():
    blocks = np.kron(np.random.default_rng(0).integers(0, 255, (8, 8)), np.ones((8, 8))).astype(np.uint8)
    assert blockiness(blocks, 8, 7, 7) > 1000
    assert blockiness(blocks, 8, 3, 3) < 1


# ---- entropy -----------------------------------------------------------------------------


def test_border_std_is_zero_for_a_framed_image_and_high_for_texture():
    rng = np.random.default_rng(0)
    arr = np.full((200, 300), 255, np.uint8)
    arr[20:-20, 20:-20] = rng.integers(0, 255, (160, 260))
    assert run(BorderStd, encode(Image.fromarray(arr)))["border_std"] == 0  # strip = 6 px
    noisy = rng.integers(0, 256, (200, 300)).astype(np.uint8)
    assert run(BorderStd, encode(Image.fromarray(noisy)))["border_std"] == pytest.approx(74, abs=3)


def test_jpeg_bpp_orders_flat_smooth_and_noisy(flat_png):
    rng = np.random.default_rng(0)
    noisy = encode(Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)))
    bpp = [run(JpegBpp, d)["jpeg_bpp"] for d in (flat_png, encode(smooth_texture(6)), noisy)]
    assert 0 < bpp[0] < 0.2  # a flat image still costs a DC difference and an EOB per block
    assert bpp[0] < bpp[1] < bpp[2]
    assert bpp[2] > 3


# ---- metadata and compression ------------------------------------------------------------


@pytest.mark.parametrize("quality", [10, 50, 75, 90])
def test_jpeg_quality_is_recovered_from_the_quantisation_table(quality):
    data = encode(smooth_texture(7, size=(64, 48)), "JPEG", quality=quality)
    assert abs(run(Metadata, data)["jpeg_quality"] - quality) <= 3


def test_jpeg_quality_of_the_annex_k_table_is_50_and_png_has_none(flat_png):
    assert estimate_jpeg_quality(list(_ANNEX_K_LUMA)) == 50
    assert estimate_jpeg_quality([1] * 64) == 100
    assert run(Metadata, flat_png)["jpeg_quality"] is None


def test_metadata_of_an_exif_rotated_jpeg_swaps_width_and_height():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = encode(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif)
    out = run(Metadata, data)
    assert (out["format"], out["width"], out["height"], out["exif_orientation"]) == ("JPEG", 20, 40, 6)
    assert out["file_size"] == len(data)
    assert open_item(data, FULL).image.size == (20, 40)


@pytest.mark.parametrize("make, fmt, expected", [
    (lambda: Image.fromarray(np.full((10, 12), 1000, np.uint16)), "PNG", ("I;16", 1, 16)),
    (lambda: Image.new("RGBA", (12, 10), (0, 0, 0, 0)), "PNG", ("RGBA", 4, 8)),
    (lambda: Image.new("CMYK", (12, 10), (0, 255, 0, 0)), "JPEG", ("CMYK", 4, 8)),
    (lambda: Image.new("L", (12, 10), 50), "JPEG", ("L", 1, 8)),
    (lambda: Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12)).convert("RGB").quantize(4),
     "PNG", ("P", 1, 2)),  # a 4-colour palette is stored with 2-bit indices
])
def test_metadata_mode_channels_and_bit_depth_as_stored(make, fmt, expected):
    data = encode(make(), fmt)
    out = run(Metadata, data)
    assert (out["mode"], out["channels"], out["bit_depth"]) == expected
    assert (out["width"], out["height"], out["n_frames"]) == (12, 10, 1)
    assert open_item(data, FULL).image.mode == "RGB"  # every stored mode decodes


def test_transparency_is_composited_over_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.putpixel((0, 0), 1)
    item = open_item(encode(pal, transparency=0), FULL)
    assert item.header.mode == "P"
    assert item.image.getpixel((0, 0)) == (255, 0, 0)
    assert item.image.getpixel((5, 5)) == (255, 255, 255)
    rgba = open_item(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0))), FULL)
    assert rgba.image.getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_report_their_frame_count(fmt):
    frames = [Image.new("RGB", (32, 24), (80 * i, 40, 0)) for i in range(3)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    out = run(Metadata, data)
    assert (out["format"], out["n_frames"]) == (fmt, 3)
    assert open_item(data, FULL).image.size == (32, 24)


@pytest.mark.parametrize("size", [(1, 1), (4000, 20), (20, 4000)])
def test_tiny_and_extreme_aspect_images_run_every_operator(size):
    pixels = np.random.default_rng(8).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG")
    plan = plan_for(op.need for op in OPERATORS.values())
    item = open_item(data, plan)
    out = {}
    for op in OPERATORS.values():
        out.update(op().compute(item))
    assert (out["width"], out["height"]) == size
    assert all(np.isfinite(v) for k, v in out.items() if isinstance(v, float))


def test_compression_ratio_is_raw_size_over_file_size():
    data = encode(Image.new("RGB", (100, 50), (1, 2, 3)))
    assert run(Compression, data)["compression_ratio"] == pytest.approx(100 * 50 * 3 / len(data))
    grey16 = encode(Image.fromarray(np.zeros((10, 10), np.uint16)))
    assert run(Compression, grey16)["compression_ratio"] == pytest.approx(10 * 10 * 2 / len(grey16))


# ---- phash -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, fmt", [(10, "PNG"), (11, "JPEG"), (12, "JPEG")])
def test_phash_on_a_full_decode_equals_imagehash(seed, fmt):
    data = encode(smooth_texture(seed, size=(300, 200)), fmt)
    ours = run(PHash, data, DecodePlan("luma", 0, 1))["phash"]
    assert ours == int(str(imagehash.phash(Image.open(io.BytesIO(data)))), 16)


def test_phash_ties_resolve_like_imagehash_on_a_flat_image(flat_png):
    flat = Image.open(io.BytesIO(flat_png))
    assert phash_from_luma(flat) == int(str(imagehash.phash(flat)), 16) == 1 << 63


def test_phash_is_stable_under_recompression_and_far_between_images():
    a, b = smooth_texture(13, size=(300, 200)), smooth_texture(14, size=(300, 200))
    ha = phash_from_luma(a)
    ha_jpeg = run(PHash, encode(a.resize((150, 100)), "JPEG", quality=60))["phash"]
    assert hamming(ha, ha_jpeg) <= 6
    assert hamming(ha, phash_from_luma(b)) >= 14


def test_hamming_on_ints_and_uint64_arrays():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64
    hashes = np.array([0, 1, 2**64 - 1, 0xFF00], dtype=np.uint64)
    assert hamming(hashes, np.uint64(0)).tolist() == [0, 1, 64, 8]
    pairwise = hamming(hashes[:, None], hashes[None, :])
    assert pairwise.shape == (4, 4) and pairwise[2, 3] == 56 and (np.diag(pairwise) == 0).all()


# ---- registry and the operator contract --------------------------------------------------


def test_registry_lists_every_operator_and_rejects_unknown_names():
    assert list(OPERATORS) == DEFAULT_PROFILE_OPERATORS + DEFAULT_OCR_OPERATORS
    assert get_operator("phash") is PHash
    with pytest.raises(KeyError, match="unknown operator 'blurriness'.*degradation.*phash"):
        get_operator("blurriness")


@pytest.mark.parametrize("op_cls", [OPERATORS[n] for n in DEFAULT_PROFILE_OPERATORS], ids=DEFAULT_PROFILE_OPERATORS)
def test_operators_honour_their_declared_schema(op_cls):  # the OCR set: tests/test_ocr.py
    op = pickle.loads(pickle.dumps(op_cls()))
    assert op_cls.version == "1" and all(f.metadata[b"doc"] for f in op_cls.writes)
    out = op.compute(open_item(encode(smooth_texture(15), "JPEG"), plan_for([op_cls.need])))
    assert set(out) == set(op_cls.column_names())
    for f in op_cls.writes:
        assert pa.array([out[f.name]], type=f.type)[0].as_py() is not None  # fits the type


# ---- decode ------------------------------------------------------------------------------


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8)), "not a recognised image"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
])
def test_non_images_raise_decode_error(data, says):
    with pytest.raises(DecodeError, match=says):
        open_item(data, FULL)


def test_truncated_jpeg_keeps_its_header_but_fails_to_decode():
    data = encode(smooth_texture(16), "JPEG")
    cut = data[: len(data) // 2]
    assert open_header(cut).header.width == 320
    with pytest.raises(DecodeError, match="JPEG"):
        open_item(cut, FULL)


def test_oversized_headers_are_rejected_before_decoding():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"\x78\x9c"))
    assert open_header(bomb).header.width == 20000
    with pytest.raises(DecodeError, match="max_pixels"):
        open_item(bomb, FULL)
    with pytest.raises(DecodeError, match="max_pixels=10"):
        open_item(encode(Image.new("RGB", (4, 4))), FULL, max_pixels=10)


def test_plan_for_takes_the_richest_kind_largest_side_and_smallest_reduction():
    assert plan_for([]) == DecodePlan("header", 0, 8)
    needs = [DecodeNeed("header"), DecodeNeed("luma", 256, 8), DecodeNeed("rgb", 512, 2), DecodeNeed("luma", 0, 4)]
    assert plan_for(needs) == DecodePlan("rgb", 512, 2)
    assert plan_for(OPERATORS[n].need for n in DEFAULT_PROFILE_OPERATORS) == DecodePlan("rgb", 512, 2)


def test_jpeg_draft_reduction_is_reported_exactly_for_thin_images():
    for size in [(4000, 5), (20, 4000), (9, 9)]:
        item = open_item(encode(Image.new("RGB", size, (10, 200, 30)), "JPEG"), DecodePlan("rgb", 0, 8))
        w, h = size
        r = item.reduction
        assert r in (1, 2, 4, 8) and item.image.size == (-(-w // r), -(-h // r))


def test_sixteen_bit_samples_are_scaled_not_clipped():
    dark = encode(Image.fromarray(np.full((4, 4), 200, np.uint16)))
    bright = encode(Image.fromarray(np.full((4, 4), 65535, np.uint16)))
    assert np.asarray(open_item(dark, FULL).pil("L")).max() == 1
    assert np.asarray(open_item(bright, FULL).pil("L")).min() == 255


def test_exif_orientation_applies_to_transparent_images():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    item = open_item(encode(Image.new("RGBA", (40, 20), (255, 0, 0, 255)), exif=exif), FULL)
    assert (item.header.width, item.header.height) == item.image.size == (20, 40)


@pytest.mark.parametrize("kind", ["palette_transparency", "png16", "animated_gif", "rgba", "cmyk", "grayscale"])
def test_small_plans_reduce_every_mode(kind, tmp_path):
    """A plan far below the stored size reduces palette, 16-bit and alpha images too."""
    from curation.demo import write_bad_inputs

    path = write_bad_inputs(tmp_path)[kind]
    item = open_item(path.read_bytes(), DecodePlan("rgb", min_long_side=32, max_reduction=8))
    assert item.image.mode == "RGB" and item.reduction > 1
    assert max(item.image.size) >= 32
