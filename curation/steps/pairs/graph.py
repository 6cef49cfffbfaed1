"""Expert edits as a graph: every ordered pair among a group's images, as table work.

A group is an original (position 0) and N edited versions (positions 1..N). Its N+1 images give
N(N+1) ordered pairs: N expert (0 -> i), N inverse (i -> 0), N(N-1) mixed (i -> j). The pairs
of all groups of one size come from one index template shifted by each group's offset, so a
build is a handful of numpy gathers and Arrow kernels however many groups there are
(`benchmarks/pairs_bench.py`: millions of pairs per second), and the instructions are Arrow
string joins of per-image strings computed once (`compose`).

Members table (one row per usable image, sorted by group then position), columns:
    group_id, id, pos (0 = original), task, instruction (known, or null), inverse (the
    instruction undoing this edit, or null), head (inverse joined for a mixed pair: "Undo. "),
    aspects (int bit mask of `compose.ASPECTS`; -1 unknown), language, provenance_json.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashes import pair_hash_indexed
from curation.steps.pairs import compose
from curation.steps.pairs.config import EXPERT_KINDS, PAIR_KINDS
from curation.storage import schemas

__all__ = ["MEMBER_SCHEMA", "aspect_mask", "build_pairs", "members_table", "pair_template"]

MEMBER_SCHEMA = pa.schema([
    ("group_id", pa.string()), ("id", pa.string()), ("pos", pa.int32()), ("task", pa.string()),
    ("instruction", pa.string()), ("inverse", pa.string()), ("head", pa.string()), ("aspects", pa.int64()),
    ("language", pa.string()), ("provenance_json", pa.string()),
])
_KIND_CODE = {k: PAIR_KINDS.index(k) for k in EXPERT_KINDS}


def aspect_mask(aspects: frozenset[str] | None) -> int:
    """Bit mask of `compose.ASPECTS` (-1 when the aspects are unknown); unknown names get no bit
    of their own but still make the edit overlap every other edit that names them."""
    if aspects is None:
        return -1
    mask = 0
    for a in aspects:
        mask |= 1 << (compose.ASPECTS.index(a) if a in compose.ASPECTS else len(compose.ASPECTS))
    return mask


def members_table(rows: list[dict]) -> pa.Table:
    """Members (see the module) from per-image dicts with group_id, id, pos, task, instruction,
    language, provenance_json and optionally inverse_instruction, aspects (list), params
    (dict); computes inverse, head and the aspect mask, and sorts by (group_id, pos)."""
    out = []
    for r in rows:
        lang = r.get("language") or "en"
        inverse = None
        if r["pos"] > 0:
            inverse = compose.inverse_instruction(r.get("task"), lang, r.get("params"), r.get("inverse_instruction"))
        out.append({
            "group_id": r["group_id"], "id": r["id"], "pos": r["pos"], "task": r.get("task"),
            "instruction": r.get("instruction") if r["pos"] > 0 else None, "inverse": inverse,
            "head": compose.join_steps(inverse, "", lang) if inverse else None,
            "aspects": aspect_mask(compose.aspects_of(r.get("task"), r.get("aspects"))) if r["pos"] > 0 else 0,
            "language": lang, "provenance_json": r.get("provenance_json"),
        })
    table = pa.Table.from_pylist(out, schema=MEMBER_SCHEMA)
    return table.sort_by([("group_id", "ascending"), ("pos", "ascending")])


@functools.lru_cache(maxsize=64)
def pair_template(size: int, kinds: tuple[str, ...], cap: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, kind code) of a group of `size` images: expert pairs first, then inverse, then
    mixed (row-major), only `kinds`, at most `cap`."""
    edits = np.arange(1, size)
    parts = []
    if "expert" in kinds:
        parts.append((np.zeros_like(edits), edits, _KIND_CODE["expert"]))
    if "inverse" in kinds:
        parts.append((edits, np.zeros_like(edits), _KIND_CODE["inverse"]))
    if "mixed" in kinds and size > 2:
        a, b = np.meshgrid(edits, edits, indexing="ij")
        off = a != b
        parts.append((a[off], b[off], _KIND_CODE["mixed"]))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    a = np.concatenate([p[0] for p in parts]).astype(np.int64)
    b = np.concatenate([p[1] for p in parts]).astype(np.int64)
    k = np.concatenate([np.full(len(p[0]), p[2], np.uint8) for p in parts])
    return a[:cap], b[:cap], k[:cap]


def _pair_indices(groups: np.ndarray, kinds: tuple[str, ...], cap: int | None) -> tuple[np.ndarray, ...]:
    """Global (a, b, kind code) over members whose group index array is `groups` (sorted)."""
    n = len(groups)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    a_parts, b_parts, k_parts = [], [], []
    for size in np.unique(sizes):
        ta, tb, tk = pair_template(int(size), kinds, cap)
        if len(ta) == 0:
            continue
        offs = starts[sizes == size][:, None]
        a_parts.append((offs + ta).ravel())
        b_parts.append((offs + tb).ravel())
        k_parts.append(np.tile(tk, len(offs)))
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(k_parts)


def build_pairs(members: pa.Table, kinds: list[str] | tuple[str, ...] = EXPERT_KINDS,
                cap: int | None = None) -> pa.Table:
    """`edit_pairs` rows (EDIT_PAIRS_SCHEMA) for every group of `members` (MEMBER_SCHEMA, sorted
    by group then position, position 0 the original). Instructions: known for expert pairs,
    composed (`compose`) for inverse and mixed pairs where a rule applies, else null with
    `instruction_source = pending`."""
    group_codes = pc.dictionary_encode(members["group_id"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    a, b, k = _pair_indices(group_codes, tuple(kinds), cap)
    A, B = pa.array(a), pa.array(b)
    expert, inverse = k == _KIND_CODE["expert"], k == _KIND_CODE["inverse"]
    mixed = k == _KIND_CODE["mixed"]

    instr_b = members["instruction"].take(B)
    masks = members["aspects"].to_numpy()
    disjoint = (masks[a] >= 0) & (masks[b] >= 0) & ((masks[a] & masks[b]) == 0)
    composed_mixed = pc.if_else(pa.array(disjoint),
                                pc.binary_join_element_wise(members["head"].take(A), instr_b, ""),
                                pa.nulls(len(a), pa.string()))
    instruction = pc.if_else(pa.array(expert), instr_b,
                             pc.if_else(pa.array(inverse), members["inverse"].take(A), composed_mixed))
    has = pc.is_valid(instruction).to_numpy(zero_copy_only=False)
    source_code = np.where(~has, 2, np.where(expert, 0, 1)).astype(np.int8)
    instruction_source = pa.DictionaryArray.from_arrays(
        pa.array(source_code), pa.array(["known", "composed", "pending"])).cast(pa.string())
    kind = pa.DictionaryArray.from_arrays(pa.array(k.astype(np.int8)), pa.array(PAIR_KINDS)).cast(pa.string())

    # tasks: [edit's task] for expert (b) and inverse (a) pairs, [a's, b's] for mixed pairs
    lengths = np.where(mixed, 2, 1)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    which = np.empty(int(offsets[-1]), dtype=np.int64)
    which[offsets[:-1]] = np.where(expert, b, a)
    which[offsets[:-1][mixed] + 1] = b[mixed]
    task_names = pc.fill_null(members["task"], "unknown").combine_chunks()
    tasks = pa.ListArray.from_arrays(pa.array(offsets), task_names.take(pa.array(which)))

    ids = members["id"].combine_chunks()
    n = len(a)
    return pa.table({
        "pair_id": pair_hash_indexed(ids, a, b, k.astype(np.uint64)),
        "group_id": members["group_id"].take(A), "source_id": ids.take(A), "target_id": ids.take(B),
        "kind": kind, "instruction": instruction, "instruction_source": instruction_source,
        "similarity": pa.nulls(n, pa.float32()), "tasks": tasks,
        "provenance_json": members["provenance_json"].take(A), "error": pa.nulls(n, pa.string()),
    }, schema=schemas.EDIT_PAIRS_SCHEMA)
