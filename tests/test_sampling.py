"""Staged sampling: balancing formulas, the A-ES draw, batch plans, captions, and the lake step."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli.main import main
from curation.config.typed import ConfigError, from_dict, override
from curation.steps.export.buckets import map_resolution
from curation.steps.export.export import StageConfig, export
from curation.steps.pairs.table import add_pairs
from curation.steps.sampling.balance import Concepts, assign_concepts, balance_weights, marginal_report
from curation.steps.sampling.captions import choose_captions
from curation.steps.sampling.config import BalanceConfig, BatchConfig, CaptionPolicy, TextTokens
from curation.steps.sampling.draw import draw, item_uniforms
from curation.steps.sampling.plan import padding_stats, plan_batches
from curation.steps.sampling.sample import ConceptInfo, draw_stage, sample
from curation.steps.sampling.tokens import sequence_lengths, text_tokens
from curation.storage import schemas
from curation.storage.lake import Lake


def _ids(n, prefix="x"):
    import hashlib

    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


# --------------------------------------------------------------------------- balancing


def test_cap_keep_probability_is_metaclip_formula():
    # concept 1: 4 items, concept 2: 1 item; t = 2 -> p_1 = 0.5, p_2 = 1
    c = Concepts.from_arrow(pa.array([[1], [1], [1], [1, 2], None, [2, 2]], pa.list_(pa.int64())))
    res = balance_weights(c, BalanceConfig(mode="cap", cap=2))
    # [1,2]: 1 - (1 - 0.5)(1 - 1) = 1; untagged: 1; a repeated concept counts once
    np.testing.assert_allclose(res.weight, [0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
    assert res.expected_size == pytest.approx(4.5)


def test_uniform_weights_give_the_prior_as_concept_marginal():
    rng = np.random.default_rng(0)
    # Zipf-like concept sizes, items with 1-3 concepts
    lists = [sorted(set(rng.zipf(1.5, size=rng.integers(1, 4)).clip(1, 40).tolist())) for _ in range(3000)]
    c = Concepts.from_arrow(pa.array(lists, pa.list_(pa.int64())))
    prior = np.ones(len(c.ids))
    prior[0] = 3.0  # concept 1 wanted three times as often
    rarity, quality = rng.uniform(0.5, 2, 3000), rng.uniform(0.1, 1, 3000)
    res = balance_weights(c, BalanceConfig(mode="uniform"), rarity=rarity, quality=quality, prior=prior)
    # the terms of concept c over its items sum to pi(c): drawing by weight and naming the
    # concept by term reproduces pi exactly (in expectation)
    per_concept = np.bincount(c.index, weights=res.term, minlength=len(c.ids))
    np.testing.assert_allclose(per_concept, prior / prior.sum(), rtol=1e-9)
    assert res.weight.sum() == pytest.approx(1.0)
    # within a concept, rarer x better items weigh more
    only_1 = [i for i, x in enumerate(lists) if x == [1]]
    r = rarity[only_1] * quality[only_1]
    assert np.corrcoef(r, res.weight[only_1])[0, 1] > 0.99


def test_uniform_untagged_share_and_weight_mode():
    c = Concepts.from_arrow(pa.array([[1], [1], [2], None, []], pa.list_(pa.int64())))
    res = balance_weights(c, BalanceConfig(mode="uniform", untagged_share=0.2))
    np.testing.assert_allclose(res.weight, [0.2, 0.2, 0.4, 0.1, 0.1])
    assert balance_weights(c, BalanceConfig(mode="uniform")).weight[3:].tolist() == [0.0, 0.0]
    w = balance_weights(c, BalanceConfig(mode="weight"), kg_weight=np.array([2.0, np.nan, 0.5, 1, 1])).weight
    assert w.tolist() == [2.0, 1.0, 0.5, 1.0, 1.0]


def test_assign_concepts_follows_terms_and_marginal_report():
    c = Concepts.from_arrow(pa.array([[1, 2], [3], []], pa.list_(pa.int64())))
    term = np.array([0.0, 1.0, 1.0])
    got = assign_concepts(c, term, np.array([0, 0, 1, 2]), np.array([0.1, 0.9, 0.5, 0.5]))
    assert got.tolist() == [2, 2, 3, -1]  # concept 1 has no term: never named
    uniform = marginal_report(np.ones(8), 8, top_k=2)
    assert uniform["normalised_entropy"] == 1.0 and uniform["top_k_share"] == 0.25 and uniform["gini"] == 0
    gaps = marginal_report(np.array([5.0, 1.0]), 4, top_k=1)
    assert gaps["zero_item_concepts"] == 2 and gaps["normalised_entropy"] < 0.5


# --------------------------------------------------------------------------- the draw


def test_draw_is_exact_deterministic_and_layout_free(ray_session):
    n = 5000
    ids = _ids(n)
    rng = np.random.default_rng(1)
    table = pa.table({"id": ids, "source": pa.array(rng.integers(0, 2, n).astype(np.int32)),
                      "weight": rng.uniform(0, 1, n) ** 3, "row": np.arange(n)})
    quotas = {0: 300, 1: 100}
    local = draw(table, quotas, "s/e0/s0", use_ray=False)
    on_ray = draw(table, quotas, "s/e0/s0", use_ray=True, rows_per_block=700)
    shuffled = draw(table.take(rng.permutation(n)), quotas, "s/e0/s0", use_ray=True, rows_per_block=900)
    assert local["id"].to_pylist() == on_ray["id"].to_pylist() == shuffled["id"].to_pylist()
    counts = dict(zip(*np.unique(local["source"].to_numpy(), return_counts=True)))
    assert counts == {0: 300, 1: 100} and len(set(local["id"].to_pylist())) == 400
    other = draw(table, quotas, "s/e1/s0", use_ray=False)
    assert set(other["id"].to_pylist()) != set(local["id"].to_pylist())  # another epoch, another draw
    # heavier items are drawn more often: mean weight drawn is well above the pool's
    assert local["weight"].to_numpy().mean() > 2 * table["weight"].to_numpy().mean()


def test_item_uniforms_for_non_hex_ids():
    u = item_uniforms(pa.array(["a", "b", "pair-1"]), "salt")
    assert ((u > 0) & (u < 1)).all() and len(set(u.tolist())) == 3
    assert item_uniforms(pa.array(["a", "b", "pair-1"]), "salt").tolist() == u.tolist()


# --------------------------------------------------------------------------- batch plans


def test_plan_respects_budget_covers_everything_and_is_deterministic():
    rng = np.random.default_rng(2)
    n = 4000
    shapes = np.array([(256, 256), (192, 320), (320, 192), (512, 512)])[rng.integers(0, 4, n)]
    captions = ["word " * int(k) for k in rng.integers(1, 60, n)]
    cfg = BatchConfig(token_budget=8192, chunk_size=512, max_per_bucket={"512x512": 6},
                      text_tokens=TextTokens(mode="estimate"))
    seq = sequence_lengths(shapes[:, 0], shapes[:, 1], captions, 16, cfg)
    plan = plan_batches(seq, shapes[:, 0], shapes[:, 1], cfg, seed=3)
    again = plan_batches(seq, shapes[:, 0], shapes[:, 1], cfg, seed=3)
    assert (plan.batch == again.batch).all() and (plan.position == again.position).all()
    assert plan.sizes.sum() == n and (plan.padded <= 8192).all()
    for b in range(plan.num_batches):
        members = np.flatnonzero(plan.batch == b)
        assert len({tuple(s) for s in shapes[members]}) == 1  # one bucket per batch
        assert sorted(plan.position[members].tolist()) == list(range(len(members)))
        if tuple(shapes[members[0]]) == (512, 512):
            assert len(members) <= 6
    stats = padding_stats(seq, plan.batch, 8192)
    rand = padding_stats(seq, np.arange(n) // 32)  # random fixed-size batches of 32
    assert stats["padding_waste"] < 0.05 < rand["padding_waste"] and stats["budget_used"] > 0.85
    # the batch order is shuffled: not sorted by bucket
    first = [tuple(shapes[np.flatnonzero(plan.batch == b)[0]]) for b in range(plan.num_batches)]
    assert first != sorted(first)


def test_mixed_shape_plan_and_text_tokens():
    seq = np.array([100, 3000, 90, 2900, 95, 3100])
    plan = plan_batches(seq, seq, seq, BatchConfig(token_budget=6200, same_shape=False), seed=0)
    groups = sorted(sorted(seq[plan.batch == b].tolist()) for b in range(plan.num_batches))
    assert groups == [[90, 95, 100], [2900, 3000], [3100]]
    t = text_tokens(["", None, "abcdefgh", "一只猫 cat"], TextTokens(mode="estimate", chars_per_token=4))
    assert t.tolist() == [0, 0, 2, 4]  # 3 Han characters, one token each, + ceil(4 other chars / 4)


def test_resolution_mapping_function():
    h, w = map_resolution([3000, 200, 1000, 100, 4000], [4000, 300, 1000, 1000, 1000], 512, 1536, 16, 3.0)
    assert list(zip(h.tolist(), w.tolist())) == [(1152, 1536), (336, 512), (1008, 1008), (176, 512), (1536, 512)]
    assert (h % 16 == 0).all() and (w % 16 == 0).all()


# --------------------------------------------------------------------------- captions


def test_caption_policy_levels_fallback_and_instruction():
    rows = pa.table({"kind": ["t2i", "t2i", "i2i", "t2i"], "caption": ["raw a", None, "raw c", None],
                     "caption_long": ["long a", None, None, None],
                     "caption_fields": pa.array([[{"key": "caption_zh", "value": "中文"}], None, None, None],
                                                schemas.CAPTION_FIELDS_TYPE),
                     "tags": [None, ["cat", "sofa"], None, None], "instruction": [None, None, "make it red", None]})
    policy = CaptionPolicy(levels={"long": 0.5, "field:caption_zh": 0.5}, raw=0.0, instruction=1.0)
    u = np.array([0.1, 0.1, 0.1, 0.9])
    got = choose_captions(rows, policy, u, np.zeros(4))
    assert got.text == ["long a", "cat, sofa", "make it red", ""]
    assert got.level == ["long", "source_tags", "instruction", "none"]
    assert got.fallbacks == 2 and got.no_text == 1
    assert choose_captions(rows, policy, np.array([0.9] * 4), np.zeros(4)).text[0] == "中文"
    with pytest.raises(ConfigError, match="unknown caption level 'longest'"):
        from_dict(StageConfig, {"captions": {"levels": {"longest": 1.0}}}, "stages.s")


def test_stage_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"stages.s.sources\[0\].*unknown source table 'pairs'"):
        from_dict(StageConfig, {"sources": [{"name": "a", "table": "pairs"}]}, "stages.s")
    with pytest.raises(ConfigError, match="stages.s.balance.mode"):
        from_dict(StageConfig, {"balance": {"mode": "flat"}}, "stages.s")
    with pytest.raises(ConfigError, match="max_per_bucket"):
        from_dict(StageConfig, {"batches": {"max_per_bucket": {"big": 3}}}, "stages.s")
    with pytest.raises(ConfigError, match="distinct"):
        from_dict(StageConfig, {"sources": [{"name": "a"}, {"name": "a"}]}, "stages.s")


# --------------------------------------------------------------------------- on a lake


@pytest.fixture
def lake_copy(demo_lake, tmp_path):
    """A writable copy of the demo lake (kg weights done, lowres and sft exported)."""
    dst = tmp_path / "lake"
    shutil.copytree(demo_lake["lake"], dst)
    return Lake(str(dst))


def test_demo_exports_manifest_sample_and_plan(demo_lake):
    lake = Lake(demo_lake["lake"])
    for stage in ("lowres", "sft"):
        summary = next(s for s in demo_lake["summaries"] if s.step == "export" and s.notes["stage"] == stage)
        assert summary.notes["balance"].startswith("concepts [")
        plain = os.path.dirname(summary.notes["manifest"])
        info = json.load(open(os.path.join(plain, "_manifest.json")))
        samples = pq.read_table(os.path.join(plain, "samples-e00000.parquet"))
        plan = pq.read_table(os.path.join(plain, "batches-e00000.parquet"))
        version = info["lake_table"]["version"]
        assert plan.schema.metadata[b"curation.manifest_version"] == str(version).encode()
        assert info["sample"]["tables"]["manifest"] == version and info["sample"]["balance"]["mode"]
        assert sorted(plan["id"].to_pylist()) == sorted(samples["id"].to_pylist())
        assert lake.read(schemas.samples_table(stage)).num_rows == samples.num_rows
        assert lake.commit_record(schemas.batches_table(stage)).reads[schemas.manifest_table(stage)] == version


def test_sample_epochs_sizes_and_sources(lake_copy, tmp_path):
    spec = from_dict(StageConfig, {"rules": {"min_side": 64}})
    export(lake_copy, "st", spec, str(tmp_path / "out"))
    a = sample(lake_copy, "st", spec, size=10, epoch=1, seed=5, out=str(tmp_path / "a"))
    sample(lake_copy, "st", spec, size=10, epoch=1, seed=5, out=str(tmp_path / "b"))
    sample(lake_copy, "st", spec, size=10, epoch=2, seed=5, out=str(tmp_path / "c"))
    read = lambda d: pq.read_table(str(tmp_path / d / "samples-e00001.parquet"))["id"].to_pylist()  # noqa: E731
    assert a.rows_out == 10 and read("a") == read("b")
    assert set(pq.read_table(str(tmp_path / "c" / "samples-e00002.parquet"))["id"].to_pylist()) != set(read("a"))
    # a range filter, then a filter on a list column (the rest), with mixture weights 3:1
    mixed = override(spec, {"sources": [{"name": "small", "where": {"width": {"max": 500}}, "weight": 3.0},
                                        {"name": "rest", "where": {"sources": ["demo"]}, "weight": 1.0}]})
    manifest = lake_copy.read(schemas.manifest_table("st"))
    rep = draw_stage(manifest, "st", mixed, size=8).report
    assert [s["quota"] for s in rep["sources"]] == [6, 2] and [s["drawn"] for s in rep["sources"]] == [6, 2]
    small = sum(w <= 500 for w in manifest["width"].to_pylist())
    rest = sum(w > 500 and "demo" in s for w, s in zip(manifest["width"].to_pylist(), manifest["sources"].to_pylist()))
    assert [s["eligible"] for s in rep["sources"]] == [small, rest]  # pair images come from other sources
    bad = override(spec, {"sources": [{"name": "x", "where": {"no_such_column": 1}}]})
    with pytest.raises(ValueError, match=r"sources\[0\].where.no_such_column"):
        draw_stage(lake_copy.read(schemas.manifest_table("st")), "st", bad)


def test_edit_pairs_sources(lake_copy, tmp_path):
    shutil.rmtree(os.path.join(lake_copy.root, schemas.EDIT_PAIRS))  # a lake before any pairs were built
    stage = from_dict(StageConfig, {
        "rules": {"min_side": 64}, "neardup": {"enabled": False}, "apply_dedup": False,
        "sources": [{"name": "images", "weight": 4.0}, {"name": "pairs", "table": "edit_pairs"}]})
    with pytest.raises(ValueError, match="does not have yet"):
        export(lake_copy, "ed", stage)
    optional = override(stage, {"sources": [{"name": "images", "weight": 4.0},
                                            {"name": "pairs", "table": "edit_pairs", "optional": True}]})
    assert "skipped_sources" in export(lake_copy, "ed", optional).notes
    pool = lake_copy.read("manifests/ed")["id"].to_pylist()
    pairs = pa.table({"group_id": ["g"] * 11, "source_id": pool[:10] + ["f" * 64],
                      "target_id": pool[10:21], "kind": ["expert"] * 11, "instruction": ["make it blue"] * 11})
    add_pairs(lake_copy, pairs)
    add_pairs(lake_copy, pairs)
    assert lake_copy.read(schemas.EDIT_PAIRS).num_rows == 11  # keyed by pair id: added once
    assert [e for e in lake_copy.read(schemas.EDIT_PAIRS)["error"].to_pylist() if e] == [
        "pairs: source_id is not in the pool"]
    s = export(lake_copy, "ed", stage, size=10)
    assert s.notes["pairs"] == {"usable": 10, "left_out": {"pair_error": 1}}
    drawn = lake_copy.read("samples/ed")
    kinds = drawn["kind"].to_pylist()
    assert kinds.count("t2i") == 8 and kinds.count("i2i") == 2  # T2I:I2I = 4:1
    assert set(lake_copy.read("manifests/ed").filter(pa.compute.equal(
        lake_copy.read("manifests/ed")["kind"], "i2i"))["source_id"].to_pylist()) <= set(pool[:10])


def test_prior_file_and_cli_errors(lake_copy, tmp_path, capsys):
    lake = str(lake_copy.uri)
    prior = tmp_path / "prior.csv"
    prior.write_text("concept,prior\nno such concept,2\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"lake: {lake}\nstages:\n  u: {{balance: {{mode: uniform, prior: {prior}}}}}\n"
                    "  e: {rules: {min_side: 100000}}\n")
    assert main(["export", lake, "--stage", "u", "--spec", str(spec)]) == 2
    assert "not in the knowledge graph" in capsys.readouterr().err
    assert main(["sample", lake, "--stage", "never-exported", "--spec", str(spec)]) == 2
    assert "unknown stage" in capsys.readouterr().err
    assert main(["export", lake, "--stage", "e", "--spec", str(spec)]) == 0  # every item filtered: said, not fatal
    capsys.readouterr()
    assert main(["sample", lake, "--stage", "e", "--spec", str(spec)]) == 2
    assert "the sample is empty" in capsys.readouterr().err
    titles = ConceptInfo.from_lake(lake_copy).titles
    name = next(t for t in titles.values() if t)
    prior.write_text(f"concept,prior\n{name},5\n")
    assert main(["sample", lake, "--stage", "u", "--spec", str(spec)]) == 2  # no manifest yet
    assert "curate export" in capsys.readouterr().err
    assert main(["export", lake, "--stage", "u", "--spec", str(spec), "--size", "6"]) == 0
    assert "concepts [uniform]" in capsys.readouterr().out


def test_feed_reads_an_export(demo_lake):
    from curation.feed import StageBatches

    summary = next(s for s in demo_lake["summaries"] if s.step == "export" and s.notes["stage"] == "lowres")
    ds = StageBatches(os.path.dirname(summary.notes["manifest"]), epoch=0, world_size=2, rank=0)
    seen = 0
    for batch in ds:
        h, w = batch["pixel_values"].shape[-2:]
        assert batch["pixel_values"].shape[0] == len(batch["ids"]) and (h * w) <= 256 * 256
        seen += len(batch["ids"])
    assert seen > 0 and ds.skipped == 0
