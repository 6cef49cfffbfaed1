import numpy as np
import pyarrow as pa
import pytest
import torch

from curation.steps.export.export import StageConfig, evaluate
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.storage.lake import Lake
from curation.storage.schemas import CAPTION_FIELDS_TYPE
from curation.steps.export.rules import RulesConfig
from curation.steps.profiling.score import ScoreConfig, Scorer, alignment_column, preflight, prepare_batch, score
from curation.steps.vectors.embeddings import read_embeddings
from curation.demo import write_bad_inputs
from operators.models.base import WeightsError
from operators.models.encoders import EncoderConfig, image_geometry
from operators.models.heads import HeadConfig
from tiny_models import TINY_OPEN_CLIP, tiny_cn_clip_dir

DECODABLE = ["grayscale", "palette_transparency", "rgba", "png16", "cmyk", "animated_gif", "exif_rotated"]
BAD = ["empty", "truncated", "html_as_png", "huge_header"]


def _cfg(cn_dir=None, **kw) -> ScoreConfig:
    encoders = [EncoderConfig(name="clip", model="ViT-B-32", random=True, model_overrides=TINY_OPEN_CLIP)]
    if cn_dir is not None:
        encoders.append(EncoderConfig(name="cn", backend="chinese_clip", pretrained=str(cn_dir)))
    heads = [HeadConfig(name=k, kind=k, encoder="clip", random=True, seed=i)
             for i, k in enumerate(["aesthetic", "nsfw", "aigc"])]
    base = dict(encoders=encoders, heads=heads, alignment_encoder="cn" if cn_dir else "clip",
                caption_fields=["caption", "caption_zh"] if cn_dir else ["caption"], batch_size=8,
                max_pixels=50_000_000)
    base.update(kw)
    return ScoreConfig(**base)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_bad_inputs(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def cn_dir(tmp_path_factory):
    return tiny_cn_clip_dir(tmp_path_factory.mktemp("cn") / "tiny-cn")


def _pool(inputs, kinds):
    n = len(kinds)
    captions = ["a red car on the grass" if i % 3 else None for i in range(n)]
    zh = [[("caption_zh", "红色的汽车")]] * n
    return pa.table({"id": kinds, "uri": [str(inputs[k]) for k in kinds], "byte_offset": [None] * n,
                     "byte_size": [None] * n, "error": [None] * n, "caption": captions,
                     "caption_fields": pa.array([[{"key": k, "value": v} for k, v in z] if z else None for z in zh],
                                                CAPTION_FIELDS_TYPE)})


def _run_local(cfg, pool, scorer=None):
    preps = {e.name: image_geometry(e) for e in cfg.encoders}
    batch = prepare_batch(pool, preps, cfg.caption_fields, cfg.max_pixels)
    scorer = scorer or Scorer(cfg)
    return scorer(batch), scorer


def test_one_forward_per_encoder_shared_by_all_heads(inputs, cn_dir, monkeypatch):
    cfg = _cfg(cn_dir)
    kinds = DECODABLE + BAD
    scorer = Scorer(cfg)
    seen: dict[str, list[int]] = {"clip": [], "cn": []}
    for name, enc in scorer.encoders.items():
        real = enc.encode_images
        monkeypatch.setattr(enc, "encode_images", lambda px, real=real, name=name: seen[name].append(len(px)) or real(px))
    out, _ = _run_local(cfg, _pool(inputs, kinds), scorer)
    assert out.num_rows == len(kinds)
    # one forward per encoder for the batch, over exactly the decodable images
    assert seen == {"clip": [len(DECODABLE)], "cn": [len(DECODABLE)]}
    rows = {r["id"]: r for r in out.to_pylist()}
    for k in DECODABLE:
        r = rows[k]
        assert r["error"] is None and np.isfinite(r["aesthetic"]) and 0 <= r["nsfw"] <= 1 and 0 <= r["aigc"] <= 1
        assert -1 <= r["clip_alignment_caption_zh"] <= 1
        assert len(r["embedding__clip"]) == 32 and len(r["embedding__cn"]) == 16
        assert abs(np.linalg.norm(np.asarray(r["embedding__clip"], np.float32)) - 1) < 1e-2
    for k in BAD:
        r = rows[k]
        assert r["error"].startswith("decode:") and r["aesthetic"] is None and r["embedding__clip"] is None
    # no caption -> no alignment; the caption_zh field is aligned separately
    assert rows[DECODABLE[0]]["clip_alignment"] is None and rows[DECODABLE[1]]["clip_alignment"] is not None


def test_batched_equals_per_image_reference(inputs):
    cfg = _cfg()
    pool = _pool(inputs, DECODABLE)
    batched, scorer = _run_local(cfg, pool)
    for i in range(pool.num_rows):
        single, _ = _run_local(cfg, pool.slice(i, 1), scorer)
        for col in ("aesthetic", "nsfw", "aigc", "clip_alignment"):
            a, b = batched[col][i].as_py(), single[col][0].as_py()
            assert (a is None and b is None) or abs(a - b) < 1e-4, (col, i, a, b)


def test_heads_read_the_shared_embedding(inputs):
    """Each head's score equals the head applied directly to the encoder's embedding."""
    cfg = _cfg()
    out, scorer = _run_local(cfg, _pool(inputs, DECODABLE))
    enc = scorer.encoders["clip"]
    batch = prepare_batch(_pool(inputs, DECODABLE), {"clip": image_geometry(cfg.encoders[0])}, ["caption"],
                          cfg.max_pixels)
    emb = enc.encode_images(batch["pixels__clip"])
    for _, head in scorer.heads:
        expect = head.score(emb).numpy()
        np.testing.assert_allclose(out[head.name].to_numpy(zero_copy_only=False), expect, rtol=1e-5, atol=1e-5)


def test_preflight_fails_fast_and_optional_heads_skip(tmp_path):
    missing = str(tmp_path / "nope.pth")
    cfg = _cfg(heads=[HeadConfig(name="aesthetic", kind="aesthetic", encoder="clip", weights=missing)])
    with pytest.raises(WeightsError, match=r"heads\[\]\.weights"):
        preflight(cfg)
    cfg = _cfg(heads=[HeadConfig(name="aesthetic", kind="aesthetic", encoder="clip", weights=missing, optional=True)])
    active, skipped = preflight(cfg)
    assert active == [] and "aesthetic" in skipped
    with pytest.raises(WeightsError, match=r"encoders\[\]\.pretrained"):
        preflight(ScoreConfig(encoders=[EncoderConfig(name="x", model="ViT-B-32", pretrained=missing)]))
    with pytest.raises(ValueError, match="not among"):
        preflight(_cfg(alignment_encoder="nope"))


def test_score_step_tables_and_rules(ray_session, inputs, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(inputs["grayscale"].parent)))
    n = lake.read("pool").num_rows
    cfg = _cfg(heads=_cfg().heads + [HeadConfig(name="extra", kind="aesthetic", encoder="clip",
                                                weights=str(tmp_path / "absent.pth"), optional=True)])
    s = score(lake, cfg)
    assert s.rows_in == n and s.rows_out == n
    assert "random weights" in s.notes["WARNING"] and "extra" in s.notes["skipped_heads"]
    scores = lake.read("scores")
    assert scores.num_rows == n and {"aesthetic", "nsfw", "aigc", "clip_alignment"} <= set(scores.column_names)
    emb = lake.read("embeddings/clip")
    assert emb.schema.field("vector").type == pa.binary()  # float16 packed: Delta has no float16
    emb_ids, vectors = read_embeddings(lake, "clip")
    assert vectors.dtype == np.float16 and vectors.shape == (emb.num_rows, 32)
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)
    ok = scores.filter(pa.compute.is_null(scores["error"]))
    assert sorted(emb_ids.to_pylist()) == sorted(ok["id"].to_pylist())
    assert score(lake, cfg).notes.get("up_to_date")  # incremental: nothing left to do
    # export sees the score columns: thresholds by value and by pool percentile
    from curation.steps.profiling.profile import ProfileConfig, profile

    profile(lake, ProfileConfig(max_pixels=50_000_000))
    stage = StageConfig(rules=RulesConfig(max_score={"nsfw": 2.0}, min_percentile={"aesthetic": 50}))
    ev = evaluate(lake, stage)
    kept = ev.table.filter(ev.table["keep"])
    valid = ok["aesthetic"].to_numpy()
    assert kept.num_rows == int((valid >= np.percentile(valid, 50)).sum())
    assert ev.removed_per_rule.get("min_percentile:aesthetic", 0) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_scores_match_cpu(inputs):
    cfg = _cfg()
    pool = _pool(inputs, DECODABLE)
    gpu, scorer = _run_local(cfg, pool)
    assert scorer.device.type == "cuda"
    cpu_cfg = _cfg(encoders=[EncoderConfig(name="clip", model="ViT-B-32", random=True,
                                           model_overrides=TINY_OPEN_CLIP, precision="fp32")])
    cpu, _ = _run_local(cpu_cfg, pool)
    np.testing.assert_allclose(gpu["aesthetic"].to_numpy(), cpu["aesthetic"].to_numpy(), rtol=2e-2, atol=2e-2)


def test_alignment_column_names():
    assert alignment_column("caption") == "clip_alignment"
    assert alignment_column("caption_zh") == "clip_alignment_caption_zh"
