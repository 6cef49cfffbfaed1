"""Caption normalisation and sidecar parsing: bad text is recorded, never fatal."""

from __future__ import annotations

import json
import re
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
        if not is_utf8(text):
            text, issue = repair(text), "invalid_utf8"
    text = text.replace("\x00", "").strip()
    if not text:
        return "", issue or "empty"
    if len(text) > max_chars:
        text, issue = text[:max_chars], issue or "truncated"
    return text, issue


_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def is_utf8(text: str) -> bool:
    """Whether `text` can be stored as an Arrow string (no lone surrogates)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def repair(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD. They come from bytes that were not UTF-8
    (decoded with surrogateescape) or from JSON escapes such as "\\ud800"; Arrow rejects them."""
    if is_utf8(text):
        return text
    # U+DC80..U+DCFF are surrogate-escaped bytes: back to bytes, then decoded with replacement
    # (so a broken multi-byte sequence is one U+FFFD); any other lone surrogate is one U+FFFD.
    text = _OTHER_SURROGATES.sub("\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")


def split_fields(record: dict[str, Any]) -> tuple[dict[str, str], list[str], dict[str, Any], str | None]:
    """Split a sidecar JSON object or a table row into (caption fields, tags, extra, issue)."""
    captions: dict[str, str] = {}
    tags: list[str] = []
    extra: dict[str, Any] = {}
    issue = None
    for key, value in record.items():
        key = repair(str(key))
        lkey = key.lower()
        if lkey in PRIMARY_CAPTION_KEYS or lkey.startswith("caption"):
            text, why = normalize(value)
            if text is not None:
                captions[key] = text
                issue = issue or why
        elif lkey in TAG_KEYS:
            tags.extend(_tags(value))
        elif value is not None:
            extra[key] = value
    return captions, tags, extra, issue


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value if v is not None]
    else:
        return []
    return [repair(p.strip()) for p in parts if p and p.strip()]


def parse_json_sidecar(raw: bytes) -> dict[str, Any]:
    """A sidecar `.json`: an object; anything else is kept under 'json' as extra.

    Raises ValueError for text that is not JSON and for JSON nested deeper than Python's
    recursion limit (about 1000 levels; a hostile sidecar nests 100,000 deep), so one bad
    sidecar is its item's error, never the ingest's.
    """
    try:
        value = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON sidecar: {exc}") from None
    except RecursionError:
        raise ValueError("invalid JSON sidecar: nested too deep") from None
    return value if isinstance(value, dict) else {"json": value}


def dumps_extra(extra: dict[str, Any]) -> str | None:
    """The extra fields as JSON text (None when empty), valid UTF-8 whatever the input held.

    Raises ValueError when the value is nested too deep to serialise.
    """
    if not extra:
        return None
    try:
        return repair(json.dumps(extra, ensure_ascii=False, default=str))
    except RecursionError:
        raise ValueError("extra fields nested too deep") from None


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
