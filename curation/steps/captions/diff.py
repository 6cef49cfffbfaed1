"""Difference captions for edit pairs: what changed from the source image to the target, as one
instruction, from the same VLM backends as the captioner.

The report's three steps go into one request per pair (`prompt.diff_messages`): caption both
images with their OCR strings, list the differences by type, write one concise instruction.
The answer is validated against `prompt.DIFF_SCHEMA`; a malformed answer, an HTTP error, a
timeout or an unreadable image is that pair's `error` (the edit-pair builder keeps the pair
with `instruction_source = pending` then). Called by the edit-pair builder:

    difference_captions(pairs, cfg) -> pa.Table(pair_id, instruction, differences_json,
                                                 source_caption, target_caption, model,
                                                 prompt_version, error)

`pairs`: pair_id plus, for source and target, uri / byte_offset / byte_size and optional
OCR strings (`source_ocr`, `target_ocr`, list<string>).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.captions.caption import encode_image, message_table, processor
from curation.steps.captions.config import CaptionConfig
from curation.steps.captions.prompt import DIFF_PROMPT_VERSION, DIFF_SCHEMA, diff_messages, parse_diff_answer

__all__ = ["DIFF_RESULT_SCHEMA", "difference_captions"]

DIFF_RESULT_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("instruction", pa.string()), ("differences_json", pa.string()),
    ("source_caption", pa.string()), ("target_caption", pa.string()), ("model", pa.string()),
    ("prompt_version", pa.string()), ("error", pa.string()),
])


def _prepare(batch: pa.Table, cfg: CaptionConfig) -> pa.Table:
    from curation.storage.io import read_bytes

    def build(row: dict) -> list[dict]:
        urls = [encode_image(read_bytes(row[f"{side}_uri"], row.get(f"{side}_byte_offset"),
                                        row.get(f"{side}_byte_size")), cfg.image_side, cfg.jpeg_quality)
                for side in ("source", "target")]
        return diff_messages(urls[0], urls[1], cfg.language, row.get("source_ocr") or [], row.get("target_ocr") or [])

    return message_table(batch, "pair_id", build, "diff")


def difference_captions(pairs: pa.Table, cfg: CaptionConfig) -> pa.Table:
    """One row per pair (same order not guaranteed; key pair_id), on Ray Data."""
    import ray
    import ray.data

    for side in ("source", "target"):
        if f"{side}_uri" not in pairs.column_names:
            raise ValueError(f"difference_captions: pairs need a {side}_uri column (have {pairs.column_names})")
    model = cfg.model

    def post(row: dict, text: str | None, error: str | None, usage: dict) -> dict:
        out = {"pair_id": row["pair_id"], "instruction": None, "differences_json": None, "source_caption": None,
               "target_caption": None, "model": model, "prompt_version": DIFF_PROMPT_VERSION, "error": error}
        if error is None:
            try:
                answer = parse_diff_answer(text)
            except ValueError as exc:
                out["error"] = f"diff: invalid answer: {exc}"
            else:
                out.update(instruction=answer["instruction"], source_caption=answer["source_caption"],
                           target_caption=answer["target_caption"],
                           differences_json=json.dumps(answer["differences"], ensure_ascii=False))
        return out

    if pairs.num_rows == 0:
        return DIFF_RESULT_SCHEMA.empty_table()
    blocks = [pairs.slice(i, 64) for i in range(0, pairs.num_rows, 64)]
    prepared = pa.concat_tables(ray.get(ray.data.from_arrow(blocks).map_batches(
        _prepare, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=None).to_arrow_refs()))
    bad = pc.is_valid(prepared["prep_error"])
    rows = [post(r, None, r["prep_error"], {}) for r in prepared.filter(bad).to_pylist()]
    ready = prepared.filter(pc.invert(bad)).select(["pair_id", "messages"])
    if ready.num_rows:
        rows += processor(cfg, post, DIFF_SCHEMA, "diff")(ray.data.from_arrow(ready)).take_all()
    return pa.Table.from_pylist(rows, schema=DIFF_RESULT_SCHEMA)
