"""Resolve URIs to `pyarrow.fs` filesystems and read item bytes.

A uri is a local path, a `file://` URI (percent-encoded, RFC 8089, as pyarrow reads it) or any
URI pyarrow understands (`s3://`, `gs://`, `hdfs://`). Local file names are bytes: a name that
is not valid UTF-8 cannot be an Arrow string, so `safe_uri` writes such a path as a
percent-encoded `file://` URI that `resolve` turns back into the same bytes.

A WebDataset member is `<shard uri>#<member>` (`#<member>@<k>` for the k-th, 0-based, of several
members sharing one name, which tar allows) with its byte range stored beside it
(`byte_offset`, `byte_size`), so reading it is one ranged read; without the range, `read_bytes`
finds the member by scanning the shard's headers.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
import urllib.parse
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


def list_dir(fs: pafs.FileSystem, path: str, *, recursive: bool = False) -> list[pafs.FileInfo]:
    """The entries under `path` (none when it does not exist), safe against a directory that
    another process creates while it is being listed.

    pyarrow's `FileSelector(allow_not_found=True)` is not: on the local filesystem it lists,
    and when that fails checks whether the directory exists; a directory created between the
    two (another writer creating a table) makes it raise FileNotFoundError "Cannot list
    directory". The failed listing saw no directory, so the listing is simply taken again; a
    path that keeps appearing and vanishing still raises after a few tries.
    """
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    for _ in range(3):
        try:
            return fs.get_file_info(selector)
        except FileNotFoundError:
            continue  # the directory appeared mid-listing: list it again
    return fs.get_file_info(selector)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a uri; filesystems are cached per scheme and bucket/host.

    A local path may hold surrogate-escaped bytes (from a `file://` URI with %-escapes of bytes
    that are not UTF-8); `read_bytes` opens such paths itself since pyarrow takes UTF-8 only.
    """
    if "://" not in uri:
        return _fs_for(""), to_uri(uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        path = os.fsdecode(urllib.parse.unquote_to_bytes("/" + rest.lstrip("/")))
        return _fs_for(""), path
    authority = rest.split("/", 1)[0]
    fs = _fs_for(f"{scheme}://{authority}")
    _, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def safe_uri(path: str) -> str:
    """`path` as a uri that is valid UTF-8 text and reads back the same file.

    Python shows the bytes of a local name that are not UTF-8 as lone surrogates
    (surrogateescape), which Arrow strings cannot hold: such a local path becomes a
    percent-encoded `file://` URI; any other path or URI is returned unchanged. Raises
    ValueError for a non-local URI that is not valid UTF-8 (no store has such keys).
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    if "://" in path and not path.startswith("file://"):
        raise ValueError(f"uri is not valid UTF-8: {printable(path)}")
    if path.startswith("file://"):
        raw = urllib.parse.unquote_to_bytes(os.fsencode(path[len("file://"):]))  # keep its %-escapes
    else:
        raw = os.fsencode(to_uri(path))
    return "file://" + urllib.parse.quote(raw, safe="/")


def printable(text: str) -> str:
    """`text` as valid UTF-8 for messages: surrogate-escaped bytes become `\\xNN`, other lone
    surrogates `\\udNNN` (error messages quote file names, and Arrow rejects lone surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


_OCCURRENCE = re.compile(r"^(.*)@(\d+)$", re.S)


def member_uri(container: str, member: str, occurrence: int | None = None) -> str:
    """'shard.tar#key.jpg', or 'shard.tar#key.jpg@1' for the second member named key.jpg."""
    name = printable(member)
    return f"{container}#{name}" if occurrence is None else f"{container}#{name}@{occurrence}"


def split_member(uri: str) -> tuple[str, str | None]:
    """('shard.tar', 'key.jpg') for 'shard.tar#key.jpg'; (uri, None) otherwise.

    Splits at the first '.tar#', so member names may themselves contain '#'.
    """
    i = uri.find(".tar#")
    if i >= 0:
        return uri[:i + 4], uri[i + 5:]
    return uri, None


def read_bytes(uri: str, offset: int | None = None, size: int | None = None) -> bytes:
    """The item's bytes: the whole file, or `size` bytes at `offset` of its container.

    A member uri without a byte range is found by scanning its shard's headers (one pass).
    """
    container, member = split_member(uri)
    fs, path = resolve(container)
    local = isinstance(fs, pafs.LocalFileSystem)
    if offset is not None and size is not None:
        if local:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        with fs.open_input_file(path) as f:
            return f.read_at(size, offset)
    if member is not None:
        return _read_member(fs, path, member)
    if local:
        # Python's open, not pyarrow's: it takes surrogate-escaped (non-UTF-8) names.
        with open(path, "rb") as f:
            return f.read()
    with fs.open_input_stream(path) as f:
        return f.read()


def open_input(fs: pafs.FileSystem, path: str):
    """A seekable binary file; local files through Python's open, which takes surrogate-
    escaped (non-UTF-8) names that pyarrow refuses."""
    return open(path, "rb") if isinstance(fs, pafs.LocalFileSystem) else fs.open_input_file(path)


def _read_member(fs: pafs.FileSystem, path: str, member: str) -> bytes:
    wanted, occurrence = member, 0
    match = _OCCURRENCE.match(member)
    with open_input(fs, path) as f:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            infos = [m for m in tar if m.isfile()]
        names = [printable(m.name) for m in infos]
        if member not in names and match:
            wanted, occurrence = match.group(1), int(match.group(2))
        hits = [m for m, n in zip(infos, names) if n == wanted]
        if len(hits) <= occurrence:
            raise FileNotFoundError(f"no member {member!r} in {printable(path)}")
        m = hits[occurrence]
        f.seek(m.offset_data)
        return f.read(m.size)


def join(base: str, rel: str) -> str:
    """Join a possibly-relative path onto a base directory uri."""
    if "://" in rel or os.path.isabs(rel):
        return rel
    if "://" in base:
        return base.rstrip("/") + "/" + rel
    return os.path.normpath(os.path.join(base, rel))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))
