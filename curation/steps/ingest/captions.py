"""Caption normalisation and sidecar parsing: bad text is recorded, never fatal."""

from __future__ import annotations

import json
from typing import Any

# Field names treated as the primary caption, in priority order.
PRIMARY_CAPTION_KEYS = ("caption", "text", "prompt", "alt", "txt")
TAG_KEYS = ("tags", "tag")
MAX_CAPTION_CHARS = 8192  # longer captions are truncated (and flagged): no trainer tokenises more


def normalize(raw: Any, max_chars: int = MAX_CAPTION_CHARS) -> tuple[str | None, str | None]:
    """(text, issue): decode bytes as UTF-8 with replacement, strip, truncate.

    issue is None, "invalid_utf8", "empty" or "truncated".
    """
    if raw is None:
        return None, None
    issue = None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, issue = raw.decode("utf-8", errors="replace"), "invalid_utf8"
    else:
        text = str(raw)
    text = text.replace("\x00", "").strip()
    if not text:
        return "", issue or "empty"
    if len(text) > max_chars:
        text, issue = text[:max_chars], issue or "truncated"
    return text, issue


def split_fields(record: dict[str, Any]) -> tuple[dict[str, str], list[str], dict[str, Any], str | None]:
    """Split a sidecar JSON object or a table row into (caption fields, tags, extra, issue)."""
    captions: dict[str, str] = {}
    tags: list[str] = []
    extra: dict[str, Any] = {}
    issue = None
    for key, value in record.items():
        lkey = str(key).lower()
        if lkey in PRIMARY_CAPTION_KEYS or lkey.startswith("caption"):
            text, why = normalize(value)
            if text is not None:
                captions[str(key)] = text
                issue = issue or why
        elif lkey in TAG_KEYS:
            tags.extend(_tags(value))
        elif value is not None:
            extra[str(key)] = value
    return captions, tags, extra, issue


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value if v is not None]
    else:
        return []
    return [p.strip() for p in parts if p and p.strip()]


def parse_json_sidecar(raw: bytes) -> dict[str, Any]:
    """A sidecar `.json`: an object; anything else is kept under 'json' as extra."""
    try:
        value = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON sidecar: {exc}") from None
    return value if isinstance(value, dict) else {"json": value}


def primary(captions: dict[str, str]) -> str | None:
    """The primary caption among the fields: by key priority, else the first non-empty."""
    lowered = {k.lower(): v for k, v in captions.items()}
    for key in PRIMARY_CAPTION_KEYS:
        if lowered.get(key):
            return lowered[key]
    for value in captions.values():
        if value:
            return value
    return "" if captions else None
