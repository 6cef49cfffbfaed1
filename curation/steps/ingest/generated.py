"""Images a step makes itself (video frames, rendered text scenes) enter the pool like any
ingested image: their bytes go into one lake tar shard (`<lake>/_shards/<source>/`), one pool
row each (id = sha256 of the bytes), committed by the same MERGE as `ingest` (so an image made
twice is one row, and a re-run adds nothing).

The shard's name is a hash of the ids it holds: a re-run that makes the same images finds the
complete shard and points at it again instead of writing a second copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.steps.ingest.hashing import INGESTED_SCHEMA, caption_columns
from curation.steps.ingest.pool import add_rows
from curation.storage.lake import Lake
from curation.storage.shards import ShardWriter, shard_dir, shard_index, shard_root, sniff_extension

__all__ = ["NewImage", "add_images"]


@dataclass
class NewImage:
    """One made image: encoded bytes (JPEG / PNG), an optional caption, and `extra` (recorded in
    `pool.extra_json`: where it came from, e.g. video uri and timestamp, render parameters)."""

    data: bytes
    caption: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def add_images(lake: Lake, images: list[NewImage], source: str, kind: str) -> tuple[list[str], dict[str, int]]:
    """Store `images` in one shard and add their pool rows (source name `source`, source kind
    `kind` in the commit's producer). Returns (the id of each image, in order; counts `added`,
    `existing`)."""
    if not images:
        return [], {"added": 0, "existing": 0}
    ids = [hashlib.sha256(im.data).hexdigest() for im in images]
    digest = hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()[:20]
    shard = f"{shard_dir(shard_root(lake), source)}/{kind}-{digest}.tar"
    members = shard_index(shard)
    if members is None or not all(f"{i}.{sniff_extension(im.data)}" in members for i, im in zip(ids, images)):
        with ShardWriter(shard) as writer:
            for i, im in zip(ids, images):
                writer.add(f"{i}.{sniff_extension(im.data)}", im.data)
        members = writer.members
    rows = []
    for i, im in zip(ids, images):
        m = members[f"{i}.{sniff_extension(im.data)}"]
        fields = {"caption": im.caption} if im.caption else {}
        row = caption_columns(fields, [], dict(im.extra), None, [])
        row.update(id=i, uri=m.uri, byte_offset=m.byte_offset, byte_size=m.byte_size, source=source,
                   bytes_len=m.byte_size, error=None)
        rows.append(row)
    _, (added, _updated, _superseded) = add_rows(lake, pa.Table.from_pylist(rows, schema=INGESTED_SCHEMA), source, kind)
    return ids, {"added": added, "existing": len(set(ids)) - added}

