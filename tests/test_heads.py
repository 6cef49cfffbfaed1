"""Scoring heads: public file layouts load key for key and compute what the projects compute.

Each reference below is written with numpy from the state dict itself, never through the module,
so a wrong layer order, activation or normalisation in the module shows up as a mismatch.
"""

import hashlib
from collections import OrderedDict

import numpy as np
import pytest
import torch

from operators.models.base import ImageEmbeddings, WeightsError, l2_normalize
from operators.models.heads import (
    AestheticHead,
    AigcHead,
    HeadConfig,
    MlpHead,
    NsfwHead,
    check_head_weights,
    load_head,
)

D = 32  # small width for the generic tests; the public layouts are also checked at 768


def rand_linear(g, out_dim, in_dim, scale=1.0):
    """(weight, bias) as nn.Linear stores them: weight (out, in)."""
    w = torch.randn(out_dim, in_dim, generator=g) * scale / in_dim**0.5
    return w, torch.randn(out_dim, generator=g) * 0.1


def linear_np(x, sd, prefix):
    return x @ sd[f"{prefix}.weight"].numpy().astype(np.float64).T + sd[f"{prefix}.bias"].numpy()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def aesthetic_state(d, seed=0):
    """improved-aesthetic-predictor file: keys layers.{0,2,4,6,7}.{weight,bias}."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for idx, (o, i) in zip((0, 2, 4, 6, 7), ((1024, d), (128, 1024), (64, 128), (16, 64), (1, 16))):
        sd[f"layers.{idx}.weight"], sd[f"layers.{idx}.bias"] = rand_linear(g, o, i)
    return sd


def nsfw_state(d, seed=0):
    """CLIP-based-NSFW-Detector PyTorch port: norm.{mean,variance}, linear_1..4."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    sd["norm.mean"] = torch.randn(d, generator=g) * 0.02
    sd["norm.variance"] = torch.rand(d, generator=g) * 1e-3 + 1e-4
    sd["norm.variance"][0] = 0.0  # a constant feature: Keras divides by epsilon, not by zero
    for n, (o, i) in enumerate(((64, d), (512, 64), (256, 512), (1, 256)), start=1):
        sd[f"linear_{n}.weight"], sd[f"linear_{n}.bias"] = rand_linear(g, o, i)
    return sd


def univfd_state(d, seed=0):
    """UnivFD fc_weights.pth: `model.fc.state_dict()`, bare keys."""
    w, b = rand_linear(torch.Generator().manual_seed(seed), 1, d)
    return OrderedDict(weight=w, bias=b)


def save(tmp_path, obj, name="head.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def embeddings(n, d, seed=1):
    raw = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3
    return ImageEmbeddings(raw=raw, normalized=l2_normalize(raw))


# ----------------------------------------------------------------------------- public layouts


def test_aesthetic_layout_matches_reference(tmp_path):
    sd = aesthetic_state(768)
    head = load_head(HeadConfig("aesthetic", "aesthetic", "clip_l14", str(save(tmp_path, sd))), 768)
    assert isinstance(head, AestheticHead) and not head.training and head.input == "normalized"
    emb = embeddings(5, 768)
    x = emb.normalized.numpy().astype(np.float64)
    for idx in (0, 2, 4, 6, 7):  # no activations in the released model; dropout off in eval
        x = linear_np(x, sd, f"layers.{idx}")
    out = head.score(emb)
    assert out.shape == (5,) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), x[:, 0], rtol=1e-4, atol=1e-5)


def test_nsfw_layout_matches_keras_reference(tmp_path):
    sd = nsfw_state(768)
    head = load_head(HeadConfig("nsfw", "nsfw", "clip_l14", str(save(tmp_path, sd))), 768)
    assert isinstance(head, NsfwHead) and head.input == "normalized"
    emb = embeddings(6, 768)
    x = emb.normalized.numpy().astype(np.float64)
    x[:, 0] = sd["norm.mean"][0].item()  # hits the zero-variance feature exactly
    std = np.maximum(np.sqrt(sd["norm.variance"].numpy().astype(np.float64)), 1e-7)
    h = (x - sd["norm.mean"].numpy()) / std
    for n in (1, 2, 3):
        h = np.maximum(linear_np(h, sd, f"linear_{n}"), 0.0)
    ref = sigmoid(linear_np(h, sd, "linear_4"))[:, 0]
    with torch.no_grad():
        out = head(torch.from_numpy(x).float())
    assert torch.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    assert out.std() > 0.01  # not saturated, so the comparison below means something
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert set(head.state_dict()) == set(sd)  # mean/variance are buffers in the state dict


@pytest.mark.parametrize("prefix", ["", "fc."])
def test_aigc_univfd_layout_reads_raw_embedding(tmp_path, prefix):
    sd = {prefix + k: v for k, v in univfd_state(768).items()}
    head = load_head(HeadConfig("aigc", "aigc", "clip_l14", str(save(tmp_path, sd))), 768)
    assert isinstance(head, AigcHead) and head.input == "raw"
    emb = embeddings(4, 768)
    w, b = sd[prefix + "weight"].numpy(), sd[prefix + "bias"].numpy()
    ref = sigmoid(emb.raw.numpy().astype(np.float64) @ w.T + b)[:, 0]
    np.testing.assert_allclose(head.score(emb).numpy(), ref, rtol=1e-4, atol=1e-6)


def test_mlp_head_from_config(tmp_path):
    g = torch.Generator().manual_seed(2)
    sd = {}
    sd["layers.0.weight"], sd["layers.0.bias"] = rand_linear(g, 16, D)
    sd["layers.2.weight"], sd["layers.2.bias"] = rand_linear(g, 8, 16)
    sd["layers.4.weight"], sd["layers.4.bias"] = rand_linear(g, 1, 8)
    cfg = HeadConfig("q", "mlp", "enc", str(save(tmp_path, sd)), hidden=[16, 8],
                     activation="relu", input="raw", output="sigmoid")
    head = load_head(cfg, D)
    assert isinstance(head, MlpHead)
    emb = embeddings(3, D)
    h = np.maximum(linear_np(emb.raw.numpy().astype(np.float64), sd, "layers.0"), 0)
    h = np.maximum(linear_np(h, sd, "layers.2"), 0)
    ref = sigmoid(linear_np(h, sd, "layers.4"))[:, 0]
    np.testing.assert_allclose(head.score(emb).numpy(), ref, rtol=1e-4, atol=1e-6)
    # Without an activation the Linear layers sit at consecutive indices.
    linear_only = MlpHead(D, hidden=[4], activation="none")
    assert list(linear_only.state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]


def test_score_picks_the_declared_embedding():
    emb = embeddings(2, D)
    for head, want in [
        (AestheticHead(D), emb.normalized),
        (NsfwHead(D), emb.normalized),
        (AigcHead(D), emb.raw),
        (MlpHead(D, input="raw"), emb.raw),
        (MlpHead(D), emb.normalized),
    ]:
        head.eval()
        assert torch.equal(head.score(emb), head(want)), type(head).__name__


def test_wrappers_are_unwrapped(tmp_path):
    sd = univfd_state(D)
    wrapped = {"state_dict": {f"module.fc.{k}": v for k, v in sd.items()}, "epoch": 3}
    head = load_head(HeadConfig("aigc", "aigc", "e", str(save(tmp_path, wrapped))), D)
    assert torch.equal(head.fc.weight, sd["weight"])


# ----------------------------------------------------------------------------- strictness


def test_wrong_extra_and_misshapen_keys_listed_in_one_error(tmp_path):
    sd = aesthetic_state(D)
    del sd["layers.7.bias"]
    sd["layers.9.weight"] = torch.zeros(1)
    sd["layers.4.weight"] = torch.zeros(64, 99)
    path = save(tmp_path, sd)
    with pytest.raises(WeightsError) as err:
        load_head(HeadConfig("aesthetic", "aesthetic", "e", str(path)), D)
    msg = str(err.value)
    for part in (
        "'aesthetic'",
        "improved-aesthetic-predictor",
        str(path),
        "missing keys ['layers.7.bias']",
        "unexpected keys ['layers.9.weight']",
        "layers.4.weight: expected (64, 128), got (64, 99)",
    ):
        assert part in msg, part


def test_width_mismatch_with_encoder_rejected(tmp_path):
    path = save(tmp_path, nsfw_state(768))
    with pytest.raises(WeightsError, match=r"norm.mean: expected \(32,\), got \(768,\)"):
        load_head(HeadConfig("nsfw", "nsfw", "e", str(path)), D)
    with pytest.raises(ValueError, match="in_dim 768 but encoder 'e' embeds 32"):
        load_head(HeadConfig("nsfw", "nsfw", "e", str(path), in_dim=768), D)


class NotATensor:
    pass


def test_pickled_object_rejected_by_weights_only(tmp_path):
    path = save(tmp_path, {"weight": NotATensor(), "bias": torch.zeros(1)})
    with pytest.raises(WeightsError, match="weights_only"):
        load_head(HeadConfig("aigc", "aigc", "e", str(path)), D)


def test_non_tensor_value_rejected(tmp_path):
    path = save(tmp_path, {"weight": 3, "bias": torch.zeros(1)})
    with pytest.raises(WeightsError, match="fc.weight: expected tensor"):
        load_head(HeadConfig("aigc", "aigc", "e", str(path)), D)


def test_mlp_settings_on_public_layout_rejected():
    with pytest.raises(ValueError, match="apply to kind 'mlp' only"):
        check_head_weights(HeadConfig("aigc", "aigc", "e", random=True, input="normalized",
                                      output="sigmoid"))


# ----------------------------------------------------------------------------- missing weights


def test_missing_weights_name_the_key_to_set(tmp_path):
    with pytest.raises(WeightsError, match=r"has no weights: set heads\[\]\.weights .*optional"):
        load_head(HeadConfig("aesthetic", "aesthetic", "e"), D)
    missing = tmp_path / "nope.pth"
    cfg = HeadConfig("aesthetic", "aesthetic", "e", str(missing))
    for fn in (check_head_weights, lambda c: load_head(c, D)):
        with pytest.raises(WeightsError) as err:
            fn(cfg)
        assert str(missing) in str(err.value) and "heads[].weights" in str(err.value)


def test_optional_missing_is_skipped(tmp_path):
    cfg = HeadConfig("nsfw", "nsfw", "e", str(tmp_path / "nope.pth"), optional=True)
    assert "nope.pth" in check_head_weights(cfg)
    assert load_head(cfg, D) is None
    assert check_head_weights(HeadConfig("nsfw", "nsfw", "e", optional=True)) is not None


def test_present_file_passes_preflight(tmp_path):
    cfg = HeadConfig("aigc", "aigc", "e", str(save(tmp_path, univfd_state(D))))
    assert check_head_weights(cfg) is None


# ----------------------------------------------------------------------------- provenance, random


def test_identity_is_the_file_hash(tmp_path):
    path = save(tmp_path, univfd_state(D))
    head = load_head(HeadConfig("aigc", "aigc", "e", str(path)), D)
    assert head.identity == "aigc@" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert head.random_weights is False


@pytest.mark.parametrize("kind", ["aesthetic", "nsfw", "aigc", "mlp"])
def test_random_init_reproducible_and_leaves_global_rng(kind):
    rng_before = torch.get_rng_state()
    a, b, c = (load_head(HeadConfig(kind, kind, "e", random=True, seed=s), D) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert a.random_weights and a.identity == f"{kind}@random-7" and not a.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    out = a.score(embeddings(3, D))
    assert out.shape == (3,) and torch.isfinite(out).all()
