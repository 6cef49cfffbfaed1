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


def _level_texts(rows: pa.Table, level: str) -> pa.Array:
    n = rows.num_rows
    if level.startswith("field:"):
        key = level[len("field:"):]
        if "caption_fields" not in rows.column_names:
            return pa.nulls(n, pa.string())
        return pa.array([next((kv["value"] for kv in (fields or []) if kv["key"] == key), None)
                         for fields in rows["caption_fields"].to_pylist()], pa.string())
    column = level_column(level)
    if column not in rows.column_names:
        return pa.nulls(n, pa.string())
    return rows[column].combine_chunks().cast(pa.string())


def _present(text: pa.Array) -> np.ndarray:
    return pc.and_(pc.is_valid(text), pc.not_equal(text, "")).fill_null(False).to_numpy(zero_copy_only=False)


def choose_captions(rows: pa.Table, policy: CaptionPolicy, u: np.ndarray, u_instruction: np.ndarray) -> Chosen:
    """rows: the sampled manifest rows (kind, caption*, tags, instruction); u, u_instruction:
    uniform draws per row (from the item hash, so the choice is fixed per stage/epoch/seed)."""
    n = rows.num_rows
    names, probs = policy.choices()
    pick = np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), len(names) - 1)
    chosen = pc.choose(pa.array(pick.astype(np.int8)), *[_level_texts(rows, name) for name in names]) if n else \
        pa.array([], pa.string())
    level = np.asarray(names, dtype=object)[pick] if n else np.zeros(0, dtype=object)
    text = np.asarray(chosen.to_pylist(), dtype=object) if n else np.zeros(0, dtype=object)
    missing = ~_present(chosen) if n else np.zeros(0, bool)
    fell_back = missing.copy()
    # fallbacks: raw, then the source's tags joined, then nothing
    for name, values in (("raw", _level_texts(rows, "raw")),
                         ("source_tags", pc.binary_join(rows["tags"].combine_chunks(), ", ")
                          if "tags" in rows.column_names else pa.nulls(n, pa.string()))):
        use = missing & _present(values)
        if use.any():
            text[use] = np.asarray(values.filter(pa.array(use)).to_pylist(), dtype=object)
            level[use] = name
            missing &= ~use
    text[missing] = ""
    level[missing] = "none"
    if "kind" in rows.column_names and "instruction" in rows.column_names:
        instruction = rows["instruction"].combine_chunks().cast(pa.string())
        use = (pc.equal(rows["kind"], "i2i").fill_null(False).to_numpy(zero_copy_only=False)
               & _present(instruction) & (u_instruction < policy.instruction))
        if use.any():  # the instruction replaces the caption (its fallback no longer counts)
            text[use] = np.asarray(instruction.filter(pa.array(use)).to_pylist(), dtype=object)
            level[use] = "instruction"
            fell_back &= ~use
    return Chosen(text.tolist(), level.tolist(), int(fell_back.sum()), int((level == "none").sum()))
