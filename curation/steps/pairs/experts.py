"""Reading expert-edit groups (an original and N edited versions of it) from the layouts teams
keep them in.

**Directory** (`SOURCE/<group>/`), one folder per group:

    SOURCE/cat_sofa/original.jpg        the original: stem `original` (or `source`, `orig`, `input`)
    SOURCE/cat_sofa/gray.jpg            the edited versions: every other image file
    SOURCE/cat_sofa/edits.jsonl         one line per edit: {"file": "gray.jpg", "task": "grayscale",
                                        "instruction": "Make it black and white"}

`edits.jsonl` may also be `edits.csv` or `edits.parquet`; optional columns per edit:
`inverse_instruction` (the instruction that undoes it), `aspects` (what it changes, see
`compose.ASPECTS`: a list, or comma-separated), `params` (an object or JSON text filling the
task's template, e.g. {"object": "cat"}). An image file the listing does not name is an edit of
unknown task (its pairs wait for a difference caption).

**Table** (SOURCE is a .parquet / .csv / .jsonl file): one row per image with `group`, `file`
(or `path`; relative to the table's folder), `role` (original | edit; default: the file stem
rule above), and the edit columns above.

Problems are counted, never fatal: a group without an original, with several, or with no
edited version is rejected with its reason; a listing line that cannot be parsed, names a file
outside the group or repeats one is a rejected edit; an empty or non-UTF-8 instruction is kept
as no instruction (the pair waits for a difference caption) and counted.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from curation.steps.ingest import captions as capt
from curation.steps.ingest.sources import IMAGE_EXTENSIONS, read_records
from curation.storage import io

__all__ = ["Edit", "Group", "LISTING_NAMES", "ORIGINAL_STEMS", "read_groups"]

ORIGINAL_STEMS = ("original", "source", "orig", "input")
LISTING_NAMES = ("edits.jsonl", "edits.csv", "edits.parquet")
_EXAMPLES = 10  # rejected groups / edits named in the summary, at most


@dataclass
class Edit:
    """One edited version: its file, task, instruction (None when missing or unusable, with
    `issue` saying why), and the optional inverse instruction, aspects and template params."""

    uri: str
    task: str | None = None
    instruction: str | None = None
    issue: str | None = None
    inverse_instruction: str | None = None
    aspects: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Group:
    """An original and its edits, or a rejected group (`problem`)."""

    name: str
    original: str | None = None
    edits: list[Edit] = field(default_factory=list)
    problem: str | None = None


@dataclass
class Reading:
    """What was read: the usable groups and the counts of everything left out."""

    groups: list[Group]
    rejected_groups: Counter = field(default_factory=Counter)
    rejected_edits: Counter = field(default_factory=Counter)
    instruction_issues: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def reject(self, what: str, reason: str, counter: Counter) -> None:
        counter[reason.split(":", 1)[0]] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{what}: {reason}")


def read_groups(source: str) -> Reading:
    """Groups of a directory or table source (see the module). Raises FileNotFoundError for a
    source that does not exist and ValueError for a file of another kind."""
    fs, path = io.resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"expert edits source not found: {source}")
    if info.type == pafs.FileType.Directory:
        groups = _directory_groups(source, fs, path)
    elif path.lower().endswith((".parquet", ".csv", ".jsonl")):
        groups = _table_groups(source, fs, path)
    else:
        raise ValueError(f"expert edits source {source}: expected a directory of group folders or a "
                         ".parquet / .csv / .jsonl table")
    reading = Reading([])
    for g, edit_problems in groups:
        for what, reason in edit_problems:
            reading.reject(f"{g.name}/{what}", reason, reading.rejected_edits)
        if g.problem is None and not g.edits:
            g.problem = "one image only: no edited version"
        if g.problem:
            reading.reject(g.name, g.problem, reading.rejected_groups)
            continue
        for e in g.edits:
            if e.issue:
                reading.instruction_issues[e.issue] += 1
        reading.groups.append(g)
    return reading


def _uri(source: str, path: str) -> str:
    """A filesystem path back as a uri of the same kind as `source`."""
    return f"{source.split('://', 1)[0]}://{path.lstrip('/')}" if "://" in source else path


def _is_image(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _directory_groups(source: str, fs: pafs.FileSystem, root: str) -> list[tuple[Group, list]]:
    out = []
    entries = sorted(fs.get_file_info(pafs.FileSelector(root)), key=lambda i: i.path)
    for d in entries:
        if d.type != pafs.FileType.Directory or d.base_name.startswith((".", "_")):
            continue
        files = sorted((i for i in fs.get_file_info(pafs.FileSelector(d.path)) if i.type == pafs.FileType.File),
                       key=lambda i: i.base_name)
        names = {i.base_name: _uri(source, i.path) for i in files}
        listing = next((n for n in LISTING_NAMES if n in names), None)
        rows, problems = _listing_rows(fs, posixpath.join(d.path, listing)) if listing else ([], [])
        for r in rows:
            r.setdefault("role", None)
        images = [n for n in names if _is_image(n)]
        out.append(_group(d.base_name, images, names, rows, problems))
    return out


def _table_groups(source: str, fs: pafs.FileSystem, path: str) -> list[tuple[Group, list]]:
    rows, problems = _listing_rows(fs, path)
    base = posixpath.dirname(source.rstrip("/")) if "://" in source else posixpath.dirname(path)
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        group = r.pop("group", None)
        if group in (None, ""):
            problems.append((r.get("file") or "?", "no group: the row names no group"))
            continue
        by_group.setdefault(str(group), []).append(r)
    out = []
    for name, members in by_group.items():
        names = {}
        for r in members:
            rel = r.get("file")
            if rel:
                names[rel] = io.join(base, rel)
        out.append(_group(name, [n for n in names if _is_image(n)], names, members, []))
    if problems:  # line-level problems of the table belong to no group: reported on the first
        if out:
            out[0][1].extend(problems)
        else:
            out.append((Group("(table)", problem=f"no usable rows: {problems[0][1]}"), problems))
    return out


def _listing_rows(fs: pafs.FileSystem, path: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows with `file` set, problems (where, reason)) of a listing or table file."""
    name = posixpath.basename(path)
    try:
        _, records = read_records(fs, path)
    except (OSError, ValueError) as exc:
        return [], [(name, f"listing unreadable: {exc}")]
    rows, problems = [], []
    for line, row, problem in records:
        if row is None:
            problems.append((f"{name}:{line}", f"bad line: {problem}"))
            continue
        file = row.get("file") or row.get("path")
        if not isinstance(file, str) or not file:
            problems.append((f"{name}:{line}", "no file: the line names no image file"))
            continue
        rows.append({**row, "file": file})
    return rows, problems


def _group(name: str, images: list[str], uris: dict[str, str], rows: list[dict],
           problems: list[tuple[str, str]]) -> tuple[Group, list[tuple[str, str]]]:
    """One group from its image names (relative), their uris and its listing rows."""
    listed: dict[str, dict] = {}
    for r in rows:
        f = r["file"]
        if f in listed:
            problems.append((f, "listed twice: the first line is used"))
        elif f not in uris:
            problems.append((f, "not in the group: the listing names a file the group does not have"))
        else:
            listed[f] = r
    originals = [f for f in images if _role(f, listed.get(f)) == "original"]
    group = Group(name)
    if not originals:
        group.problem = "no original: no file named original.* (or role: original)"
    elif len(originals) > 1:
        group.problem = f"several originals: {sorted(originals)}"
    else:
        group.original = uris[originals[0]]
    for f in images:
        if f in originals:
            continue
        group.edits.append(_edit(uris[f], listed.get(f)))
    return group, problems


def _role(file: str, row: dict | None) -> str:
    role = (row or {}).get("role")
    if role:
        return str(role).strip().lower()
    return "original" if posixpath.splitext(posixpath.basename(file))[0].lower() in ORIGINAL_STEMS else "edit"


def _edit(uri: str, row: dict | None) -> Edit:
    if row is None:
        return Edit(uri, issue="unlisted")
    text, issue = capt.normalize(row.get("instruction"))
    if issue in ("invalid_utf8", "empty") or text is None:
        text, issue = None, issue or "missing"
    return Edit(uri, task=_text(row.get("task")), instruction=text, issue=issue if text is None else None,
                inverse_instruction=_text(row.get("inverse_instruction")), aspects=_aspects(row.get("aspects")),
                params=_params(row.get("params")))


def _text(value: Any) -> str | None:
    text, issue = capt.normalize(value) if value is not None else (None, None)
    return text if text and issue not in ("invalid_utf8", "empty") else None


def _aspects(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    return [str(v) for v in value if v] if isinstance(value, (list, tuple)) and value else None


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}
