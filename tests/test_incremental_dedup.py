"""Incremental dedup agrees with a full recomputation and touches only the groups new items reach."""

import shutil

import numpy as np
import pyarrow as pa
import pytest

from curation.steps.vectors.dedup import DedupConfig, dedup
from curation.steps.vectors.embeddings import embeddings_rows
from curation.steps.vectors.incremental import incremental_dedup
from curation.storage.lake import Lake
from curation.storage.schemas import (
    POOL_SCHEMA,
    conform,
    embeddings_table,
    graph_edges_table,
)

ENC = "clip"
CFG = DedupConfig(encoder=ENC, k=8, tau=0.9, levels=[1.0], phash_max_distance=None, window_distance=None,
                  keep_by=[])  # no quality columns in this tiny lake: keepers by id
DIM = 32


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _corpus(seed=0):
    """Old: 30 planted groups of 3 + 150 singles. New: copies of 10 old group members, copies of
    10 old singles, 5 new groups of 2, 20 new singles. Ids are random hex, so whether a new copy
    sorts before the old keeper (and takes its place: keep_by falls back to id) is by chance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30 + 150 + 5 + 20, DIM))
    noise = lambda c: c + rng.standard_normal(DIM) * 0.02
    old = [noise(centres[g]) for g in range(30) for _ in range(3)] + [centres[30 + s] for s in range(150)]
    old_truth = [g for g in range(30) for _ in range(3)] + [30 + s for s in range(150)]
    new = ([noise(centres[g]) for g in range(10)] + [noise(centres[30 + s]) for s in range(10)]
           + [noise(centres[180 + g]) for g in range(5) for _ in range(2)] + [centres[185 + s] for s in range(20)])
    new_truth = list(range(10)) + [30 + s for s in range(10)] + [180 + g for g in range(5) for _ in range(2)] \
        + [185 + s for s in range(20)]
    ids = [f"{v:016x}" for v in rng.choice(2**62, size=len(old) + len(new), replace=False)]
    return (ids[:len(old)], _unit(old), old_truth), (ids[len(old):], _unit(new), new_truth)


def _pool(ids):
    return conform(pa.table({"id": ids, "uri": [f"/nowhere/{i}.jpg" for i in ids], "uris": [[f"/nowhere/{i}.jpg"] for i in ids]}),
                   POOL_SCHEMA)


def _pairs(table):
    groups: dict = {}
    for i, g in zip(table["id"].to_pylist(), table["group_id"].to_pylist()):
        groups.setdefault(g, []).append(i)
    return {(a, b) for members in groups.values() for a in members for b in members if a < b}


def _f1(found, truth):
    if not found and not truth:
        return 1.0
    tp = len(found & truth)
    return 2 * tp / (len(found) + len(truth))


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    (old_ids, old_x, _), (new_ids, new_x, _) = _corpus()
    lake = Lake(str(root / "lake"))
    lake.write("pool", _pool(old_ids), mode="overwrite")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(old_ids), ENC, old_x))
    dedup(lake, CFG, map_fn=map)
    before = lake.read("dedup")
    before_version = lake.version("dedup")
    lake.write("pool", _pool(new_ids), mode="append", key="id")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(new_ids), ENC, new_x))
    shutil.copytree(root / "lake", root / "full")
    full = Lake(str(root / "full"))
    dedup(full, CFG, map_fn=map)
    report = incremental_dedup(lake, CFG, run_id="nightly-1")
    return {"lake": lake, "full": full.read("dedup"), "before": before, "before_version": before_version,
            "report": report, "old_ids": old_ids, "new_ids": new_ids}


def test_agrees_with_full_recomputation(lakes):
    after = lakes["lake"].read("dedup")
    full = lakes["full"]
    assert sorted(after["id"].to_pylist()) == sorted(full["id"].to_pylist())
    assert _f1(_pairs(after), _pairs(full)) >= 0.99
    # on this well-separated data the decisions are identical, keepers included
    assert dict(zip(after["id"].to_pylist(), after["keep"].to_pylist())) == \
        dict(zip(full["id"].to_pylist(), full["keep"].to_pylist()))


def test_report_and_changed_keep(lakes):
    r = lakes["report"]
    before = {x["id"]: x for x in lakes["before"].to_pylist()}
    after = {x["id"]: x for x in lakes["lake"].read("dedup").to_pylist()}
    assert r["new_items"] == r["new_embedded"] == len(lakes["new_ids"]) == 50
    # 20 copies of old items (each links to 1 or 3 old items) + 5 new pairs
    assert r["edges_added"] >= 20 + 5
    assert r["components_touched"] == len(lakes["new_ids"]) - 5  # one per new pair, one per other new item
    assert r["components_reclosed"] == 0  # no pHash here: nothing pulls in an untouched component
    expected_to_dup = sorted(i for i in before if before[i]["keep"] and not after[i]["keep"])
    expected_to_kept = sorted(i for i in before if not before[i]["keep"] and after[i]["keep"])
    assert r["changed_keep"] == {"kept_to_duplicate": expected_to_dup, "duplicate_to_kept": expected_to_kept}
    # the planted case: an old keeper loses its place exactly when a new copy sorts before it
    new = set(lakes["new_ids"])
    planted = sorted(i for i in before if before[i]["keep"]
                     and any(j in new and j < i and after[j]["group_id"] == after[i]["group_id"] for j in after))
    assert expected_to_dup == planted and len(planted) > 0
    # 20 copies join groups of 3 or 1 (10*4 + 10*2 items) + 10 items of new pairs + 20 new singles
    assert r["items_redecided"] == 10 * 4 + 10 * 2 + 10 + 20
    assert r["rows_written"] <= r["items_redecided"]


def test_untouched_rows_unchanged(lakes):
    lake = lakes["lake"]
    after = {x["id"]: x for x in lake.read("dedup").to_pylist()}
    new = set(lakes["new_ids"])
    reached = {g for i, x in after.items() if i in new for g in (x["group_id"],)}
    changed = 0
    for row in lakes["before"].to_pylist():
        if after[row["id"]]["group_id"] not in reached:  # its group has no new item
            assert after[row["id"]] == row  # value-identical, levels included
        else:
            changed += after[row["id"]] != row
    assert changed <= lakes["report"]["rows_written"]
    history = lake.history("dedup", limit=1)[0]
    assert history.producer["step"] == "dedup-incremental" and history.producer["run_id"] == "nightly-1"
    assert lake.read("dedup", version=lakes["before_version"]).num_rows == lakes["before"].num_rows


def test_edges_appended_and_second_run_is_a_no_op(lakes):
    lake = lakes["lake"]
    edges = lake.read(graph_edges_table(ENC))
    pairs = set(zip(edges["src_id"].to_pylist(), edges["dst_id"].to_pylist()))
    assert len(pairs) == edges.num_rows  # no pair stored twice
    versions = (lake.version("dedup"), lake.version(graph_edges_table(ENC)))
    again = incremental_dedup(lake, CFG, run_id="nightly-2")
    assert again["new_items"] == 0 and again["edges_added"] == 0 and again["rows_written"] == 0
    assert again["changed_keep"] == {"kept_to_duplicate": [], "duplicate_to_kept": []}
    assert (lake.version("dedup"), lake.version(graph_edges_table(ENC))) == versions


def test_phash_group_pulls_in_an_untouched_component(tmp_path):
    """Old: semantic pair {a1, a2}; single b shares a1's pHash, so the old group is {a1, a2, b}.
    New: n, a semantic copy of b. n's edges touch only b's component, but the group closure must
    re-decide a1 and a2 too (their group grows to 4): one component re-run by closure."""
    from curation.storage.schemas import PROFILE_KEY_FIELDS

    cfg = DedupConfig(encoder=ENC, k=4, tau=0.9, levels=[1.0], phash_max_distance=4, window_distance=None, keep_by=[])
    rng = np.random.default_rng(3)
    c = _unit(rng.standard_normal((12, DIM)))
    jitter = lambda v: _unit(v[None] + rng.standard_normal(DIM) * 0.02)[0]
    old_ids = ["a1", "a2", "b"] + [f"s{i}" for i in range(9)]
    old_x = _unit([c[0], jitter(c[0]), c[1], *c[3:12]])
    hashes = {i: int(h) for i, h in zip(old_ids + ["n"], rng.integers(0, 2**63, size=13, dtype=np.int64))}
    hashes["b"] = hashes["a1"] ^ 1  # 1 bit apart: a pHash near-duplicate

    def profiles(ids):
        fields = list(PROFILE_KEY_FIELDS) + [pa.field("phash", pa.uint64())]
        return pa.table({"id": ids, "error": [None] * len(ids), "profile_producer": ["phash@1"] * len(ids),
                         "phash": pa.array([hashes[i] for i in ids], pa.uint64())}, schema=pa.schema(fields))

    lake = Lake(str(tmp_path / "lake"))
    lake.write("pool", _pool(old_ids), mode="overwrite")
    lake.write("profiles", profiles(old_ids), mode="overwrite")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(old_ids), ENC, old_x))
    dedup(lake, cfg, map_fn=map)
    before = {r["id"]: r for r in lake.read("dedup").to_pylist()}
    assert before["b"]["group_id"] == before["a1"]["group_id"] and before["a1"]["group_size"] == 3
    lake.write("pool", _pool(["n"]), mode="append", key="id")
    lake.write("profiles", profiles(old_ids + ["n"]), mode="overwrite")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(["n"]), ENC, _unit([jitter(c[1])])))
    shutil.copytree(tmp_path / "lake", tmp_path / "full")
    dedup(Lake(str(tmp_path / "full")), cfg, map_fn=map)
    report = incremental_dedup(lake, cfg, run_id="nightly-1")
    assert report["components_touched"] == 1 and report["components_reclosed"] == 1
    assert report["items_redecided"] == 4
    after = {r["id"]: r for r in lake.read("dedup").to_pylist()}
    full = {r["id"]: r for r in Lake(str(tmp_path / "full")).read("dedup").to_pylist()}
    cols = ("group_id", "group_size", "keep", "dup_kind")
    assert {i: tuple(r[k] for k in cols) for i, r in after.items()} == {i: tuple(r[k] for k in cols) for i, r in full.items()}
    assert after["a1"]["group_size"] == 4 and after["a1"]["dup_kind"] == "semantic+phash"
    assert all(after[i] == before[i] for i in old_ids if i.startswith("s"))


def test_the_saved_index_is_reused_only_when_sound(lakes, tmp_path):
    """The full run saves its k-NN index; an incremental run searches it (adding only the
    appended vectors) and saves it again; a rewritten embeddings table, other k-NN settings
    or a missing index make it rebuild from the table, with the same decisions."""
    from curation.steps.vectors.index_store import INDEX_DIR, load_stored

    r = lakes["report"]
    assert r["index"] == f"saved index of {len(lakes['old_ids'])} vectors + {len(lakes['new_ids'])} appended; saved"
    lake = lakes["lake"]
    saved = load_stored(lake, ENC, CFG.knn_setting())
    assert saved.embeddings_version == lake.version(embeddings_table(ENC))
    assert sorted(saved.ids.to_pylist()) == sorted(lakes["old_ids"] + lakes["new_ids"])
    assert "other k-NN settings" in load_stored(lake, ENC, {"backend": "faiss-hnsw", "params": {}})

    (old_ids, old_x, _), (new_ids, new_x, _) = _corpus()
    results = {}
    for case in ("saved", "rewritten", "missing"):
        work = Lake(str(tmp_path / case))
        work.write("pool", _pool(old_ids), mode="overwrite")
        work.write(embeddings_table(ENC), embeddings_rows(pa.array(old_ids), ENC, old_x))
        dedup(work, CFG, map_fn=map)
        work.write("pool", _pool(new_ids), mode="append", key="id")
        if case == "rewritten":  # an overwrite (a re-encode): the saved vectors may be stale
            work.write(embeddings_table(ENC), embeddings_rows(pa.array(old_ids + new_ids), ENC,
                                                              np.concatenate([old_x, new_x])), mode="overwrite")
        else:
            work.write(embeddings_table(ENC), embeddings_rows(pa.array(new_ids), ENC, new_x))
        if case == "missing":
            shutil.rmtree(tmp_path / case / INDEX_DIR)
        report = incremental_dedup(work, CFG, run_id="n1")
        results[case] = work.read("dedup").sort_by("id").select(["id", "group_id", "keep"]).to_pylist()
        expected = {"saved": "saved index of", "rewritten": "the embeddings were rewritten",
                    "missing": "no saved index yet"}[case]
        assert expected in report["index"]
        assert load_stored(work, ENC, CFG.knn_setting()).ids.to_pylist()[-len(new_ids):] != []
    assert results["saved"] == results["rewritten"] == results["missing"]


def test_a_saved_index_round_trips_per_backend(tmp_path):
    from graph.knn import load_index, make_index

    x = _unit(np.random.default_rng(5).standard_normal((400, DIM)))
    for name in ("faiss-flat", "faiss-ivf", "faiss-hnsw"):
        built = make_index(name, **({"nlist": 4} if name == "faiss-ivf" else {}))
        built.add(x[:300])
        path = str(tmp_path / f"{name}.index")
        header = built.save(path)
        again = load_index(path, header)
        assert again.params == built.params and again.ntotal == 300
        a, b = built.search(x[300:], 5), again.search(x[300:], 5)
        assert np.array_equal(a.ids, b.ids) and np.allclose(a.sims, b.sims)
        again.add(x[300:])  # positions continue after the saved ones
        assert again.search(x[350:351], 1).ids[0, 0] == 350
    with pytest.raises(ValueError, match="format"):
        load_index(path, {**header, "format": 99})
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_index(path, {**header, "params": {"backend": "cuvs-cagra"}})


def test_a_lake_that_outgrew_the_saved_backend_rebuilds(tmp_path, monkeypatch):
    """Past the size where "auto" switches backend (faiss-flat -> faiss-ivf), the saved flat
    index is not reused: the night rebuilds with the backend a full run would now pick."""
    import graph.knn.registry as registry

    (old_ids, old_x, _), (new_ids, new_x, _) = _corpus()
    lake = Lake(str(tmp_path / "lake"))
    lake.write("pool", _pool(old_ids), mode="overwrite")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(old_ids), ENC, old_x))
    dedup(lake, CFG, map_fn=map)
    lake.write("pool", _pool(new_ids), mode="append", key="id")
    lake.write(embeddings_table(ENC), embeddings_rows(pa.array(new_ids), ENC, new_x))
    monkeypatch.setattr(registry, "CPU_EXACT_MAX", len(old_ids))
    report = incremental_dedup(lake, CFG, run_id="n1")
    assert "outgrew the saved faiss-flat index (faiss-ivf now)" in report["index"] and report["index"].endswith("; saved")
    from curation.steps.vectors.index_store import load_stored

    assert load_stored(lake, ENC, CFG.knn_setting()).meta["header"]["params"]["backend"] == "faiss-ivf"
