"""Pruning: PageRank thresholds, rule / file / encoder judges, judge order, nothing deleted."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from curation.config.typed import ConfigError, from_dict
from graph.kg.model import KnowledgeGraph
from graph.kg.prune import (
    EncoderJudge, FileJudge, PruneConfig, RuleJudge, prune, prune_generatability, prune_pagerank,
)
from tiny_models import TINY_OPEN_CLIP


def make_kg(titles: list[str], links=((), ())) -> KnowledgeGraph:
    return KnowledgeGraph.from_articles(np.arange(1, len(titles) + 1), titles, "test", *links)


# ----------------------------------------------------------------------------- rules

RULE_CASES = {
    "Mercury (disambiguation)": "disambiguation",
    "List of sovereign states": "list",
    "Lists of animals": "list",
    "Index of physics articles": "index",
    "Outline of chess": "outline",
    "Timeline of the Roman Empire": "timeline",
    "1987": "year",
    "1987 in film": "year",
    "AD 79": "year",
    "79 BC": "year",
    "2019_in_science": "year",
    "March 3": "date",
    "3 March": "date",
    "March 1987": "date",
    "1990s": "decade",
    "1990s in music": "decade",
    "21st century": "century",
    "1st millennium BC": "century",
    "2019–20 Premier League": "season",
    "1999–2000": "season",
}
KEEP = ["Dog", "Eiffel Tower", "2001: A Space Odyssey", "1917 (2019 film)", "Listeria", "Indexed color",
        "March of the Penguins", "May Day", "Centurion tank", "Timeline (novel)", "Red Dwarf"]


def test_rule_categories():
    titles = list(RULE_CASES) + KEEP
    verdicts = RuleJudge().judge(titles)
    assert dict(zip(titles, verdicts)) == {**RULE_CASES, **{t: None for t in KEEP}}


def test_extra_patterns():
    judge = RuleJudge({"stub": r"(?i)\bstub\b", "flag": r"^Flag of "})
    assert judge.judge(["Chess stub", "Flag of France", "flag of france", "1987", "Dog"]) == [
        "stub", "flag", None, "year", None]
    only_extra = RuleJudge({"flag": r"^Flag of "}, builtin=False)
    assert only_extra.judge(["Flag of France", "1987"]) == ["flag", None]
    with pytest.raises(ValueError, match="built-in"):
        RuleJudge({"year": r"^\d+$"})
    with pytest.raises(ValueError, match="bad"):
        RuleJudge({"bad": r"(unclosed"})


# ----------------------------------------------------------------------------- PageRank


def test_prune_pagerank_percentile_and_threshold():
    kg = make_kg([f"A{i}" for i in range(20)])
    kg.add_nodes(["tax0", "tax1"], "taxonomy", "taxonomy")  # never judged, even with the lowest scores
    scores = np.concatenate([np.arange(20, dtype=float) * 1e-3, [0.0, 0.0]])
    kg.drop_reason[5] = "earlier step"
    out = prune_pagerank(kg, scores, percentile=10)
    # p10 of 0, 1e-3, ..., 19e-3 (all 20 articles, including the already dropped one) is 1.9e-3.
    assert out == {"low pagerank": 2}
    assert kg.drop_reason[0] == "low pagerank (0 < p10 0.0019)"
    assert kg.drop_reason[1] == "low pagerank (0.001 < p10 0.0019)"
    assert kg.drop_reason[2] is None and kg.drop_reason[5] == "earlier step"
    assert kg.drop_reason[20] is None and kg.drop_reason[21] is None
    out = prune_pagerank(kg, scores, min_score=4.5e-3)
    assert out == {"low pagerank": 3} and kg.drop_reason[2] == "low pagerank (0.002 < min 0.0045)"
    assert kg.drop_reason[4] == "low pagerank (0.004 < min 0.0045)" and kg.drop_reason[5] == "earlier step"
    assert kg.drop_reason[6] is None


def test_prune_pagerank_ties_and_errors():
    kg = make_kg([f"A{i}" for i in range(10)])
    assert prune_pagerank(kg, np.full(10, 0.1), percentile=30) == {}  # all tied: nothing below
    with pytest.raises(ValueError, match="shape"):
        prune_pagerank(kg, np.zeros(3), percentile=10)
    with pytest.raises(ValueError, match="percentile"):
        prune_pagerank(kg, np.zeros(10), percentile=100)
    with pytest.raises(ValueError, match="min_score or percentile"):
        prune_pagerank(kg, np.zeros(10))


# ----------------------------------------------------------------------------- judgments file

JUDGMENTS = [
    {"title": "Red_Dwarf", "generatable": True, "reason": None},
    {"title": "Entropy", "generatable": False, "reason": "not depictable (vlm 0.12)"},
    {"title": "1987", "generatable": False, "reason": None},
    {"title": "ＣＡＦＥ", "generatable": False, "reason": "text only"},  # NFKC folds full-width letters
]


def write_judgments(path, rows):
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".csv":
        pcsv.write_csv(table, path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_file_judge_formats(tmp_path, suffix):
    judge = FileJudge(write_judgments(tmp_path / f"j{suffix}", JUDGMENTS))
    titles = ["Red Dwarf", "entropy", "1987", "Cafe", "Unknown page", "Another"]
    assert judge.judge(titles) == [None, "not depictable (vlm 0.12)", "not generatable", "text only", None, None]
    assert judge.unknown == 2


def test_file_judge_node_ids_duplicates_and_errors(tmp_path):
    kg = make_kg(["Dog", "Entropy", "Cat"])
    rows = [{"node": 2, "generatable": 0, "reason": "abstract"}, {"node": 1, "generatable": 1},
            {"node": 99, "generatable": 0}]
    judge = FileJudge(write_judgments(tmp_path / "ids.parquet", rows), kg=kg)  # int node ids, resolved via kg
    assert judge.unmatched_rows == 1 and judge.judge(["Dog", "Entropy", "Cat"]) == [None, "abstract", None]
    with pytest.raises(ValueError, match="kg="):
        FileJudge(tmp_path / "ids.parquet")
    # Several rows for one folded title: a drop wins, whatever the order.
    dup = [{"title": "Dog", "generatable": "yes", "reason": ""}, {"title": "dog", "generatable": "no", "reason": "r1"},
           {"title": "DOG", "generatable": "no", "reason": "r2"}]
    assert FileJudge(write_judgments(tmp_path / "dup.csv", dup)).judge(["Dog"]) == ["r1"]
    with pytest.raises(ValueError, match="row 0: generatable"):
        FileJudge(write_judgments(tmp_path / "bad.csv", [{"title": "Dog", "generatable": "maybe"}]))
    with pytest.raises(ValueError, match="needs columns"):
        FileJudge(write_judgments(tmp_path / "cols.csv", [{"name": "Dog", "generatable": True}]))
    (tmp_path / "j.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        FileJudge(tmp_path / "j.txt")


# ----------------------------------------------------------------------------- encoder judge

CONCRETE_WORDS = {"dog", "tree", "car", "bridge"}
ABSTRACT_WORDS = {"theorem", "idea", "law", "statistic"}


def fake_embed(texts: list[str]) -> np.ndarray:
    """(concrete-word count, abstract-word count, 1): deterministic, no model."""
    words = [re.findall(r"[a-z]+", t.lower()) for t in texts]
    return np.array([[sum(w in CONCRETE_WORDS for w in ws), sum(w in ABSTRACT_WORDS for w in ws), 1.0]
                     for ws in words])


def fake_judge(**kw) -> EncoderJudge:
    kw = {"concrete": ["a photo of a dog.", "a photo of a tree."], "abstract": ["a theorem.", "an idea."], **kw}
    return EncoderJudge(fake_embed, **kw)


def test_encoder_judge_fake_embed():
    titles = ["Golden retriever dog", "Fermat theorem", "Zzyzx"]
    judge = fake_judge(margin=0.2)
    # direction = mean(abstract) - mean(concrete) = (-1, 1, 0)/sqrt(2); titles embed as (1,0,1)/sqrt(2) etc.
    np.testing.assert_allclose(judge.scores(titles), [-0.5, 0.5, 0.0], atol=1e-12)
    assert judge.judge(titles) == [None, "abstract (0.500 > margin 0.2)", None]
    assert fake_judge(margin=-0.1).judge(titles) == [None, "abstract (0.500 > margin -0.1)",
                                                      "abstract (0.000 > margin -0.1)"]
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return fake_embed(texts)

    small = EncoderJudge(counting, concrete=["a dog."], abstract=["an idea."], batch_size=4)
    many = titles * 5
    np.testing.assert_allclose(small.scores(many), EncoderJudge(fake_embed, concrete=["a dog."],
                                                                abstract=["an idea."]).scores(many))
    assert max(calls) <= 4 and sum(calls) == 2 + len(many) * 3  # anchors + titles × 3 templates
    assert judge.judge([]) == []
    with pytest.raises(ValueError, match="templates"):
        fake_judge(templates=["no slot"])


def test_encoder_judge_tiny_open_clip():
    from operators.models.encoders import EncoderConfig

    cfg = EncoderConfig(name="tiny", model="ViT-B-32", random=True, model_overrides=TINY_OPEN_CLIP)
    judge = EncoderJudge.from_encoder(cfg, device="cpu", batch_size=8)
    titles = ["Dog", "Entropy", "Eiffel Tower", "Theory of relativity", "Red Dwarf"]
    verdicts = judge.judge(titles)
    assert len(verdicts) == len(titles)
    assert all(v is None or v.startswith("abstract (") for v in verdicts)
    assert judge.scores(titles).shape == (5,)


# ----------------------------------------------------------------------------- applying judges


class Recorder:
    """A judge that drops the titles it is told to and records what it was asked."""

    def __init__(self, name: str, drop: dict[str, str]):
        self.name, self.drop, self.seen = name, drop, []

    def judge(self, titles):
        self.seen.append(list(titles))
        return [self.drop.get(t) for t in titles]


def test_judges_in_order_on_kept_nodes_only():
    kg = make_kg(["Dog", "1987", "Entropy", "Cat"])
    kg.add_nodes(["Animals"], "taxonomy", "taxonomy")
    kg.drop_reason[3] = "earlier step"
    first = Recorder("first", {"Entropy": "abstract (0.3 > margin 0)"})
    second = Recorder("second", {"Entropy": "other", "Dog": "no pictures", "Animals": "x"})
    out = prune_generatability(kg, [RuleJudge(), first, second])
    assert out == {"rules: year": 1, "first: abstract": 1, "second: no pictures": 1}
    assert list(kg.drop_reason) == ["second: no pictures", "rules: year", "first: abstract (0.3 > margin 0)",
                                    "earlier step", None]
    assert first.seen == [["Dog", "Entropy"]] and second.seen == [["Dog"]]
    # Taxonomy nodes are judged only when asked for.
    third = Recorder("third", {"Animals": "too broad"})
    assert prune_generatability(kg, [third], kinds=("taxonomy",)) == {"third: too broad": 1}
    with pytest.raises(ValueError, match="kinds"):
        prune_generatability(kg, [third], kinds=("page",))


def test_prune_end_to_end_deletes_nothing(tmp_path):
    titles = ["Dog", "Cat", "Eiffel Tower", "1987 in film", "List of cats", "Entropy", "Fermat theorem",
              "Golden retriever dog", "Orphan page", "Bridge"]
    # A ring through every node but "Orphan page" (8), plus shortcuts: 8 alone has the lowest PageRank.
    links = ([0, 1, 2, 3, 4, 5, 6, 7, 9, 2, 5], [1, 2, 3, 4, 5, 6, 7, 9, 0, 0, 0])
    kg = make_kg(titles, links)
    before = (kg.n, list(kg.title), kg.link_src.copy(), kg.link_dst.copy())
    judgments = write_judgments(tmp_path / "vlm.jsonl", [{"title": "entropy", "generatable": False,
                                                          "reason": "not depictable"}])
    cfg = from_dict(PruneConfig, {
        "pagerank_percentile": 10, "extra_patterns": {"orphan": "^Orphan"}, "judgments_file": str(judgments),
        "encoder_judge": {"concrete": ["a photo of a dog."], "abstract": ["a theorem."], "margin": 0.1},
    })
    out = prune(kg, cfg, embed=fake_embed)
    assert out["dropped"] == {"low pagerank": 1, "rules: year": 1, "rules: list": 1, "file: not depictable": 1,
                              "encoder: abstract": 1}
    # 7 titles reached the file judge (after PageRank and rules), 1 of them is in the file.
    assert out["kept"] == 5 and out["nodes"] == 10 and out["file_unknown"] == 6
    assert kg.attrs["pagerank"].shape == (10,) and kg.attrs["pagerank"].sum() == pytest.approx(1.0)
    reasons = dict(zip(titles, kg.drop_reason))
    assert reasons["Orphan page"].startswith("low pagerank (")  # PageRank ran first
    assert reasons["Entropy"] == "file: not depictable" and reasons["Fermat theorem"].startswith("encoder: abstract (")
    assert (kg.n, list(kg.title)) == before[:2]
    np.testing.assert_array_equal(kg.link_src, before[2])
    np.testing.assert_array_equal(kg.link_dst, before[3])
    assert kg.nodes_table().num_rows == 10  # dropped nodes stay in the lake table, kept=false
    with pytest.raises(ValueError, match="encoder config or an embed"):
        prune(make_kg(["Dog"]), from_dict(PruneConfig, {"encoder_judge": {}}))


def test_prune_config_from_dict_with_tiny_open_clip():
    cfg = from_dict(PruneConfig, {"rules": False, "encoder_judge": {
        "encoder": {"name": "tiny", "model": "ViT-B-32", "random": True, "model_overrides": TINY_OPEN_CLIP},
        "device": "cpu", "margin": 0.0}})
    kg = make_kg(["Dog", "1987", "Entropy"])
    out = prune(kg, cfg, scores=np.full(3, 1 / 3))
    assert out["kept"] + sum(out["dropped"].values()) == 3
    assert all(r is None or r.startswith("encoder: abstract (") for r in kg.drop_reason)
    with pytest.raises(ConfigError, match="margn"):
        from_dict(PruneConfig, {"encoder_judge": {"margn": 0.1}})
    with pytest.raises(ConfigError, match="percentile"):
        from_dict(PruneConfig, {"pagerank_percentile": 150})
