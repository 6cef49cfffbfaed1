"""Image-to-image rows of a stage's manifest: edit pairs whose two images both pass the stage.

A pair (`edit_pairs`: source id -> target id, instruction) becomes one manifest row keyed by
its pair id: the target image's row (uri, caption, features, the bucket is the target's) with
the source image's uri and byte range and the instruction. Both images must pass the stage's
rules and removals; the dedup and near-duplicate decisions do not apply to pairs, whose two
images are near-duplicates of each other by construction. A pair naming an image the pool
lacks, one recorded with an error, or one whose instruction is still pending (no rule gave
one and no difference caption has yet) is left out and counted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["PAIR_EXEMPT_REASONS", "pair_rows"]

# Reasons a pair's image may carry and still be used (decisions about copies, not quality).
PAIR_EXEMPT_REASONS = ("duplicate", "phash_near_duplicate")


def pair_rows(evaluated: pa.Table, pairs: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """(manifest-shaped rows for the usable pairs, counts of pairs left out by reason).

    evaluated: every pool row with `keep` and `reason` (export.evaluate); pairs: `edit_pairs`.
    """
    ok = pc.or_(evaluated["keep"], pc.is_in(evaluated["reason"], value_set=pa.array(PAIR_EXEMPT_REASONS))
                ).fill_null(False)
    usable_ids = evaluated["id"].filter(ok)
    skipped = {}
    if "error" in pairs.column_names:
        bad = pc.is_valid(pairs["error"]).to_numpy(zero_copy_only=False)
        skipped["pair_error"] = int(bad.sum())
        pairs = pairs.filter(pa.array(~bad))
    pending = pc.is_null(pairs["instruction"]).to_numpy(zero_copy_only=False)
    skipped["instruction_pending"] = int(pending.sum())  # waiting for a difference caption
    pairs = pairs.filter(pa.array(~pending))
    in_pool = pc.and_(pc.is_in(pairs["source_id"], value_set=evaluated["id"]),
                      pc.is_in(pairs["target_id"], value_set=evaluated["id"])).to_numpy(zero_copy_only=False)
    usable = pc.and_(pc.is_in(pairs["source_id"], value_set=usable_ids),
                     pc.is_in(pairs["target_id"], value_set=usable_ids)).to_numpy(zero_copy_only=False)
    skipped["image_not_in_pool"] = int((~in_pool).sum())
    skipped["image_fails_stage_rules"] = int((in_pool & ~usable).sum())
    pairs = pairs.filter(pa.array(usable))
    target = evaluated.take(pc.index_in(pairs["target_id"], value_set=evaluated["id"]))
    source = evaluated.take(pc.index_in(pairs["source_id"], value_set=evaluated["id"]))
    rows = target.set_column(target.schema.get_field_index("id"), "id", pairs["pair_id"])
    extra = {
        "kind": pa.array(np.full(pairs.num_rows, "i2i", dtype=object), pa.string()),
        "source_id": pairs["source_id"], "source_uri": source["uri"],
        "source_byte_offset": source["byte_offset"], "source_byte_size": source["byte_size"],
        "instruction": pairs["instruction"], "pair_kind": pairs["kind"],
        "source_height": source["height"], "source_width": source["width"],
    }
    for name, col in extra.items():
        if name in rows.column_names:
            rows = rows.drop_columns([name])
        rows = rows.append_column(name, col)
    return rows, {k: v for k, v in skipped.items() if v}
