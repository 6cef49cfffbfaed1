"""Taxonomy from tags: hierarchical k-means with resampling, namers, attachment, provenance."""

import json

import numpy as np
import pytest

from graph.kg.model import KnowledgeGraph
from graph.kg.taxonomy import (TaxonomyConfig, augment_with_taxonomy, hierarchical_kmeans, resample,
                               spherical_kmeans)
from graph.kg.textembed import HashingEmbedder, normalize_rows

CARS = ["car", "red car", "blue car", "green car", "old car", "fast car"]
DOGS = ["dog", "black dog", "white dog", "small dog", "dogs", "big dog"]
BEACH = ["beach", "sandy beach", "beach sunset", "beach at night", "beaches"]


def test_hashing_embedder_is_deterministic_and_unit_norm():
    e = HashingEmbedder(dim=64)
    a, b = e(["Red Car", "red car", "ＲＥＤ ＣＡＲ", "dog"]), e(["red car"])
    assert a.shape == (4, 64) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(a[0], b[0]) and np.allclose(a[2], b[0])  # case and width folded
    assert a[0] @ a[3] < a[0] @ e(["blue car"])[0]


def test_spherical_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = normalize_rows(rng.standard_normal((3, 16)))
    x = normalize_rows(np.repeat(centres, 20, axis=0) + 0.05 * rng.standard_normal((60, 16)))
    c, assign = spherical_kmeans(x, 3, np.ones(60), niter=20, seed=0)
    assert np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    for g in range(3):
        assert len(set(assign[g * 20:(g + 1) * 20])) == 1
    assert len(set(assign)) == 3


def test_resampling_moves_centroids_toward_the_dense_core():
    rng = np.random.default_rng(1)
    core = normalize_rows(np.array([1.0, 0, 0, 0]) + 0.01 * rng.standard_normal((50, 4)))
    outliers = normalize_rows(np.array([0.3, 1.0, 0, 0]) + 0.01 * rng.standard_normal((10, 4)))
    x = np.concatenate([core, outliers]).astype(np.float32)
    mean = normalize_rows(x.mean(0, keepdims=True))
    c, assign = resample(x, mean, rounds=2, size=20)
    assert (c[0] @ normalize_rows(core.mean(0, keepdims=True))[0]) > (mean[0] @ normalize_rows(core.mean(0, keepdims=True))[0])
    assert (assign == 0).all()


def test_levels_group_tags_by_surface_form_and_name_parents():
    tags = CARS + DOGS + BEACH
    counts = np.array([10, 1, 1, 1, 1, 1, 20, 1, 1, 1, 1, 1, 5, 1, 1, 1, 1])
    cfg = TaxonomyConfig(levels=[3, 1], resample_rounds=2, resample_size=4)
    levels = hierarchical_kmeans(HashingEmbedder()(tags), tags, counts, cfg)
    assert [len(lv.names) for lv in levels] == [3, 1]
    a = levels[0].assign
    assert len({a[i] for i in range(6)}) == 1 and len({a[i] for i in range(6, 12)}) == 1
    assert len({a[i] for i in range(12, 17)}) == 1 and len(set(a)) == 3
    assert levels[0].counts.sum() == counts.sum() == levels[1].counts.sum()
    frequent = hierarchical_kmeans(HashingEmbedder()(tags), tags, counts,
                                   TaxonomyConfig(levels=[3], namer="frequent", resample_rounds=2, resample_size=4))[0]
    assert sorted(frequent.names) == ["beach", "car", "dog"]  # the most frequent child of each


def _articles():
    kg = KnowledgeGraph.from_articles([1, 2, 3], ["Car", "Dog", "Philosophy"], "page.sql.gz", [0, 1], [1, 2],
                                      alias_id=[9], alias_title=["Automobile"], alias_node=[0])
    kg.attrs["pagerank"] = np.array([0.3, 0.3, 0.4])
    return kg


def _match(kg):
    names = {str(t).lower(): i for i, t in enumerate(kg.title)}
    return lambda ts: np.array([names.get(t.lower(), -1) for t in ts])


def test_augment_adds_nodes_with_levels_sources_and_no_cycles(tmp_path):
    kg = _articles()
    tags = CARS + DOGS + BEACH
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"L2/0": "things"}))
    cfg = TaxonomyConfig(levels=[3, 1], resample_rounds=1, resample_size=4, names_file=str(names),
                         attach_min_similarity=0.3)
    summary = augment_with_taxonomy(kg, tags, np.ones(len(tags), np.int64), cfg, HashingEmbedder(),
                                    source="taxonomy:test", match=_match(kg))
    assert summary["matched_tags"] == 2 and summary["new_tag_nodes"] == len(tags) - 2
    assert summary["parents"] == [3, 1]
    new = kg.kind == "taxonomy"
    assert set(kg.source[new]) == {"taxonomy:test"} and set(kg.source[~new]) == {"page.sql.gz"}
    level = kg.attrs["level"]
    assert sorted(np.unique(level[new])) == [0, 1, 2] and (level[~new] == 0).all()
    top = np.flatnonzero(new & (level == 2))
    assert [kg.title[i] for i in top] == ["things"]  # the names file renamed the root
    # the matched article "Car" sits under its level-1 parent; the root is attached to an article
    car_parent = kg.parent_dst[kg.parent_src == 0]
    assert len(car_parent) == 1 and level[car_parent[0]] == 1
    assert summary["attached"] in (0, 1)
    # every edge goes child -> parent with rising level, except attachment edges to articles
    up = kg.kind[kg.parent_dst] != "article"
    assert (level[kg.parent_dst[up]] > level[kg.parent_src[up]]).all()


def test_augment_with_too_few_tags_is_a_no_op():
    kg = _articles()
    summary = augment_with_taxonomy(kg, ["car"], np.ones(1), TaxonomyConfig(), HashingEmbedder(), match=_match(kg))
    assert summary["parents"] == [] and kg.n == 3


@pytest.mark.parametrize("bad", [dict(levels=[]), dict(levels=[0]), dict(namer="random"), dict(resample_size=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TaxonomyConfig(**bad)


def test_networkx_views_of_a_neighbourhood_and_a_subtree():
    from graph.kg.view import neighbourhood, subtree

    kg = _articles()
    kg.drop_reason[2] = "rules: test"
    tags = CARS + DOGS
    augment_with_taxonomy(kg, tags, np.ones(len(tags), np.int64), TaxonomyConfig(levels=[2], resample_rounds=0),
                          HashingEmbedder(), match=_match(kg))
    g = neighbourhood(kg, "Dog", radius=1)
    titles = {d["title"] for _, d in g.nodes(data=True)}
    assert {"Dog", "Car", "Philosophy"} <= titles  # links in both directions
    assert g.nodes[2]["kept"] is False and g.nodes[2]["drop_reason"] == "rules: test"
    assert {d["kind"] for _, _, d in g.edges(data=True)} == {"link", "parent"}
    roots = [i for i in range(kg.n) if kg.attrs["level"][i] == 1]
    t = subtree(kg, roots[0])
    assert len(t) > 2 and all(d["kind"] == "parent" for _, _, d in t.edges(data=True))
    with pytest.raises(KeyError):
        neighbourhood(kg, "no such title")


def test_encoder_embedder_uses_the_model_operators_text_tower():
    from tiny_models import TINY_OPEN_CLIP

    from curation.steps.kg.steps import KgAugmentConfig
    from graph.kg.textembed import EncoderEmbedder, make_embedder

    cfg = {"name": "tiny", "model": "ViT-B-32", "random": True, "model_overrides": TINY_OPEN_CLIP}
    embed = make_embedder(cfg)
    assert isinstance(embed, EncoderEmbedder) and "tiny" in embed.name
    x = embed(["a red car", "a dog", "a red car"])
    assert x.shape == (3, 32) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.allclose(x[0], x[2], atol=1e-5)
    assert isinstance(KgAugmentConfig(embedder="encoder", encoder=embed.cfg).embed(), EncoderEmbedder)
    with pytest.raises(ValueError, match="needs kg.augment.encoder"):
        KgAugmentConfig(embedder="encoder").embed()
    with pytest.raises(ValueError, match="hashing"):
        make_embedder("word2vec")
