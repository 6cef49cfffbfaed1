"""Resolve URIs to `pyarrow.fs` filesystems and read item bytes.

A uri is a local path, a `file://` URI or any URI pyarrow understands (`s3://`, `gs://`,
`hdfs://`). A WebDataset member is `<shard uri>#<member>` with its byte range stored beside it
(`byte_offset`, `byte_size`), so reading it is one ranged read, never a tar scan.
"""

from __future__ import annotations

import os
import posixpath
from functools import lru_cache

import pyarrow.fs as pafs


def to_uri(path: str) -> str:
    """Absolute `file://`-less form for local paths; URIs pass through unchanged."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


@lru_cache(maxsize=64)
def _fs_for(scheme_and_authority: str) -> pafs.FileSystem:
    if not scheme_and_authority:
        return pafs.LocalFileSystem()
    fs, _ = pafs.FileSystem.from_uri(scheme_and_authority + "/")
    return fs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a uri; filesystems are cached per scheme and bucket/host."""
    if "://" not in uri:
        return _fs_for(""), to_uri(uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return _fs_for(""), "/" + rest.lstrip("/")
    authority = rest.split("/", 1)[0]
    fs = _fs_for(f"{scheme}://{authority}")
    _, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def split_member(uri: str) -> tuple[str, str | None]:
    """('shard.tar', 'key.jpg') for 'shard.tar#key.jpg'; (uri, None) otherwise."""
    if "#" in uri:
        container, member = uri.rsplit("#", 1)
        if container.endswith(".tar"):
            return container, member
    return uri, None


def read_bytes(uri: str, offset: int | None = None, size: int | None = None) -> bytes:
    """The item's bytes: the whole file, or `size` bytes at `offset` of its container."""
    container, _ = split_member(uri)
    fs, path = resolve(container)
    if offset is not None and size is not None:
        with fs.open_input_file(path) as f:
            return f.read_at(size, offset)
    with fs.open_input_stream(path) as f:
        return f.read()


def join(base: str, rel: str) -> str:
    """Join a possibly-relative path onto a base directory uri."""
    if "://" in rel or os.path.isabs(rel):
        return rel
    if "://" in base:
        return base.rstrip("/") + "/" + rel
    return os.path.normpath(os.path.join(base, rel))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))
