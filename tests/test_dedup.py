"""The dedup workflow, export applying its decision, cross-modal search and pruning by query."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.steps.vectors.dedup import DedupConfig, decide, semantic_groups
from curation.steps.export.export import DUPLICATE, REMOVED, StageConfig, evaluate
from curation.storage.lake import Lake
from curation.steps.vectors.search import VectorSearch, prune
from curation.steps.vectors.embeddings import read_embeddings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dedup_reference as ref  # noqa: E402


def _planted(n_groups=20, copies=3, singles=200, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_groups + singles, dim))
    x, truth = [], []
    for g in range(n_groups):
        for _ in range(copies):
            x.append(base[g] + rng.standard_normal(dim) * 0.02)
            truth.append(g)
    for s in range(singles):
        x.append(base[n_groups + s])
        truth.append(n_groups + s)
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.asarray(truth)


def _chain(cliques=4, size=8, dim=64, seed=1):
    """Tight cliques whose consecutive members are bridged above tau: one component, 4 cores."""
    rng = np.random.default_rng(seed)
    centres = [rng.standard_normal(dim)]
    for _ in range(cliques - 1):  # each centre ~0.8 from the previous one
        c = centres[-1] + rng.standard_normal(dim) * 0.75
        centres.append(c)
    x = [c / np.linalg.norm(c) + rng.standard_normal(dim) * 0.01 for c in centres for _ in range(size)]
    x = np.asarray(x, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for a in range(cliques - 1):  # a bridge item halfway between two consecutive cliques
        mid = x[a * size] + x[(a + 1) * size]
        x = np.vstack([x, mid / np.linalg.norm(mid)])
    return x


def test_planted_groups_found_exactly():
    x, truth = _planted()
    res = semantic_groups(x, DedupConfig(k=8, tau=0.9, levels=[1.0, 0.1]))
    assert ref.adjusted_rand(res.groups, truth) == pytest.approx(1.0)
    assert res.levels.shape == (len(x), 2)
    assert 0 <= res.saturation <= 1


def test_backend_and_params_pass_through():
    x, truth = _planted()
    res = semantic_groups(x, DedupConfig(k=8, tau=0.9, levels=[], backend="faiss-hnsw",
                                         knn_params={"M": 16, "ef_search": 32}))
    assert ref.adjusted_rand(res.groups, truth) == pytest.approx(1.0)
    with pytest.raises(TypeError):
        semantic_groups(x, DedupConfig(k=8, backend="faiss-hnsw", knn_params={"nprobe": 4}))


def test_chain_split_by_leiden_where_components_merge():
    x = _chain()
    cfg = DedupConfig(k=10, tau=0.9, levels=[])  # cliques ~1.0, bridges ~0.95, clique-to-clique ~0.8
    res = semantic_groups(x, cfg)
    components = ref.components(len(x), res.src, res.dst)
    assert len(np.unique(components)) == 1  # the bridges chain every clique together
    core = res.groups[:32].reshape(4, 8)
    assert all(len(set(row)) == 1 for row in core) and len(set(core[:, 0])) == 4


def test_edge_cases():
    cfg = DedupConfig(k=4, tau=0.9, levels=[1.0])
    one = semantic_groups(np.ones((1, 8), np.float32), cfg)
    assert one.groups.tolist() == [0] and len(one.src) == 0
    same = semantic_groups(np.ones((6, 8), np.float32), cfg)
    assert len(set(same.groups.tolist())) == 1  # all identical: one community
    for bad in (np.array([[np.nan, 1.0]]), np.zeros((3, 4))):
        with pytest.raises(ValueError):
            semantic_groups(bad, cfg)


def test_decide_merges_semantic_and_phash_and_keeps_by_quality():
    quality = pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "phash": pa.array([1, 1 | 2, 0xFFFFFFFF00000000, 0x00000000FFFFFFFF, None], pa.uint64()),  # a~b only
        "width": [100, 200, 300, 50, 10], "height": [100, 200, 300, 50, 10],
        "aesthetic": pa.array([5.0, 4.0, 6.0, 7.0, None], pa.float32()),
        "uris": [["x"], ["y"], ["z", "z2"], ["w"], ["v"]],
    })
    x = np.eye(3, 8, dtype=np.float32)
    x[1] = x[0] + 0.01  # c and d (embedding rows 0, 1) are semantic duplicates
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb_ids = np.array(["c", "d", "e"], object)
    res = semantic_groups(x, DedupConfig(k=2, tau=0.9, levels=[1.0]))
    table = decide(quality, emb_ids, res, DedupConfig(phash_max_distance=2, levels=[1.0],
                                                      keep_by=["aesthetic desc", "pixels desc"]))
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["a"]["keep"] and not rows["b"]["keep"] and rows["b"]["group_id"] == "a"  # higher aesthetic
    assert rows["b"]["dup_kind"] == "phash" and rows["a"]["group_size"] == 2
    assert rows["d"]["keep"] and not rows["c"]["keep"] and rows["c"]["dup_kind"] == "semantic"
    assert rows["c"]["exact_copies"] == 2
    assert rows["e"]["keep"] and rows["e"]["group_size"] == 1
    assert rows["a"]["community_l0"] is None and rows["c"]["community_l0"] == rows["d"]["community_l0"]


@pytest.fixture(scope="module")
def deduped(demo_lake):
    """The demo lake after its dedup step (the demo spec runs score and dedup)."""
    lake = Lake(demo_lake["lake"])
    assert lake.exists("dedup"), "the demo job must run the dedup step"
    return lake, demo_lake["spec"]


def test_demo_dedup_table_and_export(deduped):
    lake, spec = deduped
    dedup = lake.read("dedup")
    pool = lake.read("pool", columns=["id"])
    assert sorted(dedup["id"].to_pylist()) == sorted(pool["id"].to_pylist())  # one decision per item
    assert lake.exists(f"graph_edges/{spec.score.encoders[0].name}")
    dropped = set(dedup.filter(pc.invert(dedup["keep"]))["id"].to_pylist())
    ev = evaluate(lake, spec.stage("lowres"))
    reasons = dict(zip(ev.table["id"].to_pylist(), ev.table["reason"].to_pylist()))
    assert all(reasons[i] is not None for i in dropped)  # every duplicate is removed, by some rule
    assert ev.removed_per_rule.get(DUPLICATE, 0) == sum(reasons[i] == DUPLICATE for i in dropped)
    off = evaluate(lake, StageConfig(rules=spec.stage("lowres").rules, apply_dedup=False))
    assert DUPLICATE not in off.removed_per_rule


def test_search_and_prune(deduped, tmp_path):
    lake, spec = deduped
    search = VectorSearch.open(lake, spec.score.encoders)
    emb_ids, vectors = read_embeddings(lake, search.encoder_name, dtype=np.float32)
    first = emb_ids[0].as_py()
    vec = vectors[0]
    hits = search.vectors(vec, k=3)[0]
    assert hits["id"][0].as_py() == first and hits["similarity"][0].as_py() == pytest.approx(1.0, abs=1e-2)
    assert {"uri", "group_id", "community_l0"} <= set(hits.column_names)
    text_hits = search.text("a red car on the grass", k=5)
    assert text_hits.num_rows == 5 and text_hits["similarity"].to_pylist() == sorted(text_hits["similarity"].to_pylist(), reverse=True)
    uri = lake.read("pool", columns=["id", "uri"]).filter(pc.equal(pc.field("id"), first))["uri"][0].as_py()
    assert search.image(uri, k=1)["id"][0].as_py() == first
    with pytest.raises(ValueError, match="reason"):
        prune(search, [("text", "x")], reason=" ")
    listed = prune(search, [("image", uri)], k=1, min_similarity=0.5, reason="failure: test", apply=False)
    assert listed.num_rows >= 1 and not lake.exists("removals")
    community = listed["community"][0].as_py()
    members = lake.read("dedup").filter(pc.equal(pc.field("community_l0"), community))
    assert sorted(listed["id"].to_pylist()) == sorted(members["id"].to_pylist())


def test_prune_apply_records_removals_export_applies(demo_lake, tmp_path):
    """On a copy of the demo lake: apply a prune, export drops the items with reason."""
    import shutil

    from curation.steps.export.neardup import NearDupConfig
    from curation.steps.export.rules import RulesConfig

    shutil.copytree(demo_lake["lake"], tmp_path / "lake")
    lake, spec = Lake(str(tmp_path / "lake")), demo_lake["spec"]
    search = VectorSearch.open(lake, spec.score.encoders)
    uri = lake.read("pool", columns=["uri", "error"]).filter(pc.is_null(pc.field("error")))["uri"][0].as_py()
    out = prune(search, [("image", uri)], k=1, min_similarity=0.5, reason="takedown 42", apply=True)
    removals = lake.read("removals")
    ours = removals.filter(pc.equal(removals["reason"], "takedown 42"))
    assert sorted(ours["id"].to_pylist()) == sorted(out["id"].to_pylist()) and out.num_rows >= 1

    ev = evaluate(lake, StageConfig(rules=RulesConfig(), neardup=NearDupConfig(enabled=False), apply_dedup=False))
    reasons = dict(zip(ev.table["id"].to_pylist(), ev.table["reason"].to_pylist()))
    assert all(reasons[i] == REMOVED for i in out["id"].to_pylist())
    # every recorded removal of a pool item (the demo's own prunes too) and nothing else
    removed = set(removals["id"].to_pylist()) & set(reasons)
    assert ev.removed_per_rule[REMOVED] == len(removed) == sum(r == REMOVED for r in reasons.values())


def test_reference_algorithms_and_metrics():
    """The benchmark's references agree with the planted truth on easy data."""
    x, truth = _planted(n_groups=10, copies=3, singles=60)
    exact = ref.exact_threshold_groups(x, 0.9)
    assert ref.adjusted_rand(exact, truth) == pytest.approx(1.0)
    assert ref.pairwise_f1(exact, truth) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    sd3 = ref.sd3_dedup(x, 0.9, n_clusters=4)
    assert ref.pairwise_f1(sd3, truth)["precision"] == 1.0  # keep-first never over-merges here
    assert ref.jaccard(ref.removed_set(exact), ref.removed_set(truth)) == 1.0
    assert ref.residual_duplicate_rate(x, exact, 0.9) == 0.0
    assert ref.residual_duplicate_rate(x, np.arange(len(x)), 0.9) > 0  # nothing removed: duplicates remain
