"""Strict YAML for job specs: the safe loader, duplicate keys refused, errors as `file:line:col`.

    data, lines = load_yaml(text, "jobs/profile.yaml")
    lines("profile.batch_size")   # -> "jobs/profile.yaml:17:3", for messages about that key

PyYAML's safe loader already refuses `!!python/...` tags (arbitrary objects); this module turns
that, and every syntax error, into one `ConfigError` line naming the file, line and column.
Plain PyYAML keeps the last of two equal keys in a mapping, so a repeated `batch_size:` would
silently win over the first; here it is an error naming the key and both lines.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import yaml

from curation.config.typed import ConfigError

__all__ = ["StrictLoader", "load_yaml"]

_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (explicit keys; `<<` merges of
    anchors may be overridden as usual)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports unhashable keys
                if key in seen:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        f"while constructing a mapping (line {first.line + 1})", first,
                        f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _where(origin: str, mark: yaml.Mark | None) -> str:
    return f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin


def _message(origin: str, exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"{origin}: invalid YAML: {exc}"
    problem = exc.problem or "invalid YAML"
    if isinstance(exc, yaml.constructor.ConstructorError) and "could not determine a constructor" in problem:
        tag = re.search(r"tag '([^']*)'", problem)
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "?"
        return (f"{_where(origin, exc.problem_mark)}: unsupported YAML tag {name} "
                f"(job specs are plain data: mappings, lists, strings, numbers, booleans)")
    if isinstance(exc, yaml.constructor.ConstructorError) and problem.startswith("duplicate key"):
        return f"{_where(origin, exc.problem_mark)}: {problem}"
    context = f" ({exc.context})" if exc.context and not isinstance(exc, yaml.constructor.ConstructorError) else ""
    return f"{_where(origin, exc.problem_mark or exc.context_mark)}: invalid YAML: {problem}{context}"


def load_yaml(text: str, origin: str) -> tuple[Any, Callable[[str | None], str]]:
    """Parse `text` (from `origin`, a file name used in messages) with `StrictLoader`.

    Returns (data, locate): locate(key_path) -> "origin:line:col" of the key a `ConfigError`
    path names ("stages.sft.rules.min_side", "steps[2].stage"), or of its nearest ancestor
    present in the document; just "origin" when nothing matches. Raises ConfigError for any
    YAML problem, with file:line:column.
    """
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(_message(origin, exc)) from None
    finally:
        loader.dispose()
    return data, lambda path: _where(origin, _mark_of(node, path))


_PART = re.compile(r"\[(\d+)\]")


def _mark_of(node: yaml.Node | None, path: str | None) -> yaml.Mark | None:
    """The start mark of the key `path` names (dotted keys, `[i]` for list items), or of the
    deepest part of the path that exists."""
    if node is None or not path or path == "<root>":
        return None
    best: yaml.Mark | None = None
    rest = path
    while rest and node is not None:
        if rest.startswith("["):
            m = _PART.match(rest)
            if not m or not isinstance(node, yaml.SequenceNode) or int(m.group(1)) >= len(node.value):
                break
            node = node.value[int(m.group(1))]
            best = node.start_mark
            rest = _after(rest, m.end())
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        # The longest key that prefixes the rest of the path (stage names may contain dots).
        match = None
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or not rest.startswith(key):
                continue
            if len(rest) == len(key) or rest[len(key)] in ".[":
                if match is None or len(key) > len(match[0]):
                    match = (key, key_node, value_node)
        if match is None:
            break
        key, key_node, node = match
        best = key_node.start_mark
        rest = _after(rest, len(key))
    return best


def _after(path: str, end: int) -> str:
    """The rest of `path` after a part ending at `end`, without the one separating dot."""
    rest = path[end:]
    return rest[1:] if rest.startswith(".") else rest
