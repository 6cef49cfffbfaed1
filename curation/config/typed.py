"""Typed configuration: build (nested) dataclasses from plain dicts parsed from YAML.

Every config object in the project is a dataclass whose fields carry type hints and
documented defaults. `from_dict` checks the dict against those hints and fails loudly, naming
the full key path, on a wrong type or an unknown key (a misspelled option must never be
silently ignored). `to_dict` turns a config back into plain data to record in outputs.

Supported field types: bool, int, float (an int is accepted and converted), str, None,
Any, Optional[X] / X | None, Union[...], Literal[...], Enum (by value or name),
list[X], tuple[X, ...], dict[str, X], and nested dataclasses. A nested dataclass field given
as null (an empty YAML section such as ``rules:``) gets its defaults unless the field is
Optional.

Ranges are declared on the field and checked wherever a value comes in (`from_dict`,
`override`): ``batch_size: int = field(default=32, metadata={"min": 1})``. Keys: ``min`` / ``max``
(inclusive), ``gt`` / ``lt`` (exclusive). None passes (Optional fields); for a list, tuple or
dict the bound applies to every item / value. The error names the full key path:
``profile.batch_size: must be >= 1, got 0``.

`override(obj, {"profile.max_pixels": 0, "kg.build.xml": "dump.xml"})` is `dataclasses.replace`
for dotted keys: it returns a new object (nothing is mutated) and checks every new value as
`from_dict` does (type, range, `__post_init__`), so command-line overrides meet the same checks
as the YAML they replace.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from typing import Any, Literal, Union

__all__ = ["ConfigError", "RANGE_KEYS", "from_dict", "override", "to_dict"]


class ConfigError(ValueError):
    """A configuration value does not match its declared type or range, or a key is
    unknown/missing. `path`: the key path the message names ("profile.batch_size", "steps[2]"),
    None when the error is not about one key (a file-level problem)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


RANGE_KEYS = {"min": ">=", "max": "<=", "gt": ">", "lt": "<"}


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build an instance of dataclass `cls` from `data` (a dict), checking every value's type.

    path: the key path of `data` inside a larger document, used as the prefix of error
        messages (e.g. "stages.sft"); "" for the document root.
    Raises ConfigError naming the full key path, e.g.
    ``stages.sft.rules.min_side: expected int, got str 'abc'``.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    return _convert(cls, data, path)


def to_dict(obj: Any) -> Any:
    """Turn a config (dataclass, possibly nested) into plain dicts/lists/scalars.

    Enums become their values and tuples become lists, so the result round-trips through
    YAML/JSON and `from_dict`.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def override(obj: Any, changes: dict[str, Any], path: str = "") -> Any:
    """A copy of dataclass instance `obj` with `changes` applied; keys are field names or dotted
    paths into nested dataclasses and dicts ("profile.operators", "kg.build.prune.rules",
    "stages.lowres.buckets.resolution"). Each new value is checked like `from_dict` checks YAML
    (type, declared range), every changed dataclass is rebuilt with `dataclasses.replace` (so its
    `__post_init__` runs), and errors name the full key path. `obj` is not modified.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"override needs a dataclass instance, got {obj!r}")
    return _override(obj, changes, path)


# --------------------------------------------------------------------------- internals


def _split_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    return direct, nested


def _override(obj: Any, changes: dict[str, Any], path: str) -> Any:
    direct, nested = _split_changes(changes)
    if isinstance(obj, dict):
        out = dict(obj)
        for key, value in direct.items():
            out[key] = value  # typed by the caller's field conversion below
        for key, sub in nested.items():
            if key not in out:
                raise ConfigError(f"{_join(path, key)}: no such key (have {', '.join(map(str, out)) or 'none'})",
                                  _join(path, key))
            out[key] = _override(out[key], sub, _join(path, key))
        return out
    cls = type(obj)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in list(direct) + list(nested):
        if key not in fields:
            raise _unknown_key(cls, key, fields, path)
    new: dict[str, Any] = {}
    for name, value in direct.items():
        key_path = _join(path, name)
        new[name] = _convert(hints[name], value, key_path)
        _check_range(fields[name], new[name], key_path)
    for name, sub in nested.items():
        key_path = _join(path, name)
        current = new.get(name, getattr(obj, name))
        if not (isinstance(current, dict) or (dataclasses.is_dataclass(current) and not isinstance(current, type))):
            raise ConfigError(f"{key_path}: {_show(current)} has no keys to set ({', '.join(sub)})", key_path)
        new[name] = _override(current, sub, key_path)
        if isinstance(current, dict):  # check the dict's new values against the field's type and range
            new[name] = _convert(hints[name], new[name], key_path)
            _check_range(fields[name], new[name], key_path)
    try:
        return dataclasses.replace(obj, **new)
    except (ValueError, TypeError) as exc:  # __post_init__ checks, ConfigError included
        raise ConfigError(f"{_where(path)}: {exc}", path or None) from exc


def _check_range(f: dataclasses.Field, value: Any, path: str) -> None:
    bounds = {k: v for k, v in f.metadata.items() if k in RANGE_KEYS}
    if not bounds or value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_bounds(bounds, v, _join(path, str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(bounds, v, f"{path}[{i}]")
    else:
        _check_bounds(bounds, value, path)


def _check_bounds(bounds: dict[str, Any], value: Any, path: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ok = {"min": lambda b: value >= b, "max": lambda b: value <= b,
          "gt": lambda b: value > b, "lt": lambda b: value < b}
    for key, bound in bounds.items():
        if not ok[key](bound):  # NaN fails every bound
            raise ConfigError(f"{_where(path)}: must be {RANGE_KEYS[key]} {bound}, got {value!r}", path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "<root>"


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else origin.__name__
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, tp: Any, value: Any, hint: str = "") -> ConfigError:
    return ConfigError(f"{_where(path)}: expected {_type_name(tp)}, got {_show(value)}{hint}", path)


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _fail(path, tp, value)

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None:
            if len(members) < len(args):
                return None
            raise _fail(path, tp, value)
        if len(members) == 1:
            # Optional[X]: report X's own (more precise) error.
            return _convert(members[0], value, path)
        for member in members:
            try:
                return _convert(member, value, path)
            except ConfigError:
                continue
        raise _fail(path, tp, value)

    if origin is Literal:
        # Compare type as well as value: True == 1 must not satisfy Literal[1].
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise _fail(path, tp, value)

    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path)

    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or value == member.name or value is member:
                return member
        raise ConfigError(f"{_where(path)}: expected one of {[m.value for m in tp]}, got {_show(value)}", path)

    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, tp, value)
        item = args[0] if args else Any
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]

    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, tp, value)
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{_where(path)}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}", path)
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))

    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _fail(path, tp, value)
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            key_path = _join(path, str(k))
            out[_convert(key_tp, k, key_path)] = _convert(val_tp, v, key_path)
        return out

    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        hint = ""
        if isinstance(value, str) and "e" in value.lower() and _is_float_text(value):
            # PyYAML (YAML 1.1) reads 1e-3 as a string; it needs a dot: 1.0e-3.
            hint = " (YAML reads exponents without a dot as text; write e.g. 1.0e-3)"
        raise _fail(path, tp, value, hint)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, tp, value)

    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _fail(path, tp, value)
    raise ConfigError(f"{_where(path)}: unsupported type annotation {tp!r}", path)


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as exc:
        # String annotations are resolved in the module's globals: a class defined inside a
        # function cannot be found there.
        raise TypeError(f"cannot resolve the type hints of {cls.__qualname__} ({exc}); "
                        "define config dataclasses at module level") from exc


def _unknown_key(cls: type, key: Any, fields: dict, path: str) -> ConfigError:
    known = sorted(fields)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{_join(path, str(key))}: unknown key {key!r} for {cls.__name__}{hint} "
                       f"(known keys: {', '.join(known)})", _join(path, str(key)))


def _convert_dataclass(cls: type, value: Any, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}  # an empty YAML section (`rules:`) parses as null: use the defaults
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(path)}: expected a mapping for {cls.__name__}, got {_show(value)}", path)

    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            raise _unknown_key(cls, key, fields, path)

    kwargs = {}
    for name, f in fields.items():
        if name in value:
            key_path = _join(path, name)
            kwargs[name] = _convert(hints[name], value[name], key_path)
            _check_range(f, kwargs[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: missing required key for {cls.__name__}", _join(path, name))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # ConfigError included
        # Validation in __post_init__ (cross-field checks): prefix the section's path.
        raise ConfigError(f"{_where(path)}: {exc}", path or None) from exc
