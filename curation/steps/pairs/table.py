"""The `edit_pairs` table: image-to-image training pairs (source image -> target image).

`add_pairs` adds pairs made anywhere (a builder of this package, or a table of pairs a team
already has): both images must be pool items (ingested, profiled and scored like every image,
so rules and dedup apply to them); a pair naming an image the pool lacks is kept as a row with
an `error`, never dropped. Pairs are keyed by `pair_id`: adding a pair again changes nothing.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from curation.storage import schemas
from curation.storage.lake import Commit, Lake

__all__ = ["add_pairs", "pair_id"]


def pair_id(source_id: str, target_id: str, kind: str) -> str:
    """sha256 of 'source_id>target_id:kind', lowercase hex (the same pair made twice, once)."""
    return hashlib.sha256(f"{source_id}>{target_id}:{kind}".encode()).hexdigest()


def add_pairs(lake: Lake, pairs: pa.Table) -> Commit:
    """Append pairs (columns of `EDIT_PAIRS_SCHEMA`; `pair_id` is derived when absent) to
    `edit_pairs`. Pairs whose source or target id is not in the pool get an error message."""
    spec = schemas.table_spec(schemas.EDIT_PAIRS)
    for col in ("source_id", "target_id", "kind"):
        if col not in pairs.column_names:
            raise ValueError(f"edit pairs need a {col!r} column (have {pairs.column_names})")
    if "pair_id" not in pairs.column_names:
        ids = [pair_id(s, t, k) for s, t, k in zip(pairs["source_id"].to_pylist(), pairs["target_id"].to_pylist(),
                                                    pairs["kind"].to_pylist())]
        pairs = pairs.append_column("pair_id", pa.array(ids, pa.string()))
    pool_ids = lake.read(schemas.POOL, columns=["id"])["id"] if lake.exists(schemas.POOL) else pa.array([], pa.string())
    errors = pairs["error"].to_pylist() if "error" in pairs.column_names else [None] * pairs.num_rows
    for col in ("source_id", "target_id"):
        missing = pc.invert(pc.is_in(pairs[col], value_set=pool_ids)).fill_null(True).to_pylist()
        errors = ["; ".join(filter(None, (e, f"pairs: {col} is not in the pool"))) if m else e
                  for e, m in zip(errors, missing)]
    if "error" in pairs.column_names:
        pairs = pairs.drop_columns(["error"])
    pairs = pairs.append_column("error", pa.array(errors, pa.string()))
    return lake.write(schemas.EDIT_PAIRS, spec.conform(pairs), key="pair_id", producer={"step": "pairs"})
