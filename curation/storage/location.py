"""Where data lives, checked before any work starts: the lake root, inputs, output directories.

    check_lake("s3://bucket/lake")              # a writing command: exists or creatable, writable
    check_lake("/data/lake", create=False)      # a reading command (`curate status`): must exist
    check_input("/dumps/page.sql.gz", "kg.build.page", "dump")
    check_output_dir("./out/lowres", "steps[2].out")

Each raises `LocationError` (a `ConfigError`: the CLI prints one line and exits 2) naming the
path and what is wrong with it, and creates nothing. Local paths are checked with `os` calls
(`os.access` also answers for root on a read-only mount); object stores (`s3://`, `gs://`, ...)
get one `get_file_info` call for the path (and its bucket when the path is missing), under a
timeout, so an unreachable endpoint or missing credentials fail here with a clear message
instead of deep inside a Ray task.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from curation.config.typed import ConfigError

__all__ = ["LocationError", "check_input", "check_lake", "check_output_dir", "is_local"]

# Seconds to wait for an object store to answer one metadata request.
REMOTE_TIMEOUT = float(os.environ.get("CURATE_REMOTE_TIMEOUT", "30"))


class LocationError(ConfigError):
    """A lake root, input or output location that cannot be used."""


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    if uri.startswith("file://"):
        uri = "/" + uri[len("file://"):].lstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def check_lake(uri: str, filesystem: Any = None, *, create: bool = True, timeout: float | None = None) -> None:
    """Can a lake live at `uri`? create=True (commands that write): the root is a directory we
    may write, or can be created (its nearest existing ancestor is a writable directory).
    create=False (read-only commands): the root must already be a directory. Creates nothing.
    `filesystem`: an already configured `pyarrow.fs` filesystem (then `uri` is its path)."""
    if not uri:
        raise LocationError("lake: no lake path given", "lake")
    if filesystem is None and is_local(uri):
        _check_local_dir(uri, "lake", create=create, missing=f"no lake at {uri} (the directory does not exist)")
        return
    _check_remote_dir(uri, filesystem, "lake", create=create, timeout=timeout)


def check_output_dir(uri: str, what: str) -> None:
    """An output directory (an export's `out`): a directory, or creatable; creates nothing."""
    if is_local(uri):
        _check_local_dir(uri, what, create=True, missing="")
    else:
        _check_remote_dir(uri, None, what, create=True, timeout=None)


def check_input(uri: str, what: str, kind: str = "file", *, timeout: float | None = None) -> None:
    """An input file or directory (a source, a dump, a prompt log) must exist. `what`: the key
    or option that names it; `kind`: what it is, for the message ("source", "dump")."""
    if is_local(uri):
        if not os.path.exists(_local_path(uri)):
            raise LocationError(f"{what}: {kind} not found: {uri}", what)
        return
    from pyarrow import fs as pafs

    from curation.storage import io

    def info():
        fs, path = io.resolve(uri)
        return fs.get_file_info(path)

    result = _with_timeout(info, timeout, f"{what}: {uri}")
    if result.type == pafs.FileType.NotFound:
        raise LocationError(f"{what}: {kind} not found: {uri}", what)


# --------------------------------------------------------------------------- local


def _check_local_dir(uri: str, what: str, *, create: bool, missing: str) -> None:
    path = _local_path(uri)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise LocationError(f"{what}: {uri} is a file, not a directory", what)
        if create and not os.access(path, os.W_OK | os.X_OK):
            raise LocationError(f"{what}: directory {uri} is not writable{_readonly_hint(path)}", what)
        return
    if not create:
        raise LocationError(f"{what}: {missing or f'{uri} does not exist'}", what)
    parent = path
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent):
        raise LocationError(f"{what}: cannot create {uri}: {parent} is a file, not a directory", what)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LocationError(f"{what}: cannot create {uri}: {parent} is not writable{_readonly_hint(parent)}", what)


def _readonly_hint(path: str) -> str:
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    return " (read-only filesystem)" if st.f_flag & os.ST_RDONLY else ""


# --------------------------------------------------------------------------- object stores


def _check_remote_dir(uri: str, filesystem: Any, what: str, *, create: bool, timeout: float | None) -> None:
    from pyarrow import fs as pafs

    def probe() -> tuple[Any, Any]:
        if filesystem is not None:
            fs, path = filesystem, uri
        else:
            fs, path = pafs.FileSystem.from_uri(uri)
        path = path.rstrip("/")
        info = fs.get_file_info(path) if path else None
        bucket = None
        if info is not None and info.type == pafs.FileType.NotFound and "/" in path and "://" in uri:
            bucket = fs.get_file_info(path.split("/", 1)[0])
        return info, bucket

    info, bucket = _with_timeout(probe, timeout, f"{what}: {uri}")
    if info is None:
        return  # the filesystem's root
    if info.type == pafs.FileType.File:
        raise LocationError(f"{what}: {uri} is a file, not a directory", what)
    if info.type == pafs.FileType.NotFound:
        if not create:
            raise LocationError(f"{what}: no lake at {uri}" if what == "lake" else f"{what}: {uri} does not exist", what)
        if bucket is not None and bucket.type == pafs.FileType.NotFound:
            raise LocationError(f"{what}: cannot use {uri}: bucket {bucket.path!r} does not exist "
                                "(or the credentials cannot see it)", what)


def _with_timeout(fn: Callable[[], Any], timeout: float | None, label: str) -> Any:
    """fn() in a daemon thread: its result, or LocationError when it raises or takes longer
    than `timeout` seconds (an endpoint that does not answer)."""
    timeout = REMOTE_TIMEOUT if timeout is None else timeout
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="curate-location-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LocationError(f"{label}: no answer within {timeout:g} s (endpoint unreachable? "
                            "check the URI, network and credentials; CURATE_REMOTE_TIMEOUT sets the wait)",
                            label.split(":", 1)[0])
    if "error" in box:
        exc = box["error"]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LocationError(f"{label}: cannot use it: {type(exc).__name__}: {first}",
                            label.split(":", 1)[0]) from None
    return box["result"]
