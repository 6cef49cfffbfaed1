"""Item bytes stored in the lake as WebDataset-style tar shards, read back by byte range.

Downloaded images (URL-table ingest) and images embedded in tables (Parquet / Arrow, e.g.
Hugging Face datasets) have no file of their own to point at, so their bytes are written once,
by the worker that read them, into `<lake>/_shards/<source>/<name>.tar` (one shard per download
batch, named by a uuid, or per table piece, named by a hash of the piece so a re-run finds it;
each member `<id>.<ext>`, id = sha256 of the bytes). A pool row points at
its member as every WebDataset row does: `uri` = `<shard uri>#<member>` with `byte_offset` /
`byte_size`, so `curation.storage.io.read_bytes(uri, offset, size)` is one ranged read and every
step reads these rows with no change (and without the range, `read_bytes` finds the member by
scanning the shard).

A shard appears at its final name only when complete (`ShardWriter`), and is invisible until a
pool commit references it: a killed run leaves orphan shards (or `.tmp-*` files) no row points
at, which are harmless (they are never read) and are not deleted by `vacuum` (which only looks
after tables); `_shards` starts with '_' so it is never taken for a table.
"""

from __future__ import annotations

import io as pyio
import os
import posixpath
import re
import tarfile
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from curation.storage import delta, io

__all__ = ["SHARDS_DIR", "ShardMember", "ShardWriter", "shard_dir", "shard_index", "shard_root", "sniff_extension"]

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


class ShardWriter:
    """Stream members into one tar shard (POSIX pax) as they come: `add(name, data)` returns
    where the member landed (a name given twice is stored once, the first bytes), `close()`
    publishes the shard. Use as a context manager; an exception inside it discards the shard.

    On a local filesystem the shard is built under a temporary name and renamed into place, so
    a shard that exists at its final path is always complete (a killed writer leaves only a
    `.tmp-*` file); object stores publish an object whole when its upload completes.
    """

    def __init__(self, shard: str):
        self.shard = shard
        self._fs, self._path = io.resolve(shard)
        self._fs.create_dir(posixpath.dirname(self._path), recursive=True)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._tmp = f"{self._path}.tmp-{uuid.uuid4().hex[:8]}" if self._local else self._path
        self._out = self._fs.open_output_stream(self._tmp)
        self._tar = tarfile.open(fileobj=self._out, mode="w", format=tarfile.PAX_FORMAT)
        self.members: dict[str, ShardMember] = {}

    def add(self, name: str, data: bytes) -> ShardMember:
        if name in self.members:
            return self.members[name]
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        header = len(info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors))
        start = self._tar.offset
        self._tar.addfile(info, pyio.BytesIO(data))
        member = ShardMember(io.member_uri(self.shard, name), start + header, len(data))
        self.members[name] = member
        return member

    def close(self) -> None:
        self._tar.close()
        self._out.close()
        if self._local:
            os.replace(self._tmp, self._path)

    def abort(self) -> None:
        """Discard the shard (a failed write may leave the stream unclosable: ignored)."""
        try:
            self._tar.close()
            self._out.close()
        except (OSError, ValueError, tarfile.TarError):
            pass
        finally:
            if self._local and os.path.exists(self._tmp):
                os.unlink(self._tmp)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def shard_index(shard: str) -> dict[str, ShardMember] | None:
    """{member name: ShardMember} of an existing shard, from its headers only (data is skipped
    by seeking); None when the shard does not exist or is not a readable tar."""
    fs, path = io.resolve(shard)
    try:
        f = io.open_input(fs, path)
    except OSError:
        return None
    try:
        with f, tarfile.open(fileobj=f, mode="r:") as tar:
            return {m.name: ShardMember(io.member_uri(shard, m.name), m.offset_data, m.size)
                    for m in tar if m.isfile()}
    except (tarfile.TarError, OSError, EOFError):
        return None
