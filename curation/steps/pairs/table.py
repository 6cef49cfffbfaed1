"""The `edit_pairs` table: image-to-image training pairs (source image -> target image).

`add_pairs` adds pairs made anywhere (a builder of this package, or a table of pairs a team
already has): both images must be pool items (ingested, profiled and scored like every image,
so rules and dedup apply to them); a pair naming an image the pool lacks is kept as a row with
an `error`, never dropped. Pairs are keyed by `pair_id`: adding a pair again changes nothing.
`set_instructions` fills the instruction of pairs added as `pending` (a difference caption
that came later), as one keyed MERGE.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashes import pair_hash
from curation.steps.pairs.config import PAIR_KINDS
from curation.storage import schemas
from curation.storage.lake import Commit, Lake

__all__ = ["add_pairs", "kind_codes", "pair_ids", "set_instructions"]

PRODUCER = {"step": "pairs", "version": "1"}


def kind_codes(kinds: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The index of each kind in `PAIR_KINDS` (the tag of the pair hash); ValueError naming an
    unknown kind."""
    codes = pc.index_in(kinds, value_set=pa.array(PAIR_KINDS)).to_numpy(zero_copy_only=False)
    if np.isnan(codes.astype(float)).any():
        bad = sorted(set(pc.filter(kinds, pc.is_null(pc.index_in(kinds, value_set=pa.array(PAIR_KINDS))))
                         .to_pylist()), key=str)
        raise ValueError(f"edit pairs: unknown kind(s) {bad}; kinds are {list(PAIR_KINDS)}")
    return codes.astype(np.uint64)


def pair_ids(source: pa.Array | pa.ChunkedArray, target: pa.Array | pa.ChunkedArray,
             kinds: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The pair id of each (source id, target id, kind): a 128-bit hash, 32 lowercase hex
    characters (`curation.hashes.pair_hash`); the same pair made twice has one id."""
    return pair_hash(source, target, kind_codes(kinds))


def add_pairs(lake: Lake, pairs: pa.Table, producer: dict | None = None, stats: dict | None = None) -> Commit | None:
    """Append pairs (columns of `EDIT_PAIRS_SCHEMA`; `pair_id` is derived where absent or null) to
    `edit_pairs`. Pairs whose source or target id is not in the pool get an error message.
    Returns the commit, or None when there was nothing to add."""
    spec = schemas.table_spec(schemas.EDIT_PAIRS)
    for col in ("source_id", "target_id", "kind"):
        if col not in pairs.column_names:
            raise ValueError(f"edit pairs need a {col!r} column (have {pairs.column_names})")
    if pairs.num_rows == 0:
        return None
    if "pair_id" not in pairs.column_names or pairs["pair_id"].null_count:
        derived = pair_ids(pairs["source_id"], pairs["target_id"], pairs["kind"])
        if "pair_id" in pairs.column_names:
            derived = pc.coalesce(pairs["pair_id"], derived)
            pairs = pairs.drop_columns(["pair_id"])
        pairs = pairs.append_column("pair_id", derived)
    pool_ids = lake.read(schemas.POOL, columns=["id"])["id"] if lake.exists(schemas.POOL) else pa.array([], pa.string())
    errors = pairs["error"] if "error" in pairs.column_names else pa.nulls(pairs.num_rows, pa.string())
    for col in ("source_id", "target_id"):
        missing = pc.invert(pc.is_in(pairs[col], value_set=pool_ids)).fill_null(True)
        if pc.any(missing).as_py():
            note = pa.scalar(f"pairs: {col} is not in the pool")
            joined = pc.binary_join_element_wise(errors, note, "; ", null_handling="skip")
            errors = pc.if_else(missing, joined, errors)
    if "error" in pairs.column_names:
        pairs = pairs.drop_columns(["error"])
    pairs = pairs.append_column("error", errors)
    return lake.write(schemas.EDIT_PAIRS, spec.conform(pairs), key="pair_id", producer={**PRODUCER, **(producer or {})},
                      stats=stats)


def set_instructions(lake: Lake, updates: pa.Table, producer: dict | None = None) -> Commit | None:
    """Update `instruction`, `instruction_source`, `provenance_json` and `error` of existing
    pairs (updates: pair_id plus those columns), one MERGE keyed on pair_id."""
    cols = ["pair_id", "instruction", "instruction_source", "provenance_json", "error"]
    if updates.num_rows == 0:
        return None
    spec = schemas.table_spec(schemas.EDIT_PAIRS)
    wanted = updates.column("pair_id").combine_chunks()

    def make(snapshot):
        if snapshot is None:
            return None
        known = snapshot.to_table(columns=[c for c in spec.schema.names if c not in cols[1:]],
                                  filter=pc.field("pair_id").isin(wanted))
        if known.num_rows == 0:
            return None
        known = known.sort_by("pair_id")
        upd = updates.select(cols).filter(pc.is_in(updates["pair_id"], value_set=known["pair_id"])).sort_by("pair_id")
        for c in cols[1:]:
            known = known.append_column(c, upd[c])
        return spec.conform(known)

    return lake.transact(schemas.EDIT_PAIRS, make, key="pair_id", update_columns=cols[1:],
                         producer={**PRODUCER, "update": "instructions", **(producer or {})})
