"""The captioning prompt, its JSON answer schema, and the answer parser.

One request per image asks a vision-language model for the five caption levels of the target
recipe (long, medium, short, tags, a simulated user prompt), semantic tags and an NSFW score,
in one language, as one JSON object. The prompt is OCR-first: the strings the OCR operator read
are given verbatim (never translated) and the model is told to transcribe every visible string
and watermark into the long caption in its original language. Meta information (the source's
alt text, knowledge-graph entity titles matched from the item's tags) is offered as context
for naming landmarks, people and events, to be used only where the image agrees.

`PROMPT_VERSION` names this text: a new version re-captions every item (`curate caption` is
incremental per model, prompt version, backend and language).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["ANSWER_SCHEMA", "LEVELS", "PROMPT_VERSION", "caption_messages", "diff_messages", "parse_answer",
           "parse_diff_answer"]

PROMPT_VERSION = "caption-v1"
DIFF_PROMPT_VERSION = "diff-v1"
JUDGE_PROMPT_VERSION = "judge-v1"
LEVELS = ("long", "medium", "short", "prompt")

# JSON Schema (draft 2020-12 subset) of one answer; also sent as `response_format` to servers
# that support structured output (vLLM, SGLang, OpenAI).
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "long": {"type": "string", "minLength": 1},
        "medium": {"type": "string", "minLength": 1},
        "short": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "prompt": {"type": "string", "minLength": 1},
        "nsfw": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["long", "medium", "short", "tags", "prompt", "nsfw"],
}

DIFF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "source_caption": {"type": "string", "minLength": 1},
        "target_caption": {"type": "string", "minLength": 1},
        "differences": {"type": "array", "items": {
            "type": "object", "properties": {"type": {"type": "string"}, "description": {"type": "string"}},
            "required": ["type", "description"]}},
        "instruction": {"type": "string", "minLength": 1},
    },
    "required": ["source_caption", "target_caption", "differences", "instruction"],
}

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "verdict": {"type": "string", "minLength": 1},
        "reason": {"type": "string"},
    },
    "required": ["score", "verdict", "reason"],
}

_LANGUAGE = {"en": "English", "zh": "Simplified Chinese (简体中文)"}

_SYSTEM = (
    "You caption images for training a text-to-image model. Be objective and specific. "
    "Answer with one JSON object only, no prose, matching this JSON schema: {schema}"
)

_USER = """Caption this image in {language}.
1. First transcribe ALL visible text (signs, labels, logos, watermarks), exactly as written, in its original language and script: never translate it. Quote each string verbatim inside the long caption.
2. long: an objective, detailed description: every transcribed string, the main subjects, objects, their attributes and positions, the background, the setting or location, the style and lighting.
3. medium: two or three sentences. short: one sentence.
4. tags: 5 to 15 semantic tags (objects, the number of people, culture-specific concepts, style), in {language}.
5. prompt: what a user might type to get this image: short, informal, possibly incomplete.
6. nsfw: the probability (0 to 1) that the image is not safe for work.{ocr}{meta}"""


def _ocr_block(strings: list[str]) -> str:
    if not strings:
        return ""
    listed = "\n".join(f"- {json.dumps(s, ensure_ascii=False)}" for s in strings)
    return ("\nAn OCR engine read these strings in the image (verify them against the image; keep every "
            f"correct one verbatim, in its original language, in the long caption):\n{listed}")


def _meta_block(alt_text: str | None, entities: list[str]) -> str:
    parts = []
    if alt_text:
        parts.append(f"- the source's own text: {json.dumps(alt_text[:500], ensure_ascii=False)}")
    if entities:
        parts.append(f"- known entities possibly shown: {', '.join(entities[:20])}")
    if not parts:
        return ""
    return ("\nContext from the data source (use it to name places, people and events only where the image "
            "agrees; never describe what is not visible):\n" + "\n".join(parts))


def caption_messages(image_url: str, language: str, ocr: list[str], alt_text: str | None,
                     entities: list[str]) -> list[dict]:
    """OpenAI-style chat messages for one image (image_url: a data: URL or an http(s) URL)."""
    system = _SYSTEM.format(schema=json.dumps(ANSWER_SCHEMA, separators=(",", ":")))
    user = _USER.format(language=_LANGUAGE[language], ocr=_ocr_block(ocr), meta=_meta_block(alt_text, entities))
    return [{"role": "system", "content": system},
            {"role": "user", "content": [{"type": "text", "text": user},
                                         {"type": "image_url", "image_url": {"url": image_url}}]}]


def diff_messages(source_url: str, target_url: str, language: str, ocr_source: list[str],
                  ocr_target: list[str]) -> list[dict]:
    """Chat messages asking for a difference caption of an edit pair, in the report's three steps:
    caption both images (with their OCR), list the differences by type, write one instruction."""
    system = _SYSTEM.format(schema=json.dumps(DIFF_SCHEMA, separators=(",", ":")))
    user = (f"The first image is the source, the second the edited target. Answer in {_LANGUAGE[language]}.\n"
            "1. source_caption and target_caption: caption each image, transcribing all visible text verbatim "
            "in its original language." + _ocr_block(ocr_source).replace("the image", "the source")
            + _ocr_block(ocr_target).replace("the image", "the target") +
            "\n2. differences: every difference by type (add, remove, replace, move, recolor, text, style, "
            "background, pose, count, other) with a short description.\n"
            "3. instruction: one concise imperative instruction that turns the source into the target "
            "(quote changed text exactly).")
    return [{"role": "system", "content": system},
            {"role": "user", "content": [{"type": "text", "text": user},
                                         {"type": "image_url", "image_url": {"url": source_url}},
                                         {"type": "image_url", "image_url": {"url": target_url}}]}]


def judge_messages(image_url: str, proposal: dict) -> list[dict]:
    """Chat messages asking the VLM to judge proposed labels of an image (the review queue's AI
    verifier): a score in [0, 1] for how accurate and complete they are, pass or fail, why."""
    system = _SYSTEM.format(schema=json.dumps(JUDGE_SCHEMA, separators=(",", ":")))
    user = ("Judge these proposed labels of the image. score: 1 when every statement is true of the image and "
            "every visible string is transcribed verbatim, 0 when they describe another image. verdict: 'pass' "
            "or 'fail'. reason: one sentence.\n" + json.dumps(proposal, ensure_ascii=False))
    return [{"role": "system", "content": system},
            {"role": "user", "content": [{"type": "text", "text": user},
                                         {"type": "image_url", "image_url": {"url": image_url}}]}]


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def _load_object(text: str) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    text = _FENCE.sub("", text.strip())
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")  # prose around the object
        if start < 0 or end <= start:
            raise ValueError(f"answer is not JSON: {text[:80]!r}") from None
        try:
            value = json.loads(text[start:end + 1])
        except ValueError as exc:
            raise ValueError(f"answer is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"answer is JSON {type(value).__name__}, not an object")
    return value


def _check(value: dict, schema: dict, where: str = "") -> None:
    """A small JSON Schema check (type, required, minLength, minimum/maximum, array items):
    enough for the answer schemas above, without a dependency."""
    for key in schema.get("required", ()):
        if key not in value:
            raise ValueError(f"answer misses {where}{key!r}")
    for key, rule in schema.get("properties", {}).items():
        if key not in value:
            continue
        v, t = value[key], rule["type"]
        ok = {"string": isinstance(v, str), "array": isinstance(v, list), "object": isinstance(v, dict),
              "number": isinstance(v, (int, float)) and not isinstance(v, bool)}[t]
        if not ok:
            raise ValueError(f"answer field {where}{key!r} should be a {t}, got {type(v).__name__}")
        if t == "string" and len(v.strip()) < rule.get("minLength", 0):
            raise ValueError(f"answer field {where}{key!r} is empty")
        if t == "number" and not rule.get("minimum", v) <= v <= rule.get("maximum", v):
            raise ValueError(f"answer field {where}{key!r} = {v} is outside [{rule.get('minimum')}, {rule.get('maximum')}]")
        if t == "array":
            for i, item in enumerate(v):
                sub = rule["items"]
                if sub["type"] == "string" and not isinstance(item, str):
                    raise ValueError(f"answer field {where}{key}[{i}] should be a string")
                if sub["type"] == "object":
                    if not isinstance(item, dict):
                        raise ValueError(f"answer field {where}{key}[{i}] should be an object")
                    _check(item, sub, f"{where}{key}[{i}].")


def parse_answer(text: str) -> dict:
    """The validated caption answer (tags stripped of blanks and repeats); ValueError saying
    what is wrong otherwise (never echoing more than 80 characters of the answer)."""
    value = _load_object(text)
    _check(value, ANSWER_SCHEMA)
    tags = list(dict.fromkeys(t.strip() for t in value["tags"] if t.strip()))
    return {**{k: value[k].strip() for k in LEVELS}, "tags": tags, "nsfw": float(value["nsfw"])}


def parse_diff_answer(text: str) -> dict:
    value = _load_object(text)
    _check(value, DIFF_SCHEMA)
    return {"source_caption": value["source_caption"].strip(), "target_caption": value["target_caption"].strip(),
            "differences": [{"type": d["type"].strip(), "description": d["description"].strip()}
                            for d in value["differences"]],
            "instruction": value["instruction"].strip()}


def parse_judge_answer(text: str) -> dict:
    value = _load_object(text)
    _check(value, JUDGE_SCHEMA)
    verdict = value["verdict"].strip().lower()
    if verdict not in ("pass", "fail"):
        raise ValueError(f"answer field 'verdict' should be 'pass' or 'fail', got {verdict[:20]!r}")
    return {"score": float(value["score"]), "verdict": verdict, "reason": value["reason"].strip()}
