"""The caption each sampled item trains with, drawn by the stage's caption policy.

Text per level: `caption_<level>` manifest columns (long, medium, short, tags, prompt: the VLM
captioner's levels; until a lake has them every item falls back to raw, and the report counts
it), `caption` for raw (the source's own text),
`caption_fields` for `field:<name>`. An item lacking the drawn level falls back to raw, then to
its tags joined by ", ", then to "" (counted as `no_text`). Image-to-image items use their edit
instruction with the policy's `instruction` probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.sampling.config import CaptionPolicy

__all__ = ["Chosen", "choose_captions", "level_column"]


def level_column(level: str) -> str:
    """Manifest column holding a level's text ('raw' -> caption, 'long' -> caption_long)."""
    return "caption" if level == "raw" else f"caption_{level}"


@dataclass
class Chosen:
    text: list[str]
    level: list[str]
    fallbacks: int   # items whose drawn level was missing
    no_text: int     # items with no text at all


def _level_texts(rows: pa.Table, level: str) -> list[str | None]:
    if level.startswith("field:"):
        key = level[len("field:"):]
        if "caption_fields" not in rows.column_names:
            return [None] * rows.num_rows
        return [next((kv["value"] for kv in (fields or []) if kv["key"] == key), None)
                for fields in rows["caption_fields"].to_pylist()]
    column = level_column(level)
    if column not in rows.column_names:
        return [None] * rows.num_rows
    return rows[column].cast(pa.string()).to_pylist()


def choose_captions(rows: pa.Table, policy: CaptionPolicy, u: np.ndarray, u_instruction: np.ndarray) -> Chosen:
    """rows: the sampled manifest rows (kind, caption*, tags, instruction); u, u_instruction:
    uniform draws per row (from the item hash, so the choice is fixed per stage/epoch/seed)."""
    names, probs = policy.choices()
    pick = np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), len(names) - 1)
    texts = {name: _level_texts(rows, name) for name in set(names) | {"raw"}}
    tags = rows["tags"].to_pylist() if "tags" in rows.column_names else [None] * rows.num_rows
    is_pair = (pc.equal(rows["kind"], "i2i").to_numpy(zero_copy_only=False)
               if "kind" in rows.column_names else np.zeros(rows.num_rows, bool))
    instructions = rows["instruction"].to_pylist() if "instruction" in rows.column_names else [None] * rows.num_rows
    out_text, out_level, fallbacks, no_text = [], [], 0, 0
    for i in range(rows.num_rows):
        if is_pair[i] and instructions[i] and u_instruction[i] < policy.instruction:
            out_text.append(instructions[i])
            out_level.append("instruction")
            continue
        level = names[pick[i]]
        text = texts[level][i]
        if not text:
            fallbacks += 1
            level, text = "raw", texts["raw"][i]
            if not text and tags[i]:
                level, text = "source_tags", ", ".join(t for t in tags[i] if t)
            if not text:
                level, text = "none", ""
                no_text += 1
        out_text.append(text)
        out_level.append(level)
    return Chosen(out_text, out_level, fallbacks, no_text)
