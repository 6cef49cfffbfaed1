"""Incremental concept statistics: additive tag statistics, the idf-shift decision and the
incremental `kg weights` step against a full recomputation (no Ray needed)."""

import numpy as np
import pyarrow as pa
import pytest

from curation.demo.wiki import write_demo_wiki
from curation.steps.kg.incremental import plan_refresh
from curation.steps.kg.steps import KgBuildConfig, kg_build, kg_weights, load_graph
from curation.storage.lake import Lake
from curation.storage.schemas import LABELS_SCHEMA, POOL_SCHEMA, TAG_STATS, WEIGHTS, conform
from graph.kg.bm25 import tag_occurrences
from graph.kg.tagstats import TagStats, doc_terms, idf_shift
from graph.kg.weights import WeightConfig, weigh

WORDS = ["dog", "cat", "red", "blue", "photo", "sunset", "castle", "snow", "robot", "studio", "car", "night",
         "puppy", "park", "beach", "forest", "owl", "teapot", "Dog", "CASTLE"]


def _tags(rng, n, vocab=WORDS):
    p = 1 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 6))
        out.append(None if k == 0 and rng.random() < 0.3 else list(rng.choice(vocab, size=k, p=p)))
    return out


def _stats(tags):
    return TagStats.of(tag_occurrences(tags))


def _same(a: TagStats, b: TagStats):
    assert list(a.vocab) == list(b.vocab)
    np.testing.assert_array_equal(a.df, b.df)
    np.testing.assert_array_equal(a.occurrences, b.occurrences)
    assert (a.n_docs, a.n_occurrences) == (b.n_docs, b.n_occurrences)


def test_additive_update_equals_a_recount():
    rng = np.random.default_rng(0)
    before = _tags(rng, 400)
    new = _tags(rng, 30, WORDS + ["lantern", "Lantern", "kite"])  # tags the pool never had
    retag = {5: ["kite", "kite", "dog"], 17: [], 40: None}
    removed = [3, 99]
    after = [retag.get(i, t) for i, t in enumerate(before) if i not in removed] + new

    old_terms = doc_terms(tag_occurrences(before))
    entered = doc_terms(tag_occurrences([retag[i] for i in retag] + new))
    left = pa.concat_arrays([old_terms.take(pa.array(list(retag) + removed))])
    updated = _stats(before).update(entered, left)
    _same(updated, _stats(after))
    # and back: removing what entered and restoring what left gives the start again
    _same(updated.update(left, entered), _stats(before))


def test_update_refuses_statistics_that_do_not_describe_the_pool():
    stats = _stats([["dog"]])
    with pytest.raises(ValueError, match="do not describe this pool"):
        stats.update(pa.array([], pa.list_(pa.string())), doc_terms(tag_occurrences([["cat"]])))


def test_idf_shift_small_for_a_growing_pool_and_rare_tags_flagged():
    rng = np.random.default_rng(1)
    base = _tags(rng, 2000)
    grown = base + _tags(rng, 20) + [["owl", "rare-new"]]
    shift = idf_shift(_stats(base), _stats(grown))
    assert 0 < shift.mean < 0.01 and shift.avgdl < 0.01
    stats = _stats(grown)
    assert shift.rel[stats.lookup(np.array(["rare-new"], object))[0]] == 0  # new tags: nothing stored to shift
    # a tag held by one sample that gains another moves far more than the mean
    one = _stats([["a"], ["b"]] * 50 + [["solo"]])
    two = _stats([["a"], ["b"]] * 50 + [["solo"], ["solo"]])
    moved = idf_shift(one, two)
    assert moved.rel[two.lookup(np.array(["solo"], object))[0]] > 0.05 > moved.mean


def test_plan_refresh_finds_new_retagged_and_removed_samples():
    rng = np.random.default_rng(2)
    tags = _tags(rng, 300)
    ids = [f"{i:064x}" for i in range(300)]
    stored = pa.table({"id": ids, "terms": doc_terms(tag_occurrences(tags))})
    old = _stats(tags)
    cur_tags = list(tags)
    cur_tags[7] = ["kite"]  # retagged
    cur_ids = ids[:-2] + [f"{i:064x}" for i in range(1000, 1004)]  # two removed, four new
    cur_tags = cur_tags[:-2] + _tags(rng, 4)
    plan = plan_refresh(old, pa.array(cur_ids), doc_terms(tag_occurrences(cur_tags)), stored,
                        WeightConfig(idf_tolerance=0.05))
    assert not isinstance(plan, str)
    assert plan.counts["new"] == 4 and plan.counts["retagged"] == 1 and plan.counts["removed"] == 2
    assert set(plan.removed.to_pylist()) == set(ids[-2:])
    assert {7, 298, 299, 300, 301} <= set(plan.rows.tolist())
    _same(plan.stats, _stats(cur_tags))
    # a tolerance of zero cannot hold any shift: the reason to recompute fully comes back
    strict = plan_refresh(old, pa.array(cur_ids), doc_terms(tag_occurrences(cur_tags)), stored,
                          WeightConfig(idf_tolerance=0.0))
    assert isinstance(strict, str) and "exceeds the tolerance" in strict


def _build(lake, wiki):
    kg_build(lake, KgBuildConfig(page=str(wiki["page"]), pagelinks=str(wiki["pagelinks"]),
                                 linktarget=str(wiki["linktarget"]), redirect=str(wiki["redirect"])))


@pytest.fixture
def wiki(tmp_path):
    return write_demo_wiki(tmp_path / "wiki")


@pytest.fixture
def kg_lake(tmp_path, wiki):
    lake = Lake(str(tmp_path / "lake"))
    _build(lake, wiki)
    return lake


def _pool(lake, ids, tags):
    lake.write("pool", conform(pa.table({"id": ids, "tags": tags}), POOL_SCHEMA), mode="overwrite")


def test_incremental_weights_agree_with_a_full_recomputation(kg_lake):
    lake = kg_lake
    rng = np.random.default_rng(3)
    tags = _tags(rng, 600)
    ids = [f"{i:064x}" for i in range(600)]
    _pool(lake, ids, tags)
    cfg = WeightConfig(mode="incremental", idf_tolerance=0.02)
    first = kg_weights(lake, cfg)
    assert first.notes["statistics"] == "full: no weights yet"
    v0 = lake.version(WEIGHTS)

    # a night: six new samples (one with a tag the pool never had), one relabelled by a reviewer
    new_ids = [f"{i:064x}" for i in range(1000, 1006)]
    new_tags = _tags(rng, 5) + [["lantern", "dog"]]
    _pool(lake, ids + new_ids, tags + new_tags)
    lake.write("labels", conform(pa.table({"id": [ids[10]], "tags": [["castle", "snow", "night"]]}), LABELS_SCHEMA))
    night = kg_weights(lake, cfg)
    assert night.notes["statistics"].startswith("incremental: idf shift"), night.notes
    assert "6 new, 1 retagged" in night.notes["statistics"]
    assert night.rows_out < 100  # only the changed samples (and a few holding rare tags)

    stored = lake.read(WEIGHTS).sort_by("id")
    final_tags = [["castle", "snow", "night"] if i == 10 else t for i, t in enumerate(tags)] + new_tags
    kg, version = load_graph(lake)
    full = weigh(pa.array(ids + new_ids), final_tags, kg, WeightConfig(), graph_version=f"kg_nodes v{version}")
    ref = full.table.sort_by("id")
    assert stored["id"].to_pylist() == ref["id"].to_pylist()
    # statistics: exact; weights: within the drift the tolerance allows
    _same(TagStats.from_table(lake.read(TAG_STATS), lake.commit_record(WEIGHTS).producer["tag_stats"]), full.stats)
    w, r = stored["weight"].to_numpy(), ref["weight"].to_numpy()
    assert np.max(np.abs(w / r - 1)) < 0.05
    assert stored["terms"].to_pylist() == ref["terms"].to_pylist()
    assert stored["nodes"].to_pylist() == ref["nodes"].to_pylist()

    # vacuum keeps the statistics version the weights name (the next night builds on it)
    from curation.storage.maintenance import pinned_versions

    assert lake.commit_record(WEIGHTS).producer["tag_stats"]["version"] in pinned_versions(lake)[TAG_STATS]
    # nothing changed: no new version of either table
    versions = (lake.version(WEIGHTS), lake.version(TAG_STATS))
    again = kg_weights(lake, cfg)
    assert (lake.version(WEIGHTS), lake.version(TAG_STATS)) == versions and again.rows_out == 0
    assert versions[0] == v0 + 1


def test_incremental_weights_fall_back_to_full_and_say_why(kg_lake, wiki):
    lake = kg_lake
    rng = np.random.default_rng(4)
    tags = _tags(rng, 200)
    ids = [f"{i:064x}" for i in range(200)]
    _pool(lake, ids, tags)
    kg_weights(lake, WeightConfig())  # a full run records the statistics too
    # the pool doubles: the idf moves past any small tolerance
    more = [f"{i:064x}" for i in range(500, 700)]
    _pool(lake, ids + more, tags + _tags(rng, 200, ["kite", "lantern", "dog"]))
    s = kg_weights(lake, WeightConfig(mode="incremental", idf_tolerance=0.01))
    assert s.notes["statistics"].startswith("full: idf shift") and "exceeds the tolerance 1.00%" in s.notes["statistics"]
    assert lake.read(WEIGHTS).num_rows == 400
    # changed parameters: the stored weights cannot be extended
    s = kg_weights(lake, WeightConfig(mode="incremental", k1=1.2))
    assert s.notes["statistics"] == "full: the weight parameters changed"
    # a new graph version
    _build(lake, wiki)
    s = kg_weights(lake, WeightConfig(mode="incremental", k1=1.2))
    assert s.notes["statistics"].startswith("full: the graph changed")

