"""Expert-edit pairs: the ordered-pair graph, composed instructions, reading the layouts,
bad input counted, reruns idempotent, difference captions for pending pairs, and the edit
stage of the export reading the pairs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.demo import photo_like, save_image
from curation.demo.edits import write_expert_groups
from curation.demo.vlm_stub import VlmStub
from curation.hashes import pair_hash
from curation.steps.captions import caption as caption_module
from curation.steps.pairs import compose
from curation.steps.pairs.graph import build_pairs, members_table, pair_template
from curation.steps.pairs.table import pair_ids
from curation.steps.run import run_step
from curation.storage import schemas
from curation.storage.lake import Lake


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _group(name: str, edits: list[tuple[str, str, dict]], language: str = "en") -> list[dict]:
    rows = [dict(group_id=name, id=_sha(name + "/o"), pos=0, language=language, provenance_json="{}")]
    for i, (task, instruction, params) in enumerate(edits, start=1):
        rows.append(dict(group_id=name, id=_sha(f"{name}/{i}"), pos=i, task=task, instruction=instruction,
                         params=params, language=language, provenance_json="{}"))
    return rows


EDITS = [("grayscale", "Make it black and white", {}), ("add_border", "Add a red border", {}),
         ("sepia", "Give it a sepia tone", {}), ("add_object", "Add a cat", {"object": "cat"})]


def test_every_ordered_pair_of_a_group_once():
    pairs = build_pairs(members_table(_group("g", EDITS) + _group("h", EDITS[:2])))
    assert pairs.num_rows == 4 * 5 + 2 * 3  # N(N+1) per group
    kinds = pairs.filter(pc.equal(pairs["group_id"], "g"))["kind"].to_pylist()
    assert (kinds.count("expert"), kinds.count("inverse"), kinds.count("mixed")) == (4, 4, 12)
    assert len(set(zip(pairs["source_id"].to_pylist(), pairs["target_id"].to_pylist()))) == pairs.num_rows
    assert pc.all(pc.not_equal(pairs["source_id"], pairs["target_id"])).as_py()
    # the pair id is a function of (source, target, kind) alone, whoever computes it
    assert pairs["pair_id"].combine_chunks().equals(pair_ids(pairs["source_id"], pairs["target_id"], pairs["kind"]))
    assert len(set(pairs["pair_id"].to_pylist())) == pairs.num_rows


def test_kinds_and_cap_per_group():
    a, b, k = pair_template(5, ("expert", "inverse", "mixed"), 6)
    assert list(zip(a, b)) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (2, 0)]  # experts first, then inverse
    only_mixed = build_pairs(members_table(_group("g", EDITS)), ["mixed"])
    assert set(only_mixed["kind"].to_pylist()) == {"mixed"} and only_mixed.num_rows == 12
    assert build_pairs(members_table(_group("g", EDITS)), ["expert", "inverse"], cap=3).num_rows == 3


def test_instructions_known_composed_or_pending():
    pairs = build_pairs(members_table(_group("g", EDITS))).to_pylist()
    by = {(p["kind"], tuple(p["tasks"])): p for p in pairs}
    assert by[("expert", ("grayscale",))]["instruction"] == "Make it black and white"
    assert by[("expert", ("grayscale",))]["instruction_source"] == "known"
    assert by[("inverse", ("add_object",))]["instruction"] == "Remove the cat"  # template filled from params
    assert by[("inverse", ("add_border",))]["instruction_source"] == "composed"
    # disjoint edits (colour, border): undo one, apply the other
    assert by[("mixed", ("grayscale", "add_border"))]["instruction"] == "Restore the original colours. Add a red border"
    # two colour edits overlap: no rule, the pair waits for a difference caption
    assert by[("mixed", ("grayscale", "sepia"))]["instruction"] is None
    assert by[("mixed", ("grayscale", "sepia"))]["instruction_source"] == "pending"
    zh = build_pairs(members_table(_group("z", [("grayscale", "把照片变成黑白的", {}), ("add_border", "加上红色边框", {})],
                                          language="zh"))).to_pylist()
    mixed = [p["instruction"] for p in zh if p["kind"] == "mixed"]
    assert "恢复原来的色彩，加上红色边框" in mixed


def test_unknown_tasks_use_the_data_s_own_inverse_and_aspects():
    rows = _group("g", [("relight", "Light it from the left", {}), ("add_border", "Add a border", {})])
    rows[1].update(inverse_instruction="Light it from the front again", aspects=["lighting"])
    pairs = build_pairs(members_table(rows)).to_pylist()
    inv = [p for p in pairs if p["kind"] == "inverse" and p["tasks"] == ["relight"]][0]
    assert inv["instruction"] == "Light it from the front again"
    mixed = [p for p in pairs if p["kind"] == "mixed" and p["tasks"] == ["relight", "add_border"]][0]
    assert mixed["instruction"] == "Light it from the front again. Add a border"
    assert compose.language_of("把照片变成黑白的") == "zh" and compose.language_of("Make it blue") == "en"


def test_pair_hash_is_per_row_not_per_batch():
    ids = pa.array([_sha("a"), "not-hex", _sha("b")])
    tags = np.array([0, 1, 2])
    whole = pair_hash(ids, ids, tags).to_pylist()
    alone = [pair_hash(ids.slice(i, 1), ids.slice(i, 1), tags[i:i + 1]).to_pylist()[0] for i in range(3)]
    assert whole == alone and all(len(h) == 32 for h in whole)


@pytest.fixture(scope="module")
def experts_lake(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    write_expert_groups(root / "edits", n_groups=3, seed=1, size=(160, 120))
    lake = Lake(str(root / "lake"))
    summary = run_step(lake, "pairs-experts", source=str(root / "edits"))
    return lake, root, summary


def test_step_builds_groups_and_counts_bad_input(experts_lake):
    lake, root, s = experts_lake
    pairs = lake.read(schemas.EDIT_PAIRS)
    # 3 good groups of N=4 (20 pairs each) + the listing group: 3 decodable edits (N=3, 12 pairs)
    assert pairs.num_rows == 3 * 20 + 12
    assert s.notes["groups_rejected"] == {"one image only": 1}
    assert s.notes["images_unreadable"] == 1  # zoom.jpg does not decode
    assert s.notes["edits_rejected"] == {"bad line": 1, "not in the group": 1}
    assert s.notes["instruction_issues"] == {"empty": 1, "invalid_utf8": 1, "unlisted": 1}
    assert any("decode:" in e for e in s.notes["rejected_examples"])
    assert s.notes["pairs"]["expert"] == {"known": 12, "pending": 3}
    assert "no captioner" in s.notes["difference_captions"]
    # both images of every pair are pool items, recorded with their group
    pool = lake.read(schemas.POOL, columns=["id", "sources", "extra_json"])
    assert pc.all(pc.is_in(pairs["source_id"], value_set=pool["id"])).as_py()
    assert pc.all(pc.is_in(pairs["target_id"], value_set=pool["id"])).as_py()
    zh = pairs.filter(pc.equal(pairs["group_id"], "experts/group02"))
    assert "把照片变成黑白的" in zh["instruction"].to_pylist() or "给图片加上红色边框" in zh["instruction"].to_pylist()


def test_rerun_adds_nothing(experts_lake):
    lake, root, _ = experts_lake
    versions = (lake.version(schemas.EDIT_PAIRS), lake.version(schemas.POOL))
    run_step(lake, "pairs-experts", source=str(root / "edits"))
    assert (lake.version(schemas.EDIT_PAIRS), lake.version(schemas.POOL)) == versions


def test_table_layout(ray_session, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for g in ("a", "b"):
        base = photo_like(rng, 96, 72)
        save_image(base, tmp_path / "img" / f"{g}_orig.jpg")
        save_image(base.convert("L").convert("RGB"), tmp_path / "img" / f"{g}_gray.jpg")
        save_image(base.rotate(180), tmp_path / "img" / f"{g}_rot.jpg")
        rows += [{"group": g, "file": f"img/{g}_orig.jpg", "role": "original", "task": None, "instruction": None},
                 {"group": g, "file": f"img/{g}_gray.jpg", "role": "edit", "task": "grayscale",
                  "instruction": "Make it grey"},
                 {"group": g, "file": f"img/{g}_rot.jpg", "role": "edit", "task": "rotate",
                  "instruction": "Turn it upside down"}]
    rows.append({"group": None, "file": "img/x.jpg", "role": "edit", "task": None, "instruction": None})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "edits.parquet")
    lake = Lake(str(tmp_path / "lake"))
    s = run_step(lake, "pairs-experts", source=str(tmp_path / "edits.parquet"))
    pairs = lake.read(schemas.EDIT_PAIRS)
    assert pairs.num_rows == 2 * 6 and s.notes["edits_rejected"] == {"no group": 1}
    mixed = pairs.filter(pc.equal(pairs["kind"], "mixed"))["instruction"].to_pylist()
    assert "Restore the original colours. Turn it upside down" in mixed  # colour and framing are disjoint


def test_pending_pairs_get_difference_captions(experts_lake, monkeypatch):
    lake, root, _ = experts_lake
    pairs = lake.read(schemas.EDIT_PAIRS)
    pending = pairs.filter(pc.equal(pairs["instruction_source"], "pending"))
    broken = pending["source_id"][0].as_py()  # its OCR strings make the stub answer malformed JSON
    monkeypatch.setattr(caption_module, "ocr_strings", lambda lake: {broken: ["[[malformed]]"]})
    with VlmStub() as stub:
        s = run_step(lake, "pairs-experts", source=str(root / "edits"),
                     overrides={"caption.http.url": stub.url, "caption.http.retries": 0})
    after = lake.read(schemas.EDIT_PAIRS)
    assert after.num_rows == pairs.num_rows
    # the broken image's strings go into every request it is part of, as source or as target
    failed = sum(broken in (p["source_id"], p["target_id"]) for p in pending.to_pylist())
    assert s.notes["vlm_filled"] == pending.num_rows - failed and s.notes["vlm_failed"] == failed
    vlm = after.filter(pc.equal(after["instruction_source"], "vlm")).to_pylist()
    assert vlm and all(p["instruction"] and p["error"] is None for p in vlm)
    assert "difference_caption" in json.loads(vlm[0]["provenance_json"])
    still = after.filter(pc.equal(after["instruction_source"], "pending")).to_pylist()
    assert len(still) == failed and all(p["error"].startswith("pairs: difference caption failed") for p in still)
    assert "base64" not in still[0]["error"]
