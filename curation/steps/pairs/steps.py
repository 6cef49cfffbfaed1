"""The edit-pair steps: `pairs-experts`, `pairs-video`, `pairs-render` (`curate pairs LAKE --from
experts DIR | video SRC | render [--n N]`). Each writes its images to `pool` and its pairs to
`edit_pairs`, and reports per kind: pairs made, rejected (by reason, by band, by OCR check) and
where the instructions came from.

Instructions that no rule gives (mixed expert pairs of overlapping edits, edits of unknown
task, every video pair) are `pending` until a VLM difference caption fills them: each step
runs the captioner over every pending pair of the lake when the `caption:` section names one
(`captioner_configured`), so a later run with a captioner fills what an earlier one left.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.captions.config import captioner_configured
from curation.steps.ingest.generated import NewImage, add_images
from curation.steps.pairs import compose
from curation.steps.pairs.config import ExpertsConfig, RenderConfig, VideoConfig
from curation.steps.pairs.graph import build_pairs, members_table
from curation.steps.pairs.table import add_pairs, pair_ids, set_instructions
from curation.steps.summary import StepSummary, error_kinds
from curation.storage import schemas
from curation.storage.lake import Lake

if TYPE_CHECKING:
    from curation.steps.captions.config import CaptionConfig
    from curation.steps.profiling.score import ScoreConfig

__all__ = ["fill_pending", "pairs_experts", "pairs_render", "pairs_video"]

EXPERTS_VERSION = "experts/1"
VIDEO_VERSION = "video/1"
_DIFF_ERROR = "pairs: difference caption failed"


def _pair_counts(pairs: pa.Table) -> dict[str, dict[str, int]]:
    """{kind: {instruction source: pairs}} of the pairs made (error rows apart)."""
    ok = pairs.filter(pc.is_null(pairs["error"]))
    out: dict[str, dict[str, int]] = {}
    for kind, src in zip(ok["kind"].to_pylist(), ok["instruction_source"].to_pylist()):
        out.setdefault(kind, Counter())[src] += 1
    return {k: dict(v) for k, v in out.items()}


# --------------------------------------------------------------------------- experts


def pairs_experts(lake: Lake, cfg: ExpertsConfig, caption: "CaptionConfig | None" = None) -> StepSummary:
    """Every ordered pair of every expert-edit group of `cfg.source` (see `experts`)."""
    from curation.steps.ingest.pool import add_rows, hash_candidates
    from curation.steps.ingest.patterns import as_list
    from curation.steps.pairs.experts import read_groups

    ecfg = cfg
    sources = as_list(ecfg.source)
    if not sources:
        raise ValueError("pairs.experts.source: no expert edits source given (a directory of group folders or a table)")
    t0 = time.perf_counter()
    readings = [(s, read_groups(s)) for s in sources]
    uris = [u for _, r in readings for g in r.groups for u in (g.original, *(e.uri for e in g.edits))]
    rows = hash_candidates(lake, _file_candidates(uris), ecfg.name)
    add_rows(lake, rows, ecfg.name, "experts")
    undecodable = _decode_errors(rows)
    by_uri = {u: (i, e or undecodable.get(u)) for u, i, e in
              zip(rows["uri"].to_pylist(), rows["id"].to_pylist(), rows["error"].to_pylist())}

    notes: dict = {"sources": sources, "groups_read": 0, "groups_rejected": Counter(), "edits_rejected": Counter(),
                   "instruction_issues": Counter(), "images_unreadable": 0, "rejected_examples": []}
    members = []
    for source, reading in readings:
        notes["groups_rejected"].update(reading.rejected_groups)
        notes["edits_rejected"].update(reading.rejected_edits)
        notes["instruction_issues"].update(reading.instruction_issues)
        notes["rejected_examples"] += reading.examples
        for g in reading.groups:
            notes["groups_read"] += 1
            members += _group_members(source, g, by_uri, ecfg.name, notes)
    pairs = build_pairs(members_table(members), ecfg.kinds, ecfg.max_pairs_per_group)
    add_pairs(lake, pairs, producer={"generator": EXPERTS_VERSION, "source": ",".join(sources)})
    notes.update(groups=len({m["group_id"] for m in members}), pairs=_pair_counts(pairs))
    notes["rejected_examples"] = notes["rejected_examples"][:10]
    for key in ("groups_rejected", "edits_rejected", "instruction_issues"):
        notes[key] = dict(notes[key])
    notes.update(_difference_captions(lake, caption, ecfg.difference_captions))
    return StepSummary("pairs-experts", rows_in=len(uris), rows_out=pairs.num_rows,
                       seconds=time.perf_counter() - t0, errors=error_kinds(rows["error"]), notes=notes)


def _file_candidates(uris: list[str]) -> pa.Table:
    from curation.steps.ingest.sources import CANDIDATE_SCHEMA

    n = len(uris)
    cols = {name: pa.nulls(n, pa.string()) for name in CANDIDATE_SCHEMA.names}
    cols.update(kind=pa.array(["file"] * n, pa.string()), uri=pa.array(uris, pa.string()))
    return pa.table(cols, schema=CANDIDATE_SCHEMA)


def _decode_batch(batch: pa.Table) -> pa.Table:
    from curation.steps.items import ItemError, read_item
    from operators.decode import DecodePlan

    plan = DecodePlan("rgb", min_long_side=64, max_reduction=8)  # the cheapest full decode (DCT-scaled)
    errors = []
    for row in batch.to_pylist():
        try:
            read_item(row, plan)
            errors.append(None)
        except ItemError as exc:
            errors.append(str(exc))
    return pa.table({"uri": batch["uri"], "decode_error": pa.array(errors, pa.string())})


def _decode_errors(rows: pa.Table) -> dict[str, str]:
    """uri -> why it does not decode, for the readable group images (an edit that does not
    decode makes no pair; hashing alone does not find it)."""
    import ray
    import ray.data

    ok = rows.filter(pc.is_null(rows["error"])).select(["uri", "byte_offset", "byte_size"])
    if ok.num_rows == 0:
        return {}
    blocks = [ok.slice(i, 64) for i in range(0, ok.num_rows, 64)]
    out = ray.data.from_arrow(blocks).map_batches(_decode_batch, batch_format="pyarrow", batch_size=None).to_arrow_refs()
    checked = pa.concat_tables(ray.get(out))
    return {u: e for u, e in zip(checked["uri"].to_pylist(), checked["decode_error"].to_pylist()) if e}


def _group_members(source: str, g, by_uri: dict, name: str, notes: dict) -> list[dict]:
    """The members of one read group whose images are readable (see `graph.MEMBER_SCHEMA`)."""
    orig_id, orig_error = by_uri[g.original]
    if orig_error:
        notes["groups_rejected"]["original unreadable"] += 1
        notes["rejected_examples"].append(f"{g.name}: original unreadable: {orig_error}")
        return []
    edits = []
    for e in g.edits:
        eid, error = by_uri[e.uri]
        if error:
            notes["images_unreadable"] += 1
            notes["rejected_examples"].append(f"{g.name}/{e.uri.rsplit('/', 1)[-1]}: {error}")
        elif eid == orig_id or eid in {x[0] for x in edits}:
            notes["edits_rejected"]["identical image"] += 1
        else:
            edits.append((eid, e))
    if not edits:
        notes["groups_rejected"]["no readable edited version"] += 1
        return []
    lang = compose.language_of(next((e.instruction for _, e in edits if e.instruction), None))
    group_id = f"{name}/{g.name}"
    prov = json.dumps({"generator": EXPERTS_VERSION, "source": source, "group": g.name}, ensure_ascii=False)
    out = [dict(group_id=group_id, id=orig_id, pos=0, language=lang, provenance_json=prov)]
    for pos, (eid, e) in enumerate(edits, start=1):
        out.append(dict(group_id=group_id, id=eid, pos=pos, task=e.task, instruction=e.instruction,
                        inverse_instruction=e.inverse_instruction, aspects=e.aspects, params=e.params,
                        language=lang, provenance_json=prov))
    return out


# --------------------------------------------------------------------------- difference captions


def fill_pending(lake: Lake, caption: "CaptionConfig") -> dict[str, int]:
    """Difference captions (VLM) for every pending pair of the lake (those whose last attempt
    failed included): filled ones become `instruction_source = vlm`; a failure stays pending
    with the reason in `error`. Returns counts."""
    from curation.steps.captions.caption import ocr_strings
    from curation.steps.captions.diff import difference_captions

    if not lake.exists(schemas.EDIT_PAIRS):
        return {}
    pairs = lake.read(schemas.EDIT_PAIRS)
    retry = pc.or_kleene(pc.is_null(pairs["error"]), pc.starts_with(pairs["error"], _DIFF_ERROR))
    todo = pairs.filter(pc.and_(pc.equal(pairs["instruction_source"], "pending"), retry))
    if todo.num_rows == 0:
        return {"vlm_pending": 0}
    pool = lake.read(schemas.POOL, columns=["id", "uri", "byte_offset", "byte_size"])
    ocr = ocr_strings(lake)
    request = {"pair_id": todo["pair_id"]}
    for side in ("source", "target"):
        at = pc.index_in(todo[f"{side}_id"], value_set=pool["id"])
        for col in ("uri", "byte_offset", "byte_size"):
            request[f"{side}_{col}"] = pool[col].take(at)
        request[f"{side}_ocr"] = pa.array([ocr.get(i, []) for i in todo[f"{side}_id"].to_pylist()], pa.list_(pa.string()))
    answers = {r["pair_id"]: r for r in difference_captions(pa.table(request), caption).to_pylist()}
    updates = []
    for row in todo.to_pylist():
        ans = answers.get(row["pair_id"]) or {"error": "no answer"}
        prov = json.loads(row["provenance_json"] or "{}")
        if ans.get("error"):
            updates.append({**row, "error": f"{_DIFF_ERROR}: {ans['error']}"})
            continue
        prov["difference_caption"] = {"model": ans["model"], "prompt_version": ans["prompt_version"],
                                      "differences": json.loads(ans["differences_json"] or "[]")}
        updates.append({**row, "instruction": ans["instruction"], "instruction_source": "vlm", "error": None,
                        "provenance_json": json.dumps(prov, ensure_ascii=False)})
    set_instructions(lake, pa.Table.from_pylist(updates, schema=schemas.EDIT_PAIRS_SCHEMA),
                     producer={"captioner": caption.model})
    filled = sum(1 for u in updates if u["instruction_source"] == "vlm")
    return {"vlm_filled": filled, "vlm_failed": len(updates) - filled}


def _difference_captions(lake: Lake, caption: "CaptionConfig | None", wanted: bool) -> dict:
    if not wanted:
        return {"difference_captions": "off"}
    if not captioner_configured(caption):
        return {"difference_captions": "no captioner configured (caption.http.url): pending pairs wait"}
    return fill_pending(lake, caption)


# --------------------------------------------------------------------------- video


def pairs_video(lake: Lake, cfg: VideoConfig, score: "ScoreConfig", caption: "CaptionConfig | None" = None
                ) -> StepSummary:
    """Frame pairs from `cfg.source`: shots, frames `interval_s` apart, cosine band."""
    from curation.steps.pairs.video_step import run_videos

    vcfg = cfg
    t0 = time.perf_counter()
    results, notes = run_videos(vcfg, score)
    images, rows, errors = [], [], []
    for res in results:
        if res["error"]:
            errors.append(res)
            continue
        for f in res["frames"]:
            images.append(NewImage(f["jpeg"], extra={"video": res["uri"], "t_s": f["t_s"], "shot": f["shot"],
                                                     "frame": f["index"]}))
    ids, added = add_images(lake, images, vcfg.name, "video")
    frame_ids = iter(ids)
    for res in results:
        if res["error"]:
            continue
        fid = [next(frame_ids) for _ in res["frames"]]
        for p in res["pairs"]:
            a, b = res["frames"][p["a"]], res["frames"][p["b"]]
            prov = {"generator": VIDEO_VERSION, "video": res["uri"], "t_source_s": a["t_s"], "t_target_s": b["t_s"],
                    "shot": p["shot_span"], "detector": vcfg.detector, "interval_s": vcfg.interval_s,
                    "band": vcfg.band}
            rows.append({"group_id": f"{vcfg.name}:{res['uri']}#shot{a['shot']}", "source_id": fid[p["a"]],
                         "target_id": fid[p["b"]], "kind": "video", "instruction": None,
                         "instruction_source": "pending", "similarity": p["similarity"], "tasks": ["video"],
                         "provenance_json": json.dumps(prov, ensure_ascii=False), "error": None})
    for res in errors:
        rows.append(_error_pair(f"{vcfg.name}:{res['uri']}", "video", res["error"],
                                {"generator": VIDEO_VERSION, "video": res["uri"]}))
    pairs = pa.Table.from_pylist(rows, schema=schemas.EDIT_PAIRS_SCHEMA)
    add_pairs(lake, pairs, producer={"generator": VIDEO_VERSION})
    notes.update(frames_added=added["added"], pairs=_pair_counts(pairs), videos_failed=len(errors))
    notes.update(_difference_captions(lake, caption, True))
    return StepSummary("pairs-video", rows_in=len(results), rows_out=pairs.num_rows, seconds=time.perf_counter() - t0,
                       errors=error_kinds(pa.array([r["error"] for r in errors], pa.string())), notes=notes)


def _error_pair(group_id: str, kind: str, error: str, provenance: dict) -> dict:
    """An `edit_pairs` row for an input that gave no pair (a video that does not decode): no
    images, the error, and a pair id from the group so a rerun writes it once."""
    from curation.steps.ingest.hashing import unreadable_id

    key = unreadable_id(group_id)
    pid = pair_ids(pa.array([key]), pa.array([key]), pa.array([kind]))[0].as_py()
    return {"pair_id": pid, "group_id": group_id, "source_id": None, "target_id": None, "kind": kind,
            "instruction": None, "instruction_source": "pending", "similarity": None, "tasks": [kind],
            "provenance_json": json.dumps(provenance, ensure_ascii=False), "error": error}


# --------------------------------------------------------------------------- render


def pairs_render(lake: Lake, cfg: RenderConfig) -> StepSummary:
    """Rendered text-editing pairs 0..n-1 of `cfg.seed` on pool backgrounds, each
    checked by OCR (see `render`)."""
    from curation.steps.pairs.render_step import run_renders

    rcfg = cfg
    t0 = time.perf_counter()
    done = _rendered_indices(lake, rcfg.seed)
    results, notes = run_renders(lake, rcfg, skip=done)
    made = [r for r in results if r["source_jpeg"] is not None]
    images = [NewImage(data, extra={"render": r["group"], "side": side})
              for r in made for data, side in ((r["source_jpeg"], "source"), (r["target_jpeg"], "target"))]
    ids, _ = add_images(lake, images, rcfg.name, "render")
    rows = [{"group_id": r["group"], "source_id": ids[2 * k], "target_id": ids[2 * k + 1], "kind": "render",
             "instruction": r["instruction"], "instruction_source": "known", "similarity": None, "tasks": [r["task"]],
             "provenance_json": json.dumps(r["params"], ensure_ascii=False), "error": r["ocr_error"]}
            for k, r in enumerate(made)]
    pairs = pa.Table.from_pylist(rows, schema=schemas.EDIT_PAIRS_SCHEMA)
    add_pairs(lake, pairs, producer={"generator": "render"})
    notes.update(pairs=_pair_counts(pairs), already_made=len(done))
    return StepSummary("pairs-render", rows_in=len(results), rows_out=pairs.num_rows, seconds=time.perf_counter() - t0,
                       errors=error_kinds(pairs["error"]), notes=notes)


def _rendered_indices(lake: Lake, seed: int) -> set[int]:
    """Indices of the render pairs of `seed` the lake already holds (so a rerun adds nothing)."""
    if not lake.exists(schemas.EDIT_PAIRS):
        return set()
    t = lake.read(schemas.EDIT_PAIRS, columns=["kind", "provenance_json"])
    t = t.filter(pc.equal(t["kind"], "render"))
    out = set()
    for text in t["provenance_json"].to_pylist():
        p = json.loads(text or "{}")
        if p.get("seed") == seed and isinstance(p.get("index"), int):
            out.add(p["index"])
    return out
