"""graph.kg textnorm, bm25, prompts and weights: small hand-checkable graphs, offline, no Ray."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rank_bm25

from curation.config.typed import ConfigError, from_dict
from curation.storage.schemas import KG_NODES_SCHEMA, WEIGHTS_SCHEMA
from graph.kg.bm25 import bm25_pairs, tag_occurrences
from graph.kg.model import SYNTHETIC_ID_BASE, KnowledgeGraph
from graph.kg.prompts import add_trending, apply_prompt_boost, count_prompts, read_prompt_log
from graph.kg.textnorm import fold, fold_many, phrase, words
from graph.kg.weights import (TagMapper, WeightConfig, hierarchy_counts, hierarchy_factor,
                              sample_weights, tag_counts)


def graph(titles, aliases=(), parents=(), dropped=()) -> KnowledgeGraph:
    """Articles with ids 100, 101, ...; aliases (title, target position) get ids 900, 901, ...;
    parents (child, parent) positions; dropped positions get a drop reason."""
    kg = KnowledgeGraph.from_articles(
        np.arange(100, 100 + len(titles)), titles, "test.xml", [], [],
        alias_id=np.arange(900, 900 + len(aliases)), alias_title=[a for a, _ in aliases],
        alias_node=[p for _, p in aliases])
    if parents:
        kg.add_parent_edges(np.array([c for c, _ in parents]), np.array([p for _, p in parents]))
    for pos in dropped:
        kg.drop_reason[pos] = "test: dropped"
    return kg


# -- textnorm -----------------------------------------------------------------------------------

def test_fold_cases():
    assert fold("ＣＡＴ") == "cat"
    assert fold("Eiffel_Tower") == "eiffel tower"
    assert fold("  New \t York__City ") == "new york city"
    assert fold("Straße") == "strasse"
    assert fold("ｅｉｆｆｅｌ＿ｔｏｗｅｒ") == "eiffel tower"  # full-width underscore too
    assert fold_many(["Cat", None, 3, "DOG"]) == ["cat", "", "", "dog"]
    assert words("The Eiffel Tower, at night!") == ["the", "eiffel", "tower", "at", "night"]
    assert phrase("(C#) and AC/DC.") == "c# and ac/dc"


# -- bm25 ---------------------------------------------------------------------------------------

def zipf_corpus(n_docs=300, n_terms=40, seed=0) -> list[list[str]]:
    """Random tag lists with Zipf-like tag frequencies, repeats and empty docs; 'common' is in
    every non-empty doc and 't0' in most (negative okapi idfs)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_terms + 1)
    p /= p.sum()
    docs = []
    for d in range(n_docs):
        k = int(rng.integers(0, 8))
        docs.append([] if d % 37 == 0 else ["common"] + [f"t{i}" for i in rng.choice(n_terms, k, p=p)])
    return docs


def scattered(pairs, term: int, n_docs: int) -> np.ndarray:
    out = np.zeros(n_docs)
    sel = pairs.term == term
    out[pairs.doc[sel]] = pairs.score[sel]
    return out


def test_bm25_okapi_matches_rank_bm25():
    docs = zipf_corpus()
    occ = tag_occurrences(docs)
    pairs = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms, idf="okapi")
    ref = rank_bm25.BM25Okapi(docs)
    common = list(occ.vocab).index("common")
    assert ref.idf["common"] == 0.25 * ref.average_idf  # the epsilon floor is exercised
    assert pairs.idf[common] == pytest.approx(ref.idf["common"], rel=1e-12)
    for t, word in enumerate(occ.vocab):
        np.testing.assert_allclose(scattered(pairs, t, occ.n_docs), ref.get_scores([word]), rtol=0, atol=1e-12)


def test_bm25_lucene_matches_direct_computation():
    docs = zipf_corpus(seed=1)
    occ = tag_occurrences(docs)
    k1, b = 1.2, 0.6
    pairs = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms, k1=k1, b=b)
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    got = {(int(d), occ.vocab[t]): s for d, t, s in zip(pairs.doc, pairs.term, pairs.score)}
    want = {}
    for i, doc in enumerate(docs):
        for word in set(doc):
            df = sum(word in other for other in docs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc.count(word)
            want[(i, word)] = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12)


def test_lucene_idf_positive_for_a_tag_in_every_doc():
    docs = [["sky", "cat"], ["sky"], ["sky", "dog", "sky"]]
    occ = tag_occurrences(docs)
    pairs = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms)
    sky = list(occ.vocab).index("sky")
    assert pairs.idf[sky] == pytest.approx(math.log(1 + 0.5 / 3.5)) and pairs.idf[sky] > 0
    assert (pairs.score > 0).all()
    okapi = bm25_pairs(occ.doc, occ.term, occ.n_docs, occ.n_terms, idf="okapi")
    assert okapi.idf[sky] == pytest.approx(0.25 * np.mean(np.log(3 - np.array([3, 1, 1]) + 0.5)
                                                             - np.log(np.array([3, 1, 1]) + 0.5)))


def test_tag_occurrences_fold_and_skip_junk():
    rows = [["Cat", "ＣＡＴ", None, " "], None, [], "cat", [1, "Dog_"], ("dog",), {"x": 1}]
    occ = tag_occurrences(rows)
    assert occ.n_docs == 7
    assert list(occ.vocab) == ["cat", "dog"]
    assert occ.doc.tolist() == [0, 0, 4, 5] and occ.term.tolist() == [0, 0, 1, 1]
    arrow = pa.chunked_array([pa.array([["Cat", None]], pa.list_(pa.string())),
                              pa.array([None, ["dog", "cat"]], pa.list_(pa.string()))])
    occ = tag_occurrences(arrow)
    assert (occ.n_docs, occ.doc.tolist(), occ.term.tolist()) == (3, [0, 2, 2], [0, 1, 0])
    assert tag_occurrences(pa.array([[], None], pa.list_(pa.null()))).n_terms == 0


# -- tag mapping --------------------------------------------------------------------------------

def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic unit vectors: synonyms share a direction (plus a little text noise);
    anything else points in its own crc32-seeded random direction."""
    groups = {"cat": 0, "kitty": 0, "dog": 1, "dogz": 1, "eiffel tower": 2}
    out = np.zeros((len(texts), 16), np.float32)
    for i, text in enumerate(texts):
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        noise = rng.normal(size=16)
        if text in groups:
            out[i, groups[text]] = 1.0
            out[i] += 0.05 * noise / np.linalg.norm(noise)
        else:
            out[i] = noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_tag_mapper_title_alias_embedding_kept_only():
    kg = graph(["Cat", "Eiffel Tower", "Dog", "Paris"],
               aliases=[("Tour_Eiffel", 1), ("Doggo", 2)], dropped=[2])
    tags = ["ＣＡＴ", "tour eiffel", "eiffel_tower", "kitty", "Doggo", "dog", "dogz", "Zebra", None]
    plain = TagMapper(kg).map(tags)
    assert plain.node.tolist() == [0, 1, 1, -1, -1, -1, -1, -1, -1]
    assert plain.how.tolist() == ["title", "alias", "title"] + [None] * 6
    emb = TagMapper(kg, embed=fake_embed, min_similarity=0.8).map(tags)
    assert emb.node.tolist() == [0, 1, 1, 0, -1, -1, -1, -1, -1]  # Dog is dropped: no target
    assert emb.how[3] == "embedding" and 0.8 <= emb.similarity[3] <= 1.0
    assert np.isnan(emb.similarity[-1])


# -- hierarchy ----------------------------------------------------------------------------------

def test_hierarchy_counts_diamond_and_cycle():
    # a -> b, a -> c, b -> d, c -> d (diamond), d -> e; f isolated; a duplicate edge.
    kg = graph(list("abcdefxy"), parents=[(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (3, 4), (6, 7), (7, 6)])
    anc, desc = hierarchy_counts(kg)
    assert anc.dtype == np.int32 and desc.dtype == np.int32
    assert anc.tolist() == [4, 2, 2, 1, 0, 0, 1, 1]
    assert desc.tolist() == [0, 1, 1, 3, 4, 0, 1, 1]
    h = hierarchy_factor(anc, desc)
    assert h[5] == 1.0 and h[0] == pytest.approx(1 + math.log(5)) and h[4] == pytest.approx(1 / (1 + math.log(5)))


# -- weights ------------------------------------------------------------------------------------

def test_weight_formula_hand_computed():
    # Animal <- Cat, Animal <- Dog; Car alone. Cat boosted x2.
    kg = graph(["Animal", "Cat", "Dog", "Car"], parents=[(1, 0), (2, 0)])
    kg.attrs["boost"] = np.array([1.0, 2.0, 1.0, 1.0])
    ids = ["s0", "s1", "s2", "s3", "s4"]
    tags = [["cat"], ["dog", "animal"], ["car", "unknowntag"], [], None]
    out = sample_weights(ids, tags, kg)
    assert out.schema == WEIGHTS_SCHEMA and out.column("id").to_pylist() == ids
    # N = 5, avgdl = 5 tags / 5 docs = 1, every tag has df = 1: idf = ln(1 + 4.5/1.5) = ln 4.
    idf = math.log(4)
    s1 = idf * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 1))    # dl = 1: = idf
    s2 = idf * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2))    # dl = 2
    h_leaf, h_animal = 1 + math.log(2), 1 / (1 + math.log(3))
    raw = [s1 * h_leaf * 2.0, s2 * h_leaf + s2 * h_animal, s2 * 1 + s2 * 1]
    mean = sum(raw) / 3
    assert out.column("weight").to_pylist() == pytest.approx([r / mean for r in raw] + [1.0, 1.0])
    assert out.column("bm25").to_pylist() == pytest.approx([s1, 2 * s2, 2 * s2, 0, 0])
    assert out.column("hierarchy").to_pylist() == pytest.approx([h_leaf, (h_leaf + h_animal) / 2, 1, 1, 1])
    assert out.column("boost").to_pylist() == pytest.approx([2.0, 1, 1, 1, 1])
    assert out.column("tags_total").to_pylist() == [1, 2, 2, 0, 0]
    assert out.column("tags_matched").to_pylist() == [1, 2, 1, 0, 0]
    assert out.column("nodes").to_pylist() == [[101], [102, 100], [103], [], []]
    assert "idf=lucene" in out.column("weight_producer")[0].as_py()
    clipped = sample_weights(ids, tags, kg, WeightConfig(w_min=0.9, w_max=1.1)).column("weight").to_pylist()
    assert clipped == pytest.approx([min(max(r / mean, 0.9), 1.1) for r in raw] + [1.0, 1.0])


def test_null_empty_junk_tags_one_row_per_id():
    kg = graph(["Cat", "Dog"], aliases=[("Kitty", 0)])
    ids = pa.chunked_array([pa.array(["a", "b", "c"]), pa.array(["d", "e", "f", "g"])])
    tags = [None, [], [None, 7], "cat", ["Cat", "kitty", "CAT"], ["x"], [" "]]
    out = sample_weights(ids, tags, kg)
    assert out.num_rows == 7 and out.column("id").to_pylist() == list("abcdefg")
    assert out.column("tags_total").to_pylist() == [0, 0, 0, 0, 3, 1, 0]
    assert out.column("tags_matched").to_pylist() == [0, 0, 0, 0, 3, 0, 0]
    assert out.column("nodes").to_pylist() == [[], [], [], [], [100], [], []]
    weight = out.column("weight").to_pylist()
    assert [weight[i] for i in (0, 1, 2, 3, 6)] == [1.0] * 5
    assert sample_weights([], [], kg).num_rows == 0
    with pytest.raises(ValueError):
        sample_weights(["a"], [["x"], ["y"]], kg)


def test_embeddings_in_weights_and_tag_counts():
    kg = graph(["Cat", "Animal"], parents=[(0, 1)])
    tags = [["kitty"], ["cat", "animal"], ["zebra"]]
    with pytest.raises(ValueError):
        sample_weights(["a", "b", "c"], tags, kg, WeightConfig(use_embeddings=True))
    cfg = WeightConfig(use_embeddings=True, embed_min_similarity=0.8)
    out = sample_weights(["a", "b", "c"], tags, kg, cfg, embed=fake_embed)
    assert out.column("nodes").to_pylist() == [[100], [100, 101], []]
    assert "embed cos>=0.8" in out.column("weight_producer")[0].as_py()
    counts = tag_counts(kg, pa.array(tags, pa.list_(pa.string())), cfg, embed=fake_embed)
    assert counts.tolist() == [2, 1] and kg.attrs["tag_count"] is counts
    assert kg.attrs["ancestors"].tolist() == [1, 0] and kg.attrs["descendants"].tolist() == [0, 1]


def test_weight_config_from_dict():
    cfg = from_dict(WeightConfig, {"idf": "okapi", "w_max": 10, "use_embeddings": True})
    assert (cfg.idf, cfg.w_max, cfg.k1) == ("okapi", 10.0, 1.5)
    with pytest.raises(ConfigError):
        from_dict(WeightConfig, {"idf": "tfidf"})
    with pytest.raises(ConfigError):
        from_dict(WeightConfig, {"wmax": 3})


# -- prompts and trending -----------------------------------------------------------------------

def prompt_graph() -> KnowledgeGraph:
    return graph(["Eiffel Tower", "Paris", "New York City", "York", "Night"],
                 aliases=[("NYC", 2)], dropped=[4])


def test_count_prompts_and_boost_provenance(tmp_path):
    kg = prompt_graph()
    prompts = ["The Eiffel Tower at night", "eiffel_tower in PARIS, France", "a photo of nyc.",
               "New York City and new york city again", None]
    counts = count_prompts(kg, prompts)
    assert counts.tolist() == [2, 1, 2, 0, 0]  # Night is dropped; York inside "new york city" is not a mention
    assert count_prompts(kg, prompts[:2], weights=[3, 1]).tolist() == [4, 1, 0, 0, 0]

    log = tmp_path / "log.txt"
    log.write_text("\n".join(p for p in prompts if p) + "\n\n", encoding="utf-8")
    read, weights = read_prompt_log(log)
    assert len(read) == 4 and weights.tolist() == [1, 1, 1, 1]
    boosted = apply_prompt_boost(kg, count_prompts(kg, read, weights), log)
    assert boosted == 3
    assert kg.attrs["prompt_count"].tolist() == [2, 1, 2, 0, 0]
    assert kg.attrs["boost"] == pytest.approx([1 + math.log(3), 1 + math.log(2), 1 + math.log(3), 1.0, 1.0])
    assert kg.boost_source.tolist() == ["prompts:log.txt"] * 3 + [None, None]
    apply_prompt_boost(kg, np.array([1, 0, 0, 0, 0]), log, alpha=0.5)
    assert kg.attrs["prompt_count"][0] == 3 and kg.boost_source[0] == "prompts:log.txt"
    assert kg.attrs["boost"][0] == pytest.approx((1 + math.log(3)) * (1 + 0.5 * math.log(2)))
    assert kg.nodes_table().schema == KG_NODES_SCHEMA


def test_read_prompt_log_tabular(tmp_path):
    table = pa.table({"text": ["Eiffel Tower", None, "Paris"], "count": [5, 2, None]})
    pq.write_table(table, tmp_path / "log.parquet")
    (tmp_path / "log.csv").write_text("text,count\nEiffel Tower,5\n1984,\nParis,2\n", encoding="utf-8")
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"text": "Eiffel Tower", "count": 5}, {"text": "Paris"}]) + "\n", encoding="utf-8")
    assert [(p, c.tolist()) for p, c in [read_prompt_log(tmp_path / "log.parquet", "text")]] == \
        [(["Eiffel Tower", "Paris"], [5, 1])]
    prompts, counts = read_prompt_log(tmp_path / "log.csv", "text")
    assert prompts == ["Eiffel Tower", "1984", "Paris"] and counts.tolist() == [5, 1, 2]
    prompts, counts = read_prompt_log(tmp_path / "log.jsonl", "text")
    assert prompts == ["Eiffel Tower", "Paris"] and counts.tolist() == [5, 1]
    with pytest.raises(ValueError):
        read_prompt_log(tmp_path / "log.csv")  # no 'prompt' column


def test_trending_existing_and_new_nodes(tmp_path):
    kg = prompt_graph()
    apply_prompt_boost(kg, np.array([1, 0, 0, 0, 0]), "log.txt")
    trend = tmp_path / "trend.txt"
    trend.write_text("# weekly list\nEiffel_Tower\t3\neiffel tower\t5\nParis\n\nTaylor Swift  Eras Tour\n"
                     "nyc\nNew York City\nNight\n", encoding="utf-8")
    summary = add_trending(kg, trend)
    assert summary == {"matched": 3, "added": 2, "duplicates": 2}
    assert kg.attrs["boost"][:4] == pytest.approx([(1 + math.log(2)) * 3, 2.0, 2.0, 1.0])
    assert kg.boost_source[0] == "prompts:log.txt; trending:trend.txt"
    assert kg.boost_source[1] == "trending:trend.txt" and kg.boost_source[3] is None
    new = slice(5, 7)
    assert kg.title[new].tolist() == ["Taylor Swift Eras Tour", "Night"]  # the dropped Night is no target
    assert kg.kind[new].tolist() == ["trending"] * 2 and kg.source[new].tolist() == ["trending:trend.txt"] * 2
    assert kg.attrs["boost"][new].tolist() == [2.0, 2.0] and kg.attrs["prompt_count"][new].tolist() == [0, 0]
    assert (kg.node_id[new] >= SYNTHETIC_ID_BASE).all() and kg.kept[new].all()
    assert add_trending(kg, trend)["added"] == 0  # the new nodes match the second time
    bad = tmp_path / "bad.txt"
    bad.write_text("Paris\tlots\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:1"):
        add_trending(kg, bad)
