"""Tags per sample: the pool's `tags` column, else tags split from a tag-style caption.

A caption is tag-style when it is a comma- (or ，/、/;/|-) separated list of short phrases:
at least two of them and none longer than `max_words` words, e.g. "dog, red, beach, sunset".
Sentences ("A photo of a red dog on a beach.") give no tags: guessing tags from prose is a
model's job (a tagger's output can be ingested as the tags column).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEPARATORS = re.compile(r"[,，、;；|]")


def tag_style_tags(caption: str | None, max_words: int = 4) -> list[str]:
    """The phrases of a tag-style caption, stripped; [] for prose, empty or non-string input."""
    if not isinstance(caption, str):
        return []
    parts = [p.strip().strip(".").strip() for p in _SEPARATORS.split(caption)]
    parts = [p for p in parts if p]
    if len(parts) < 2 or any(len(p.split()) > max_words for p in parts):
        return []
    return parts


def sample_tags(tags: pa.Array | list | None, captions: pa.Array | list | None, max_words: int = 4) -> list[list[str]]:
    """One tag list per sample: its non-empty string tags if it has any, else the tags of a
    tag-style caption, else []. Either input may be None (column absent)."""
    return tag_lists(tags, captions, max_words).to_pylist()


def tag_lists(tags: pa.Array | pa.ChunkedArray | list | None, captions: pa.Array | pa.ChunkedArray | list | None,
              max_words: int = 4) -> pa.ListArray:
    """`sample_tags` as a list<string> array, computed column-wise: tags are trimmed and empty
    or null ones dropped by Arrow kernels; only the samples left without tags go through the
    caption parser (a pool of 200k tagged samples: ~0.05 s instead of ~1 s per Python row)."""
    own = _clean_tags(tags)
    caps = None
    if captions is not None:
        caps = captions if isinstance(captions, (pa.Array, pa.ChunkedArray)) else pa.array(list(captions), pa.string())
        caps = caps.combine_chunks() if isinstance(caps, pa.ChunkedArray) else caps
    n = len(own) if own is not None else (len(caps) if caps is not None else 0)
    if own is None:
        own = pa.array([[] for _ in range(n)], pa.list_(pa.string()))
    if caps is None or not n:
        return own
    if len(caps) != n:
        raise ValueError(f"tag_lists: {n} tag lists but {len(caps)} captions")
    bare = pc.and_(pc.equal(pc.list_value_length(own), 0), pc.is_valid(caps)).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(bare)
    if not len(rows):
        return own
    parsed = [tag_style_tags(c, max_words) for c in caps.take(pa.array(rows)).to_pylist()]
    return replace_rows(own, rows, parsed)


def replace_rows(lists: pa.ListArray, rows: np.ndarray, values: list[list[str]]) -> pa.ListArray:
    """`lists` (list<string>) with row rows[i] replaced by values[i], without a Python pass
    over the other rows."""
    if not len(rows):
        return lists
    pick = np.arange(len(lists), dtype=np.int64)
    pick[rows] = len(lists) + np.arange(len(rows))
    return pa.concat_arrays([lists, pa.array(values, lists.type)]).take(pa.array(pick))


def _clean_tags(tags) -> pa.ListArray | None:
    """Each row's string tags, whitespace-trimmed, empty and null ones dropped (null rows: [])."""
    if tags is None:
        return None
    if not isinstance(tags, (pa.Array, pa.ChunkedArray)):
        tags = [[t for t in row if isinstance(t, str)] if isinstance(row, (list, tuple)) else [] for row in tags]
        tags = pa.array(tags, pa.list_(pa.string()))
    if isinstance(tags, pa.ChunkedArray):
        tags = tags.combine_chunks() if tags.num_chunks else pa.array([], pa.list_(pa.string()))
    if pa.types.is_large_list(tags.type):
        tags = tags.cast(pa.list_(tags.type.value_type))
    n = len(tags)
    flat = pc.list_flatten(tags)
    if not pa.types.is_string(flat.type):
        flat = flat.cast(pa.string())
    parent = pc.list_parent_indices(tags)
    trimmed = pc.utf8_trim_whitespace(flat)
    ok = pc.fill_null(pc.greater(pc.utf8_length(trimmed), 0), False)
    values, parent = trimmed.filter(ok), parent.filter(ok).to_numpy(zero_copy_only=False)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(parent, minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)
