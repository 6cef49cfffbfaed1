"""Source patterns: brace ranges and globs, expanded on the source's own filesystem.

`expand(source)` turns one SOURCE (a path or a `pyarrow.fs` / fsspec URI) into the sources it
names, sorted and de-duplicated:

- brace expansion first, like the shell: `{00000..00099}` (numeric range, zero-padded to the
  wider end when either end has a leading zero), `{a,b,c}` (a list); several groups multiply.
  A range that runs backwards (`{5..2}`) is an error;
- then globs (`*`, `?`, `[...]`, and `**` for any depth of directories), matched with fnmatch
  per path component against a `FileSelector` listing of the pattern's fixed leading directory
  (names starting with '.' are matched only by a component that starts with '.').

A glob that matches nothing is a `PatternError` naming the pattern; brace expansion alone does
not check that its results exist (the ingest preflight does). A source whose text exists as a
file or directory is taken literally, whatever characters it holds.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable

import pyarrow.fs as pafs

from curation.storage import io
from curation.steps.ingest.sources import SourceError

__all__ = ["PatternError", "as_list", "default_name", "expand", "expand_braces", "is_pattern"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


class PatternError(SourceError):
    """A source pattern is malformed or matches nothing."""


def as_list(source: "str | Iterable[str] | None") -> list[str]:
    """A config's `source` (one string or a list of strings) as a list."""
    if not source:
        return []
    return [source] if isinstance(source, str) else [s for s in source]


def is_pattern(source: str) -> bool:
    return bool(_GLOB_CHARS.search(source)) or _brace_group(source) is not None


def default_name(source: str) -> str:
    """The pool source name of a SOURCE as given: its last component; for a pattern, the last
    component of its fixed leading directory (`shards/{00000..00009}.tar` -> "shards")."""
    text = source.rstrip("/")
    if is_pattern(text):
        parts = text.split("/")
        fixed = _fixed_prefix(parts)
        text = "/".join(fixed).rstrip("/")
    return text.rsplit("/", 1)[-1] or source


def expand(source: str) -> list[str]:
    """The sources `source` names (see the module docstring); [source] when it is no pattern."""
    if not is_pattern(source) or _exists(source):
        return [source]
    out: list[str] = []
    for s in expand_braces(source):
        if _GLOB_CHARS.search(s) and not _exists(s):
            matches = _glob(s)
            if not matches:
                raise PatternError(f"source pattern matches nothing: {s}"
                                   + (f" (from {source})" if s != source else ""))
            out.extend(matches)
        else:
            out.append(s)
    return sorted(dict.fromkeys(out))


def expand_braces(text: str) -> list[str]:
    """Shell brace expansion: `a{1..3}b` -> a1b a2b a3b; `{08..10}` -> 08 09 10; `{x,y}`."""
    group = _brace_group(text)
    if group is None:
        return [text]
    start, end = group
    head, body, tail = text[:start], text[start + 1:end], text[end + 1:]
    m = _RANGE.match(body)
    if m:
        a, b = m.group(1), m.group(2)
        lo, hi = int(a), int(b)
        if lo > hi:
            raise PatternError(f"bad brace range {{{body}}} in {text}: the end is below the start")
        padded = any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in (a, b))
        width = max(len(a), len(b)) if padded else 0
        items = [f"{i:0{width}d}" for i in range(lo, hi + 1)]
    else:
        items = _split_commas(body)
    return [r for item in items for r in expand_braces(head + item + tail)]


# ---- internals --------------------------------------------------------------------------------

def _brace_group(text: str) -> "tuple[int, int] | None":
    """(start, end) of the first expandable `{...}` (a range `a..b` or a list with a comma at
    its top level); None when there is none (`{}` and `{x}` stay literal, as in the shell)."""
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return None
        depth, comma = 0, False
        for j in range(start, len(text)):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    body = text[start + 1:j]
                    if comma or _RANGE.match(body):
                        return start, j
                    if ".." in body and not comma and "{" not in body:
                        raise PatternError(f"bad brace range {{{body}}} in {text}: expected integers "
                                           "like {00000..00099}")
                    break
            elif c == "," and depth == 1:
                comma = True
        else:
            return None  # unbalanced: literal
        i = start + 1


def _split_commas(body: str) -> list[str]:
    items, depth, cur = [], 0, []
    for c in body:
        if c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        depth += (c == "{") - (c == "}")
        cur.append(c)
    items.append("".join(cur))
    return items


def _fixed_prefix(parts: list[str]) -> list[str]:
    fixed = []
    for p in parts:
        if _GLOB_CHARS.search(p) or _brace_group(p) is not None:
            break
        fixed.append(p)
    return fixed


def _exists(source: str) -> bool:
    try:
        fs, path = io.resolve(source)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except (OSError, ValueError):
        return False


def _glob(pattern: str) -> list[str]:
    """Files and directories matching `pattern` (no braces left), as uris like the pattern's."""
    scheme = ""
    if "://" in pattern:
        scheme, rest = pattern.split("://", 1)
        scheme += "://"
    fs, path = io.resolve(pattern)  # pyarrow paths keep glob characters as they are
    parts = path.split("/")
    fixed = _fixed_prefix(parts)
    base = "/".join(fixed) or ("/" if path.startswith("/") else ".")
    pat_parts = parts[len(fixed):]
    if not pat_parts:
        return []
    try:
        info = fs.get_file_info(base)
        if info.type != pafs.FileType.Directory:
            return []
        recursive = len(pat_parts) > 1 or "**" in pat_parts
        listing = io.list_dir(fs, base, recursive=recursive)
    except OSError as exc:
        raise PatternError(f"cannot list {base} for source pattern {pattern}: {exc}") from None
    prefix = base.rstrip("/") + "/" if base not in (".",) else ""
    out = []
    for i in listing:
        rel = i.path[len(prefix):] if prefix and i.path.startswith(prefix) else i.path
        if _match(pat_parts, rel.split("/")):
            out.append(_as_uri(scheme, pattern, i.path))
    return out


def _as_uri(scheme: str, pattern: str, path: str) -> str:
    if not scheme:
        return path
    if scheme == "file://":
        return "file://" + path
    return scheme + path.lstrip("/")


def _match(pat: list[str], name: list[str]) -> bool:
    if not pat:
        return not name
    if pat[0] == "**":
        return any(_match(pat[1:], name[k:]) for k in range(len(name) + 1))
    if not name:
        return False
    part = name[0]
    if part.startswith(".") and not pat[0].startswith("."):
        return False
    return fnmatch.fnmatchcase(part, pat[0]) and _match(pat[1:], name[1:])




def discover_images(pattern: str, uris: list[str]):
    """(kind, candidates) for image files a glob matched (`imgs/**/*.jpg`): a directory source
    made of just those images, with their `.txt` / `.json` sidecars where they exist."""
    import posixpath

    from curation.steps.ingest import sources

    fs, _ = io.resolve(uris[0])
    paths = [io.resolve(u)[1] for u in uris]
    sidecars = [posixpath.splitext(p)[0] + ext for p in paths for ext in sources.SIDECAR_EXTENSIONS]
    found = [i.path for i in fs.get_file_info(sidecars) if i.type == pafs.FileType.File] if sidecars else []
    return sources._directory_source(pattern, fs, paths + found, [])


def is_image(uri: str) -> bool:
    from curation.steps.ingest.sources import IMAGE_EXTENSIONS

    return "." in uri.rsplit("/", 1)[-1] and "." + uri.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
