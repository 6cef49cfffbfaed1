"""Encoders: tiny random open_clip / Chinese-CLIP models built in-process (no downloads, CPU)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from operators.models.base import WeightsError
from operators.models.encoders import (
    EncoderConfig, check_encoder_weights, encoder_dtype, encoder_identity, image_geometry, load_encoder,
)
from operators.models.open_clip_encoder import resolve_source
from operators.models.prep import OpenClipGeometry
from tiny_models import TINY_OPEN_CLIP, tiny_cn_clip_dir

def tiny_cfg(**kw) -> EncoderConfig:
    base = dict(name="tiny", backend="open_clip", model="ViT-B-32", random=True, model_overrides=TINY_OPEN_CLIP)
    base.update(kw)
    return EncoderConfig(**base)


def sample_images() -> list[Image.Image]:
    """Four RGB images of different shapes, with structure (gradients) and noise."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(40, 64), (64, 40), (32, 32), (21, 90)]:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
        arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr, "RGB"))
    return out


def sha12(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]


@pytest.fixture(scope="module")
def tiny_enc():
    return load_encoder(tiny_cfg())


# --- open_clip -------------------------------------------------------------------------------


def test_open_clip_random_tiny(tiny_enc):
    assert image_geometry(tiny_cfg()) == tiny_enc.geometry and encoder_identity(tiny_cfg()) == tiny_enc.identity
    enc = tiny_enc
    assert enc.random_weights and enc.identity == f"tiny@ViT-B-32{_ovr()}#random-0"
    assert enc.embed_dim == 32 and enc.image_size == (32, 32)
    pixels = np.stack([enc.prepare(im) for im in sample_images()])
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 32, 32, 3)
    emb = enc.encode_images(pixels)
    assert emb.raw.dtype == emb.normalized.dtype == torch.float32 and emb.raw.shape == (4, 32)
    torch.testing.assert_close(emb.normalized.norm(dim=-1), torch.ones(4))
    for i in range(4):  # batched == one at a time
        one = enc.encode_images(pixels[i : i + 1])
        torch.testing.assert_close(one.raw[0], emb.raw[i], atol=1e-5, rtol=1e-5)
    # Seeded init is reproducible and does not depend on (or disturb) the global RNG.
    torch.manual_seed(999)
    state = torch.get_rng_state()
    again = load_encoder(tiny_cfg())
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(again.encode_images(pixels).raw, emb.raw)
    other = load_encoder(tiny_cfg(seed=1))
    assert other.identity.endswith("#random-1")
    assert not torch.allclose(other.encode_images(pixels).raw, emb.raw)
    assert enc.encode_images(pixels[:0]).raw.shape == (0, 32)
    with pytest.raises(ValueError, match="uint8"):
        enc.encode_images(pixels.astype(np.float32))


def test_open_clip_texts(tiny_enc):
    texts = ["a photo of a cat", "a red car on the grass", "一只猫", "x " * 100]  # last one is truncated
    emb = tiny_enc.encode_texts(texts)
    assert emb.shape == (4, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    for i, t in enumerate(texts):
        torch.testing.assert_close(tiny_enc.encode_texts([t])[0], emb[i], atol=1e-5, rtol=1e-5)
    assert tiny_enc.encode_texts([]).shape == (0, 32)


def test_prepare_matches_open_clip_transform(tiny_enc):
    """prepare + the actor's normalisation == open_clip's own eval transform of the same image."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = tiny_enc.model.visual.preprocess_cfg
    transform = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    mean, std = torch.tensor(pp["mean"]).view(3, 1, 1), torch.tensor(pp["std"]).view(3, 1, 1)
    for im in sample_images():
        ours = (torch.from_numpy(tiny_enc.prepare(im)).permute(2, 0, 1).float() / 255 - mean) / std
        torch.testing.assert_close(ours, transform(im), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_geometry_matches_open_clip_modes(mode, size, interp):
    from open_clip.transform import image_transform

    t = image_transform(size, is_train=False, resize_mode=mode, interpolation=interp, fill_color=0)
    for im in sample_images():
        ours = OpenClipGeometry(size, interp, mode)(im)
        assert ours.shape == (size[0], size[1], 3)
        expect = im
        for step in t.transforms[:-3]:  # open_clip's geometry steps (then convert, ToTensor, Normalize)
            expect = step(expect)
        assert np.array_equal(np.asarray(ours), np.asarray(expect)), (mode, size, interp)


def test_checkpoint_file_and_local_dir(tiny_enc, tmp_path):
    pixels = np.stack([tiny_enc.prepare(im) for im in sample_images()])
    ref = tiny_enc.encode_images(pixels).raw
    ref_txt = tiny_enc.encode_texts(["a cat"])

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_enc.model.state_dict(), ckpt)
    # A different seed proves the weights come from the file, not the init.
    enc = load_encoder(tiny_cfg(pretrained=str(ckpt), random=False, seed=7))
    assert not enc.random_weights and enc.identity == f"tiny@ViT-B-32{_ovr()}#{sha12(ckpt)}"
    torch.testing.assert_close(enc.encode_images(pixels).raw, ref)
    torch.testing.assert_close(enc.encode_texts(["a cat"]), ref_txt)

    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_enc.model.state_dict().items()}, str(st))
    enc = load_encoder(tiny_cfg(pretrained=str(st), random=False))
    torch.testing.assert_close(enc.encode_images(pixels).raw, ref)

    # local-dir: the layout open_clip's `local-dir:` schema reads (config + weights, no overrides).
    d = tmp_path / "oc_dir"
    d.mkdir()
    (d / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {"interpolation": "bilinear"}})
    )
    torch.save(tiny_enc.model.state_dict(), d / "open_clip_pytorch_model.bin")
    cfg = EncoderConfig(name="ld", pretrained=f"local-dir:{d}")
    check_encoder_weights(cfg)
    enc = load_encoder(cfg)
    assert enc.identity == f"ld@oc_dir#{sha12(d / 'open_clip_pytorch_model.bin')}"
    assert enc.geometry.interpolation == "bilinear" and enc.image_size == (32, 32)
    # the scoring step's CPU stage resolves the same geometry from the config alone
    assert image_geometry(cfg) == enc.geometry and encoder_identity(cfg) == enc.identity
    assert image_geometry(tiny_cfg(pretrained=str(ckpt), random=False)) == load_encoder(
        tiny_cfg(pretrained=str(ckpt), random=False)).geometry
    torch.testing.assert_close(enc.encode_images(pixels).raw, ref)
    torch.testing.assert_close(enc.encode_texts(["a cat"]), ref_txt)


def test_hf_hub_from_local_cache_only(tiny_enc, tmp_path, monkeypatch):
    """hf-hub:org/repo resolves from a (hand-made) hub cache with the hub forced offline."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    torch.save(tiny_enc.model.state_dict(), snap / "open_clip_pytorch_model.bin")

    offline_before = (hub_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    enc = load_encoder(EncoderConfig(name="hub", pretrained="hf-hub:acme/tiny-clip"))
    assert enc.identity == f"hub@acme/tiny-clip#{sha12(snap / 'open_clip_pytorch_model.bin')}"
    assert (hub_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == offline_before  # restored
    pixels = np.stack([tiny_enc.prepare(im) for im in sample_images()])
    torch.testing.assert_close(enc.encode_images(pixels).raw, tiny_enc.encode_images(pixels).raw)


def test_open_clip_weights_errors(tiny_enc, tmp_path, monkeypatch):
    # Empty caches: HOME for open_clip's ~/.cache/clip, the hub cache for HF files.
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    cases = [
        (tiny_cfg(random=False), "pretrained is not set"),
        (tiny_cfg(pretrained=str(tmp_path / "nope.bin")), "nope.bin not found"),
        (tiny_cfg(model="ViT-B-32-quickgelu", pretrained="openai", model_overrides={}), "not in the local cache"),
        (EncoderConfig(name="h", pretrained="hf-hub:org/not-cached"), "not in the local Hugging Face cache"),
        (EncoderConfig(name="l", pretrained=f"local-dir:{tmp_path / 'missing'}"), "not found"),
    ]
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    cases.append((EncoderConfig(name="e", pretrained=f"local-dir:{empty}"), "no \\*.safetensors"))
    for cfg, msg in cases:
        with pytest.raises(WeightsError, match=msg) as ei:
            check_encoder_weights(cfg)
        assert "set encoders[]" in str(ei.value) or "download it" in str(ei.value)
        with pytest.raises(WeightsError, match=msg):
            load_encoder(cfg)
    with pytest.raises(ValueError, match="encoders\\[\\].model"):
        check_encoder_weights(EncoderConfig(name="u", model="No-Such-Arch", random=True))

    # A tag found in open_clip's URL cache resolves to that file with the tag's preprocessing...
    url = open_clip.get_pretrained_cfg("ViT-B-32-quickgelu", "openai")["url"]
    cached = tmp_path / "home" / ".cache" / "clip" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not really weights")
    src = resolve_source(EncoderConfig(name="t", model="ViT-B-32-quickgelu", pretrained="openai"))
    assert src.pretrained == str(cached) and src.preprocess["resize_mode"] == "shortest"
    # ...but OpenAI weights on a GELU architecture would be silently wrong: refused.
    with pytest.raises(WeightsError, match="ViT-B-32-quickgelu"):
        check_encoder_weights(EncoderConfig(name="t", model="ViT-B-32", pretrained="openai"))

    # A checkpoint that does not fit the configured architecture.
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_enc.model.state_dict(), ckpt)
    wrong = dict(TINY_OPEN_CLIP, embed_dim=16)
    with pytest.raises(WeightsError, match="model_overrides"):
        load_encoder(tiny_cfg(pretrained=str(ckpt), model_overrides=wrong))


def test_encoder_config_fields():
    assert encoder_dtype(tiny_cfg(), "cpu") == torch.float32
    assert encoder_dtype(tiny_cfg(), "cuda") == torch.float16
    assert encoder_dtype(tiny_cfg(precision="bf16"), "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="backend"):
        EncoderConfig(name="x", backend="nope")
    with pytest.raises(ValueError, match="unknown keys"):
        EncoderConfig.from_dict({"name": "x", "pretraind": "y"})
    assert EncoderConfig.from_dict({"name": "x", "random": True, "model": "ViT-B-32"}).random


# --- Chinese-CLIP ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cn_dir(tmp_path_factory):
    return tiny_cn_clip_dir(tmp_path_factory.mktemp("cn") / "tiny-cn-clip")


def test_chinese_clip_encoder(cn_dir):
    enc = load_encoder(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir)))
    assert enc.identity == f"cn@tiny-cn-clip#{sha12(cn_dir / 'model.safetensors')}"
    assert enc.embed_dim == 16 and enc.image_size == (32, 32) and not enc.random_weights
    assert image_geometry(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir))) == enc.geometry
    assert encoder_identity(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir))) == enc.identity
    texts = ["一只猫在草地上", "a red car on the grass", "红色的汽车", "a photo of cats and dogs"]
    t = enc.encode_texts(texts)
    assert t.shape == (4, 16) and t.dtype == torch.float32
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(4))
    for i, s in enumerate(texts):  # padding to the batch's longest text does not change a row
        torch.testing.assert_close(enc.encode_texts([s])[0], t[i], atol=1e-5, rtol=1e-5)
    assert len(set(map(tuple, t.numpy().round(5)))) == 4  # Chinese and English tokens are distinct
    pixels = np.stack([enc.prepare(im) for im in sample_images()])
    emb = enc.encode_images(pixels)
    assert emb.raw.shape == (4, 16) and emb.normalized.dtype == torch.float32
    torch.testing.assert_close(emb.normalized.norm(dim=-1), torch.ones(4))
    for i in range(4):
        torch.testing.assert_close(enc.encode_images(pixels[i : i + 1]).raw[0], emb.raw[i], atol=1e-5, rtol=1e-5)
    # raw is the projected feature of HF's own forward
    pv = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - enc._mean) / enc._std
    out = enc.model.get_image_features(pixel_values=pv)
    torch.testing.assert_close(emb.raw, getattr(out, "pooler_output", out))


@pytest.mark.parametrize("kind", ["squash", "shortest_crop"])
def test_chinese_clip_prepare_matches_processor(tmp_path, kind):
    from transformers import ChineseCLIPImageProcessor, ChineseCLIPProcessor

    kw = None
    if kind == "shortest_crop":  # transformers' default ChineseCLIPImageProcessor policy
        kw = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True)
    d = tiny_cn_clip_dir(tmp_path / kind, kw)
    enc = load_encoder(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(d)))
    assert image_geometry(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(d))) == enc.geometry
    proc = ChineseCLIPProcessor.from_pretrained(d, local_files_only=True).image_processor
    pil_proc = _pil_backend(proc)
    for im in sample_images():
        ours = (torch.from_numpy(enc.prepare(im)).permute(2, 0, 1).float()[None] * enc._scale - enc._mean) / enc._std
        theirs = proc(images=im, return_tensors="pt")["pixel_values"]
        assert ours.shape == theirs.shape
        # The default processor resizes torch tensors (antialiased bicubic), we resize in PIL.
        assert (ours - theirs).abs().mean() < 1e-2
        if pil_proc is not None:  # the PIL backend resizes exactly as we do
            exact = pil_proc(images=im, return_tensors="pt")["pixel_values"]
            torch.testing.assert_close(ours, exact, atol=1e-4, rtol=0)
    assert isinstance(proc, ChineseCLIPImageProcessor)


def _pil_backend(proc):
    try:
        from transformers import ChineseCLIPImageProcessorPil
    except ImportError:
        return None
    keys = ("size", "crop_size", "do_center_crop", "do_resize", "resample", "image_mean", "image_std")
    return ChineseCLIPImageProcessorPil(**{k: _plain(getattr(proc, k)) for k in keys})


def _plain(v):
    if hasattr(v, "__dataclass_fields__"):  # SizeDict -> dict of the set keys
        return {k: getattr(v, k) for k in v.__dataclass_fields__ if getattr(v, k) is not None}
    return v


def test_chinese_clip_weights_errors(cn_dir, tmp_path):
    pytest.importorskip("transformers")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((cn_dir / "config.json").read_text())
    cases = [
        (EncoderConfig(name="c", backend="chinese_clip"), "no random init"),
        (EncoderConfig(name="c", backend="chinese_clip", random=True), "no random init"),
        (EncoderConfig(name="c", backend="chinese_clip", pretrained=str(tmp_path / "none")), "not found"),
        (EncoderConfig(name="c", backend="chinese_clip", pretrained=str(broken)), "model.safetensors"),
    ]
    for cfg, msg in cases:
        with pytest.raises(WeightsError, match=msg) as ei:
            check_encoder_weights(cfg)
        assert "set encoders[].pretrained" in str(ei.value)
        with pytest.raises(WeightsError, match=msg):
            load_encoder(cfg)
    check_encoder_weights(EncoderConfig(name="c", backend="chinese_clip", pretrained=str(cn_dir)))


# --- reduced precision -----------------------------------------------------------------------


def _low_precision_matches(cfg, device, dtype, atol):
    ref = load_encoder(cfg)
    pixels = np.stack([ref.prepare(im) for im in sample_images()])
    texts = ["a red car", "一只猫"]
    want_img, want_txt = ref.encode_images(pixels).normalized, ref.encode_texts(texts)
    enc = load_encoder(cfg).to(device, dtype)
    assert enc.dtype == dtype
    got = enc.encode_images(pixels)
    assert got.raw.device.type == torch.device(device).type and got.raw.dtype == torch.float32
    torch.testing.assert_close(got.normalized.cpu(), want_img, atol=atol, rtol=0)
    torch.testing.assert_close(enc.encode_texts(texts).cpu(), want_txt, atol=atol, rtol=0)


def test_bf16_cast_on_cpu(cn_dir):
    """The cast path (every parameter and buffer, fp32 outputs) without a GPU."""
    _low_precision_matches(tiny_cfg(), "cpu", torch.bfloat16, 2e-2)
    _low_precision_matches(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir)), "cpu",
                           torch.bfloat16, 2e-2)


# --- CUDA ------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_matches_fp32(cn_dir):
    cn = EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir))
    for cfg in (tiny_cfg(), cn):
        assert encoder_dtype(cfg, "cuda") == torch.float16
        _low_precision_matches(cfg, "cuda", torch.float16, 1e-2)


def _ovr() -> str:
    from operators.models.encoders import overrides_tag

    return overrides_tag(TINY_OPEN_CLIP)
