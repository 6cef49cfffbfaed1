"""Tags per sample: the pool's `tags` column, else tags split from a tag-style caption.

A caption is tag-style when it is a comma- (or ，/、/;/|-) separated list of short phrases:
at least two of them and none longer than `max_words` words, e.g. "dog, red, beach, sunset".
Sentences ("A photo of a red dog on a beach.") give no tags: guessing tags from prose is a
model's job (a tagger's output can be ingested as the tags column).
"""

from __future__ import annotations

import re

import pyarrow as pa

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
    tag_lists = tags.to_pylist() if isinstance(tags, (pa.Array, pa.ChunkedArray)) else tags
    caps = captions.to_pylist() if isinstance(captions, (pa.Array, pa.ChunkedArray)) else captions
    n = len(tag_lists) if tag_lists is not None else len(caps or [])
    out = []
    for i in range(n):
        own = [t.strip() for t in (tag_lists[i] or []) if isinstance(t, str) and t.strip()] if tag_lists is not None else []
        out.append(own or (tag_style_tags(caps[i], max_words) if caps is not None else []))
    return out
