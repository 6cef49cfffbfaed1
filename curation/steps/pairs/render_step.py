"""Rendered text-editing pairs on Ray Data: backgrounds from the pool, `render.render_pair` and
the OCR read-back (`render.verify`) in CPU tasks, a few pairs per task.

Pair `index` of a seed always takes the same choices: its background is pool candidate
number rng([seed, index]) among the candidates sorted by id (images that are readable, not
rendered themselves, and, when profiled, at least `min_background_side` on the shorter side),
its language is `languages[index % L]` and its edit `edits[(index // L) % E]`. The check reads
the stored JPEGs back, not the pixels before compression.
"""

from __future__ import annotations

import io as pyio
import json
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.pairs.config import RenderConfig
from curation.storage import schemas
from curation.storage.lake import Lake

__all__ = ["backgrounds", "run_renders"]

PAIRS_PER_TASK = 4
JPEG_QUALITY = 95  # text edges survive; the OCR check reads these bytes

RESULT_SCHEMA = pa.schema([
    ("index", pa.int64()), ("group", pa.string()), ("language", pa.string()), ("edit", pa.string()),
    ("source_jpeg", pa.binary()), ("target_jpeg", pa.binary()), ("instruction", pa.string()), ("task", pa.string()),
    ("params_json", pa.string()), ("ocr_error", pa.string()), ("rejection", pa.string()),
])


def backgrounds(lake: Lake, cfg: RenderConfig) -> pa.Table:
    """Pool rows a pair may draw on (id, uri, byte_offset, byte_size), sorted by id."""
    pool = lake.read(schemas.POOL, columns=["id", "uri", "byte_offset", "byte_size", "error", "sources"])
    sources = pool["sources"].combine_chunks()
    mine = pc.equal(pc.list_flatten(sources), cfg.name).to_numpy(zero_copy_only=False)
    rendered = np.zeros(pool.num_rows, dtype=bool)
    rendered[pc.list_parent_indices(sources).to_numpy()[mine]] = True  # never draw on a rendered image
    pool = pool.filter(pc.and_(pc.is_null(pool["error"]), pa.array(~rendered)))
    if lake.exists(schemas.PROFILES) and {"width", "height"} <= set(lake.dataset(schemas.PROFILES).schema.names):
        prof = lake.read(schemas.PROFILES, columns=["id", "width", "height", "error"])
        small = prof.filter(pc.or_kleene(pc.is_valid(prof["error"]),
                                         pc.less(pc.min_element_wise(prof["width"], prof["height"]),
                                                 cfg.min_background_side)))
        pool = pool.filter(pc.invert(pc.is_in(pool["id"], value_set=small["id"])))
    return pool.select(["id", "uri", "byte_offset", "byte_size"]).sort_by("id")


def _render_batch(batch: pa.Table, cfg: RenderConfig) -> pa.Table:
    from PIL import Image

    from curation.steps.items import ItemError, read_item
    from curation.steps.pairs.render import Rejection, render_pair, verify
    from operators.decode import DecodePlan

    plan = DecodePlan("rgb", min_long_side=cfg.side, max_reduction=8)
    out = []
    for row in batch.to_pylist():
        res = {"index": row["index"], "group": row["group"], "language": row["language"], "edit": row["edit"]}
        try:
            bg = read_item(row, plan).image
        except ItemError as exc:
            out.append({**res, "rejection": f"background unreadable: {exc}"})
            continue
        pair = render_pair(bg, row["index"], cfg, row["language"], row["edit"])
        if isinstance(pair, Rejection):
            out.append({**res, "rejection": pair.reason, "params_json": json.dumps(pair.params, ensure_ascii=False)})
            continue
        src, tgt = _jpeg(pair.source), _jpeg(pair.target)
        params = {**pair.params, "background": row["id"], "source_text": pair.source_text,
                  "target_text": pair.target_text}
        if cfg.ocr_check:
            pair.source, pair.target = Image.open(pyio.BytesIO(src)), Image.open(pyio.BytesIO(tgt))
            error = verify(pair, max_cer=cfg.max_cer)
        else:
            error = None
        out.append({**res, "source_jpeg": src, "target_jpeg": tgt, "instruction": pair.instruction, "task": pair.task,
                    "params_json": json.dumps(params, ensure_ascii=False), "ocr_error": error})
    return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def _jpeg(image) -> bytes:
    buf = pyio.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def run_renders(lake: Lake, cfg: RenderConfig, skip: set[int]) -> tuple[list[dict], dict]:
    """(one result per pair index 0..n-1 not in `skip`: group, language, source_jpeg /
    target_jpeg (absent when rejected), instruction, task, params, ocr_error, rejection; notes)."""
    import ray
    import ray.data

    if not lake.exists(schemas.POOL):
        raise ValueError("pairs-render draws on pool images: ingest some first (`curate ingest`)")
    cands = backgrounds(lake, cfg)
    if cands.num_rows == 0:
        raise ValueError(f"pairs-render: no pool image can be a background (readable, not rendered, shorter side "
                         f">= pairs.render.min_background_side = {cfg.min_background_side} px)")
    todo = [i for i in range(cfg.n) if i not in skip]
    t0 = time.perf_counter()
    rows = []
    for i in todo:
        pick = int(np.random.default_rng([cfg.seed, i, 7]).integers(cands.num_rows))
        bg = cands.slice(pick, 1).to_pylist()[0]
        rows.append({**bg, "index": i, "group": f"{cfg.name}/s{cfg.seed}/{i}",
                     "language": cfg.languages[i % len(cfg.languages)],
                     "edit": cfg.edits[(i // len(cfg.languages)) % len(cfg.edits)]})
    results = []
    if rows:
        table = pa.Table.from_pylist(rows)
        blocks = [table.slice(i, PAIRS_PER_TASK) for i in range(0, table.num_rows, PAIRS_PER_TASK)]
        refs = ray.data.from_arrow(blocks).map_batches(_render_batch, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                                                       batch_size=None).to_arrow_refs()
        out = pa.concat_tables(ray.get(refs)).sort_by("index")
        results = [{**r, "params": json.loads(r["params_json"] or "{}")} for r in out.to_pylist()]
    wall = time.perf_counter() - t0
    made = [r for r in results if r["source_jpeg"] is not None]
    rejected = Counter(r["rejection"].split(":", 1)[0] for r in results if r["rejection"])
    by_lang = Counter(r["language"] for r in made)
    failed = Counter(r["language"] for r in made if r["ocr_error"])
    notes = {
        "requested": len(todo), "rendered": len(made), "rejected": dict(rejected),
        "rejected_examples": [f"{r['group']}: {r['rejection']}" for r in results if r["rejection"]][:5],
        "ocr_check": "on" if cfg.ocr_check else "off",
        "ocr_passed": {k: f"{by_lang[k] - failed[k]}/{by_lang[k]}" for k in sorted(by_lang)},
        "ocr_failed_examples": [f"{r['group']}: {r['ocr_error']}" for r in made if r["ocr_error"]][:5],
        "throughput": f"{len(made) / wall:.2f} pairs/s" if wall > 0 else "",
        "backgrounds": cands.num_rows,
    }
    return results, notes
