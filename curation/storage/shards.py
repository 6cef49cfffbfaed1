"""Item bytes stored in the lake as WebDataset-style tar shards, read back by byte range.

Downloaded images (URL-table ingest) have no file of their own to point at, so their bytes are
written once, by the worker that fetched them, into `<lake>/_shards/<source>/<shard-uuid>.tar`
(one shard per batch; each member `<id>.<ext>`, id = sha256 of the bytes). A pool row points at
its member as every WebDataset row does: `uri` = `<shard uri>#<member>` with `byte_offset` /
`byte_size`, so `curation.storage.io.read_bytes(uri, offset, size)` is one ranged read and every
step reads these rows with no change (and without the range, `read_bytes` finds the member by
scanning the shard).

A shard is invisible until a pool commit references it: a killed run leaves orphan shards no
row points at, which are harmless (they are never read) and are not deleted by `vacuum`
(which only looks after tables); `_shards` starts with '_' so it is never taken for a table.
"""

from __future__ import annotations

import io as pyio
import posixpath
import re
import tarfile
import uuid
from dataclasses import dataclass

from curation.storage import delta, io

__all__ = ["SHARDS_DIR", "ShardMember", "shard_dir", "shard_root", "sniff_extension", "write_shard"]

SHARDS_DIR = "_shards"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ShardMember:
    """Where one item landed: `uri` (`<shard>#<name>`), `byte_offset`, `byte_size` (bytes)."""

    uri: str
    byte_offset: int
    byte_size: int


def shard_root(lake) -> str:
    """The uri of `<lake>/_shards` for a `Lake`, in the form `io.read_bytes` takes: a local
    absolute path, or `<scheme>://<bucket>/<path>`."""
    path = posixpath.join(lake.root, SHARDS_DIR)
    scheme = delta.as_uri(lake.uri).split("://", 1)[0]
    return path if scheme == "file" else f"{scheme}://{path.lstrip('/')}"


def shard_dir(root: str, source: str) -> str:
    """`<root>/<source>`, the source name made path-safe (`root` from `shard_root`)."""
    name = _SAFE.sub("_", source).strip("._") or "source"
    return f"{root.rstrip('/')}/{name}"


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
_CTYPES = {"image/jpeg": "jpg", "image/jpg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
           "image/bmp": "bmp", "image/tiff": "tiff", "image/avif": "avif"}


def sniff_extension(data: bytes, content_type: str | None = None) -> str:
    """The member extension: from the bytes' magic number, else the Content-Type, else "bin"."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    return _CTYPES.get(ctype, "bin")


def write_shard(directory: str, items: list[tuple[str, bytes]]) -> dict[str, ShardMember]:
    """Write `items` ([(member name, bytes)]) as one new tar shard `<directory>/<uuid4>.tar`;
    returns {member name: ShardMember}. A name given twice is stored once (the first bytes).
    The tar (POSIX pax) is streamed to the filesystem as it is built (no second copy in
    memory); a writer killed midway leaves an orphan no pool row references."""
    if not items:
        return {}
    shard = f"{directory.rstrip('/')}/{uuid.uuid4().hex}.tar"
    fs, path = io.resolve(shard)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    offsets: dict[str, tuple[int, int]] = {}
    with fs.open_output_stream(path) as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in items:
            if name in offsets:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            header = len(info.tobuf(tar.format, tar.encoding, tar.errors))
            start = tar.offset
            tar.addfile(info, pyio.BytesIO(data))
            offsets[name] = (start + header, len(data))
    return {name: ShardMember(io.member_uri(shard, name), off, size) for name, (off, size) in offsets.items()}
