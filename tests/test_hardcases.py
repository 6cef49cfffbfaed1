"""Hard-case mining on a tiny lake (no Ray): query files, communities and concept coverage,
and the prune / boost / fill decisions with their reruns and a later `kg augment`."""

import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.steps.kg.steps import KgAugmentConfig, KgBuildConfig, kg_augment, kg_build, kg_weights, load_graph
from curation.steps.review.config import HardcasesConfig
from curation.steps.review.hardcases import Query, decide, mine, read_queries
from curation.steps.vectors.embeddings import embeddings_rows
from curation.steps.vectors.search import VectorSearch
from curation.storage.lake import Lake
from curation.storage.schemas import HARDCASES_SCHEMA, POOL_SCHEMA, conform, dedup_schema, embeddings_table
from curation.demo.wiki import write_demo_wiki
from graph.kg.taxonomy import TaxonomyConfig
from graph.kg.weights import WeightConfig
from operators.models.encoders import EncoderConfig

# The demo spec's tiny random encoder (64-d).
ENCODER = EncoderConfig(name="clip", backend="open_clip", model="ViT-B-32", random=True, model_overrides={
    "embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}})
DOG, ROBOT = "a dog in a park", "a robot in a studio"
# Item groups: (prompt whose text embedding the items sit next to, items, tags, community).
GROUPS = [(DOG, 4, ["dog", "park"], "c-dog"), (ROBOT, 3, ["robot"], "c-robot"),
          ("a red car at night", 3, ["red car", "night"], "c-car")]
# Random text embeddings of unrelated prompts have cosine ~0.5 here: hits need >= 0.9.
CFG = HardcasesConfig(k=10, min_similarity=0.9, samples=3, fill_requests=3, boost=2.0)
AUGMENT = KgAugmentConfig(taxonomy=TaxonomyConfig(levels=[2]))


def _png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A lake with pool, embeddings/clip, dedup (community_l0) and an augmented, weighted
    knowledge graph; plus the search over it and the image query file."""
    root = tmp_path_factory.mktemp("hardcases")
    lake = Lake(str(root / "lake"))
    search = VectorSearch(lake, "clip", np.zeros(0, object), None, ENCODER)  # only for its encoder towers
    rng = np.random.default_rng(0)
    ids, tags, vectors, community = [], [], [], []
    for prompt, n, group_tags, name in GROUPS:
        centre = search.embed_texts([prompt])[0]
        for _ in range(n):
            v = centre + rng.standard_normal(64).astype(np.float32) * 0.01
            ids.append(f"{len(ids):064x}")
            tags.append(group_tags)
            vectors.append(v / np.linalg.norm(v))
            community.append(name)
    image = _png(root / "failure.png", seed=1)
    emb, errors = search.embed_images([image])
    assert errors == [None]
    ids.append(f"{len(ids):064x}")
    tags.append(["cat"])
    vectors.append(emb[0])
    community.append("c-image")
    for _ in range(4):  # unrelated items: random directions, each its own community
        v = rng.standard_normal(64).astype(np.float32)
        ids.append(f"{len(ids):064x}")
        tags.append(["horse"])
        vectors.append(v / np.linalg.norm(v))
        community.append(ids[-1])
    embedded = list(ids)
    ids.append(f"{len(ids):064x}")  # a dog-community member without an embedding (counts in its size)
    tags.append(["dog"])
    community.append("c-dog")
    lake.write("pool", conform(pa.table({"id": ids, "uri": [f"/nowhere/{i}.jpg" for i in range(len(ids))],
                                         "tags": tags}), POOL_SCHEMA), mode="overwrite")
    lake.write(embeddings_table("clip"), embeddings_rows(pa.array(embedded), "clip", np.asarray(vectors)))
    lake.write("dedup", conform(pa.table({"id": ids, "group_id": ids, "keep": [True] * len(ids),
                                          "community_l0": community}), dedup_schema(1)), mode="overwrite")
    wiki = write_demo_wiki(root / "wiki")
    kg_build(lake, KgBuildConfig(page=str(wiki["page"]), pagelinks=str(wiki["pagelinks"]),
                                 linktarget=str(wiki["linktarget"]), redirect=str(wiki["redirect"])))
    kg_augment(lake, AUGMENT)
    kg_weights(lake, WeightConfig())
    return {"root": root, "ids": ids, "image": image, "encoder": search._load_encoder()}


@pytest.fixture
def lake_and_search(base, tmp_path):
    """A private copy of the base lake (decisions write to it) and a search over it."""
    shutil.copytree(base["root"] / "lake", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    search = dataclasses.replace(VectorSearch.open(lake, ENCODER), _encoder=base["encoder"])
    return lake, search


def _cases(table):
    return {r["query"]: r for r in table.to_pylist()}


def test_read_queries_txt_jsonl_and_images(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("# failures of model v3\n\na dog in a park\n  a robot in a studio  \na dog in a park\n")
    queries, problems = read_queries(str(txt), None)
    assert [(q.kind, q.query, q.action) for q in queries] == [("text", DOG, "report"), ("text", ROBOT, "report")]
    assert len(problems) == 1 and "prompts.txt:5: repeats the query of" in problems[0]

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    _png(images / "b.png", 0)
    _png(images / "sub" / "a.JPG", 1)  # suffixes are matched case-insensitively (any format inside)
    (images / "notes.txt").write_text("not an image")
    jsonl = tmp_path / "failures.jsonl"
    lines = [
        {"prompt": "squirrel fish on a plate", "action": "fill", "tags": ["squirrel fish", " "]},
        {"prompt": "a watermark over a product photo", "action": "Prune", "reason": "watermarks"},
        {"image": "images/b.png", "action": "boost", "tags": ["dog"]},
        "not json {",
        {"prompt": "x", "image": "y.png"},
        {"prompt": ""},
        {"prompt": "z", "tags": "dog"},
        {"prompt": "w", "tag": ["dog"]},
        {"prompt": "v", "action": "prune"},
        ["a list"],
    ]
    jsonl.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    queries, problems = read_queries(str(jsonl), str(images))
    got = [(q.kind, q.query, q.action, q.reason, q.tags) for q in queries]
    assert got[:3] == [("text", "squirrel fish on a plate", "fill", None, ("squirrel fish",)),
                       ("text", "a watermark over a product photo", "prune", "watermarks", ()),
                       ("image", str(images / "b.png"), "boost", None, ("dog",))]
    assert got[3:] == [("image", str(images / "sub" / "a.JPG"), "report", None, ())]  # b.png: already a query
    assert [p.split(": ")[0] for p in problems] == [f"{jsonl}:{n}" for n in range(4, 11)] + [str(images / "b.png")]
    reasons = [p.split(": ", 1)[1] for p in problems]
    assert reasons[0].startswith("not JSON") and "either" in reasons[1] and "non-empty" in reasons[2]
    assert "list of strings" in reasons[3] and "unknown keys ['tag']" in reasons[4] and "reason" in reasons[5]
    assert "JSON object" in reasons[6] and reasons[7] == f"repeats the query of {jsonl}:3"

    jsonl.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "b", "action": "delete"}) + "\n")
    with pytest.raises(ValueError, match=r"failures.jsonl:2: unknown action 'delete'"):
        read_queries(str(jsonl), None)
    with pytest.raises(ValueError, match="give a prompts file"):
        read_queries(None, None)


def test_mine_communities_coverage_and_queries_without_hits(lake_and_search, base):
    lake, search = lake_and_search
    queries = [Query("text", DOG), Query("text", ROBOT, tags=("robot", "teapot", "squirrel fish")),
               Query("image", base["image"]), Query("image", str(base["root"] / "missing.png")),
               Query("text", "zzz qqq")]
    table = mine(lake, search, queries, CFG, run_id="r1")
    assert table.schema.equals(HARDCASES_SCHEMA) and table.num_rows == 5
    cases = _cases(table)
    dog = cases[DOG]
    assert dog["case_id"] == f"r1:{queries[0].query_id}" and dog["decided_at"] is None
    assert sorted(dog["hit_ids"]) == base["ids"][:4] and min(dog["hit_similarity"]) >= 0.9
    assert dog["hit_similarity"] == sorted(dog["hit_similarity"], reverse=True)
    [community] = json.loads(dog["communities_json"])
    assert community["community"] == "c-dog" and community["size"] == 5 and community["hits"] == 4
    assert community["level"] == 0 and community["sample_ids"] == dog["hit_ids"][:3]
    assert community["max_similarity"] == pytest.approx(dog["hit_similarity"][0], abs=1e-4)
    assert dog["tags"] == ["Dog", "Park"]  # graph titles named by the prompt
    assert [(e["tag"], e["status"]) for e in json.loads(dog["coverage_json"])] == [("Dog", "present"), ("Park", "present")]
    assert json.loads(dog["coverage_json"])[0]["items"] == 5

    robot = cases[ROBOT]
    coverage = {e["tag"]: e for e in json.loads(robot["coverage_json"])}
    assert coverage["robot"]["status"] == "present" and coverage["robot"]["title"] == "Robot"
    assert coverage["robot"]["items"] == 3
    assert coverage["teapot"]["status"] == "empty" and coverage["teapot"]["items"] == 0
    assert coverage["squirrel fish"] == {"tag": "squirrel fish", "node": None, "title": None, "status": "absent",
                                         "items": 0}

    image = cases[base["image"]]
    assert image["hit_ids"] == [base["ids"][10]] and image["hit_similarity"][0] > 0.99
    assert json.loads(image["communities_json"])[0]["community"] == "c-image"
    assert json.loads(image["coverage_json"]) == []
    broken = cases[str(base["root"] / "missing.png")]
    assert broken["hit_ids"] == [] and json.loads(broken["decision_json"])["error"].startswith("read")
    nothing = cases["zzz qqq"]
    assert nothing["hit_ids"] == [] and json.loads(nothing["communities_json"]) == []

    summary = decide(lake, table, CFG, "r1")
    assert summary["queries"] == 5 and summary["no_hit"] == 1 and summary["errors"] == 1
    assert summary["actions"] == {"report": 5} and summary["removals"] == 0
    assert summary["hits_per_query"] == {"min": 0, "mean": 1.6, "max": 4}
    assert summary["concepts_absent"] == ["squirrel fish"] and summary["concepts_empty"] == ["teapot"]
    stored = lake.read("hardcases")
    assert stored.num_rows == 5 and all(stored["decided_at"].to_pylist())
    assert not lake.exists("removals")


def test_prune_records_removals_once(lake_and_search, base):
    lake, search = lake_and_search
    queries = [Query("text", DOG, "prune", "dogs drawn with five legs"), Query("text", "zzz qqq", "prune", "nothing")]
    cases = mine(lake, search, queries, CFG, run_id="r2")
    summary = decide(lake, cases, CFG, "r2")
    removals = lake.read("removals")
    assert sorted(removals["id"].to_pylist()) == base["ids"][:4] + [base["ids"][-1]]  # the whole community
    assert set(removals["reason"].to_pylist()) == {"hardcase: dogs drawn with five legs"}
    assert set(removals["query"].to_pylist()) == {f"text:{DOG}"} and set(removals["community"].to_pylist()) == {"c-dog"}
    assert summary["removals"] == 5 and summary["actions"] == {"prune": 2}
    decision = json.loads(_cases(lake.read("hardcases"))[DOG]["decision_json"])
    assert decision == {"removal_communities": ["c-dog"], "members": 5}

    versions = {t: lake.versions(t)[-1] for t in ("removals", "hardcases")}
    again = decide(lake, mine(lake, search, queries, CFG, run_id="r2"), CFG, "r2")
    assert again["decided"] == 0 and again["already_decided"] == 2 and again["removals"] == 0
    assert {t: lake.versions(t)[-1] for t in versions} == versions  # nothing written
    other = decide(lake, mine(lake, search, queries[:1], CFG, run_id="r3"), CFG, "r3")
    assert other["removals"] == 0 and lake.read("removals").num_rows == 5  # ids keep their first decision


def _node(lake, title):
    nodes = lake.read("kg_nodes").to_pylist()
    return next(n for n in nodes if n["title"] == title)


def test_boost_survives_kg_augment(lake_and_search):
    lake, search = lake_and_search
    before = {t: _node(lake, t)["boost"] or 1.0 for t in ("Robot", "Teapot")}  # null: never boosted (1)
    queries = [Query("text", ROBOT, "boost", "robots look like toasters", ("robot", "teapot", "squirrel fish"))]
    summary = decide(lake, mine(lake, search, queries, CFG, run_id="r4"), CFG, "r4")
    assert summary["boosted_nodes"] == 2 and "kg weights" in summary["weights"]
    for title in ("Robot", "Teapot"):
        node = _node(lake, title)
        assert node["boost"] == pytest.approx(before[title] * 2) and "hardcases:r4" in node["boost_source"]
    decision = json.loads(lake.read("hardcases")["decision_json"][0].as_py())
    assert decision["boost"]["factor"] == 2.0 and [n["title"] for n in decision["boost"]["nodes"]] == ["Robot", "Teapot"]

    assert None not in lake.read("kg_nodes")["boost"].to_pylist()  # the other nodes: 1, not null
    version = lake.versions("kg_nodes")[-1]
    decide(lake, mine(lake, search, queries, CFG, run_id="r4"), CFG, "r4")
    assert lake.versions("kg_nodes")[-1] == version  # a rerun boosts nothing again

    s = kg_augment(lake, AUGMENT)
    assert s.notes["hardcases"]["boosted"] == 2
    kg, _ = load_graph(lake)
    robot = list(kg.title).index("Robot")
    assert kg.attrs["boost"][robot] == pytest.approx(before["Robot"] * 2)
    assert kg.boost_source[robot] == "hardcases:r4"


def test_fill_adds_trending_node_and_review_requests(lake_and_search, base):
    lake, search = lake_and_search
    queries = [Query("text", "squirrel fish on a plate", "fill", tags=("squirrel fish", "dog")),
               Query("text", "lantern glow over water", "fill")]
    cases = _cases(mine(lake, search, queries, CFG, run_id="r5"))
    requests = json.loads(cases["squirrel fish on a plate"]["decision_json"])["review_requests"]
    assert len(requests) == CFG.fill_requests and set(requests) <= set(base["ids"])  # nearest, below min_similarity
    assert cases["squirrel fish on a plate"]["hit_ids"] == []
    summary = decide(lake, mine(lake, search, queries, CFG, run_id="r5"), CFG, "r5")
    assert summary["trending_added"] == 2 and summary["review_requests"] == 2 * CFG.fill_requests
    fish = _node(lake, "squirrel fish")
    assert (fish["kind"], fish["source"], fish["boost"], fish["boost_source"]) == (
        "trending", "hardcases:r5", 2.0, "hardcases:r5")
    assert _node(lake, "lantern glow over water")["kind"] == "trending"  # no tags: the prompt is the concept
    stored = _cases(lake.read("hardcases"))
    decision = json.loads(stored["squirrel fish on a plate"]["decision_json"])
    assert decision["review_requests"] == requests and decision["trending"][0]["title"] == "squirrel fish"

    kg_augment(lake, AUGMENT)
    kg, _ = load_graph(lake)
    fish = list(kg.title).index("squirrel fish")
    assert kg.kind[fish] == "trending" and kg.attrs["boost"][fish] == pytest.approx(2.0)
