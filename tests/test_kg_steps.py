"""Knowledge-graph steps on a lake and the `curate kg` commands (no Ray needed)."""

import pyarrow as pa
import pytest

from curation.cli.main import main
from curation.steps.kg.steps import (KgAugmentConfig, KgBuildConfig, kg_augment, kg_build, kg_weights, load_graph)
from curation.storage.lake import Lake
from curation.storage.schemas import KG_EDGES_SCHEMA, KG_NODES_SCHEMA, POOL_SCHEMA, WEIGHTS_SCHEMA, conform
from curation.demo.wiki import write_demo_wiki
from graph.kg.taxonomy import TaxonomyConfig
from graph.kg.weights import WeightConfig

TAGS = [["dog", "red", "photo", "sunset"], ["puppy", "park"], None, [], ["robot", "studio", "3d render"],
        ["castle", "snow"], ["red car", "night"], [None, "", "  "]]
CAPTIONS = [None, None, "dog, beach, watercolor painting", "A photo of a cat.", None, None, None, None]


@pytest.fixture
def wiki(tmp_path):
    return write_demo_wiki(tmp_path / "wiki")


@pytest.fixture
def lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    ids = [f"{i:064x}" for i in range(len(TAGS))]
    lake.write("pool", conform(pa.table({"id": ids, "tags": TAGS, "caption": CAPTIONS}), POOL_SCHEMA), mode="overwrite")
    return lake


def _build_cfg(wiki, **prune):
    cfg = KgBuildConfig(page=str(wiki["page"]), pagelinks=str(wiki["pagelinks"]),
                        linktarget=str(wiki["linktarget"]), redirect=str(wiki["redirect"]))
    for k, v in prune.items():
        setattr(cfg.prune, k, v)
    return cfg


def test_build_augment_weights_on_a_lake(lake, wiki):
    s = kg_build(lake, _build_cfg(wiki, pagerank_percentile=8))
    assert s.notes["aliases"] == 8 and s.notes["dropped"]["rules: list"] == 1
    nodes = lake.read("kg_nodes")
    assert nodes.schema.equals(KG_NODES_SCHEMA, check_metadata=False)
    assert lake.read("kg_edges").schema.equals(KG_EDGES_SCHEMA, check_metadata=False)
    dropped = {t: r for t, r in zip(nodes["title"].to_pylist(), nodes["drop_reason"].to_pylist()) if r}
    assert dropped["Dog (disambiguation)"].startswith("rules: disambiguation")
    assert dropped["Obscure topic 0"].startswith("low pagerank")
    assert "Animals" not in nodes["title"].to_pylist()  # the category page is not an article

    cfg = KgAugmentConfig(taxonomy=TaxonomyConfig(levels=[4, 2]), prompts=str(wiki["prompts"]),
                          trending=str(wiki["trending"]))
    s = kg_augment(lake, cfg)
    assert s.notes["samples_with_tags"] == 6  # the tag-style caption counts; prose and junk do not
    assert s.notes["parents_per_level"] == [4, 2]
    kg, version = load_graph(lake)
    assert version == 1  # build wrote v0, augment v1 (Delta numbers versions from 0)
    added = kg.kind != "article"
    assert set(kg.kind[added]) == {"taxonomy", "trending"}
    assert all(src.startswith(("taxonomy:pool", "trending:")) for src in kg.source[added])
    trending = list(kg.title[kg.kind == "trending"])
    assert trending == ["lantern festival"]
    robot = list(kg.title).index("Robot")
    assert kg.attrs["boost"][robot] > 2 and "trending:trending.txt" in kg.boost_source[robot]
    assert kg.attrs["prompt_count"][robot] == 2
    # re-running replaces the derived part instead of stacking a second taxonomy
    kg_augment(lake, cfg)
    again, _ = load_graph(lake)
    assert again.n == kg.n and len(again.parent_src) == len(kg.parent_src)

    s = kg_weights(lake, WeightConfig())
    w = lake.read("weights")
    assert w.schema.equals(WEIGHTS_SCHEMA, check_metadata=False) and w.num_rows == len(TAGS)
    rows = {r["id"]: r for r in w.to_pylist()}
    no_tags = rows[f"{3:064x}"]
    assert no_tags["weight"] == 1.0 and no_tags["tags_total"] == 0
    assert rows[f"{0:064x}"]["tags_matched"] == 4
    assert "kg_nodes v" in rows[f"{0:064x}"]["weight_producer"]
    assert s.notes["samples_with_matched_tags"] == 6


def test_steps_need_their_inputs(tmp_path, wiki):
    empty = Lake(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no knowledge graph"):
        kg_weights(empty, WeightConfig())
    with pytest.raises(ValueError, match="either `xml` or `page`"):
        kg_build(empty, KgBuildConfig())
    with pytest.raises(ValueError, match="needs both"):
        kg_build(empty, KgBuildConfig(page=str(wiki["page"])))
    with pytest.raises(ValueError, match="embedder"):
        KgAugmentConfig(embedder="nope").embed()


def test_cli_kg_commands(lake, wiki, capsys):
    root = lake.uri
    assert main(["kg", "build", root, "--page", str(wiki["page"]), "--pagelinks", str(wiki["pagelinks"]),
                 "--linktarget", str(wiki["linktarget"]), "--redirect", str(wiki["redirect"]),
                 "--pagerank-percentile", "8"]) == 0
    assert main(["kg", "augment", root, "--prompts", str(wiki["prompts"]), "--levels", "4,2"]) == 0
    assert main(["kg", "weights", root]) == 0
    out = capsys.readouterr().out
    assert "[kg build]" in out and "[kg augment]" in out and "[kg weights]" in out
    assert Lake(root).read("weights").num_rows == len(TAGS)
    # a pagelinks dump of the current schema without its linktarget dump is a clear error
    assert main(["kg", "build", root, "--page", str(wiki["page"]), "--pagelinks", str(wiki["pagelinks"])]) == 2
    assert "linktarget" in capsys.readouterr().err


def test_tags_from_the_tags_column_else_tag_style_captions():
    from graph.kg.tags import sample_tags, tag_style_tags

    assert tag_style_tags("dog, beach, watercolor painting.") == ["dog", "beach", "watercolor painting"]
    assert tag_style_tags("猫，草地、红色") == ["猫", "草地", "红色"]
    assert tag_style_tags("A photo of a red dog on a beach.") == []  # prose
    assert tag_style_tags("dog, a very long phrase that is not a tag at all") == []
    assert tag_style_tags(None) == [] and tag_style_tags("dog") == []
    tags = pa.array([["a", " ", None], None, []], pa.list_(pa.string()))
    assert sample_tags(tags, ["x, y", "cat, dog", "prose here."]) == [["a"], ["cat", "dog"], []]
    assert sample_tags(None, ["x, y"]) == [["x", "y"]]


def test_column_wise_tags_match_the_row_by_row_rule():
    """`tag_lists` (Arrow kernels, captions parsed only for untagged rows) gives what the
    row-by-row rule gives: trimmed non-empty string tags, else a tag-style caption's."""
    from graph.kg.tags import tag_lists, tag_style_tags

    tags = [["  a ", "", None, "b"], None, [], ["\tc\n"], [" "], ["猫 ", "狗"], None]
    caps = ["x, y", "cat, dog", "prose here.", None, "p, q", "z, w", None]

    def reference(own, cap):
        own = [t.strip() for t in (own or []) if isinstance(t, str) and t.strip()]
        return own or tag_style_tags(cap)

    expected = [reference(t, c) for t, c in zip(tags, caps)]
    assert expected == [["a", "b"], ["cat", "dog"], [], ["c"], ["p", "q"], ["猫", "狗"], []]
    got = tag_lists(pa.array(tags, pa.list_(pa.string())), pa.array(caps, pa.string()))
    assert got.type == pa.list_(pa.string()) and got.to_pylist() == expected
    assert tag_lists(pa.chunked_array([pa.array(tags[:3], pa.list_(pa.string())),
                                       pa.array(tags[3:], pa.list_(pa.string()))]), caps).to_pylist() == expected
    assert tag_lists(tags, None).to_pylist() == [reference(t, None) for t in tags]
    assert tag_lists(None, None).to_pylist() == []
