"""Instructions for inverse and mixed expert pairs, composed from the known ones.

An expert edit's instruction is known (it came with the data). The other pairs of a group are
composed by these rules, and only by them:

- **inverse** (edit i -> original): the inverse instruction of edit i's task. It comes from the
  edit's own `inverse_instruction` when the data gives one, else from `TASKS` (built-in
  templates for the common expert tasks, in English and Chinese; `{object}` and the like are
  filled from the edit's `params`). No rule, no instruction.
- **mixed** (edit i -> edit j): undo i, then apply j: "<inverse of i>. <instruction of j>" (in
  Chinese joined with a full-width comma). Only when the two edits are disjoint: their aspect
  sets (what an edit changes: colour, framing, border, content, style, detail, text) do not
  intersect, so undoing one and applying the other commute and the sentence is true. Two colour
  edits (grayscale -> sepia) are not composed: the target is not "the source with its colours
  restored and then sepia".

A pair with no composed instruction is `pending` until a difference caption (the VLM) fills it.
The instruction's language follows the expert instruction's script (Han: Chinese, else English).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ASPECTS", "TASKS", "Task", "aspects_of", "inverse_instruction", "join_steps", "language_of"]

ASPECTS = ("colour", "framing", "border", "content", "style", "detail", "text")


@dataclass(frozen=True)
class Task:
    """A known expert task: the aspects it changes and its inverse instruction per language
    (str.format fields are filled from the edit's params; a missing field means no rule)."""

    aspects: frozenset[str]
    inverse: dict[str, str]


def _task(aspects: str, en: str, zh: str) -> Task:
    return Task(frozenset(aspects.split()), {"en": en, "zh": zh})


TASKS: dict[str, Task] = {
    "grayscale": _task("colour", "Restore the original colours", "恢复原来的色彩"),
    "colour_shift": _task("colour", "Restore the original colours", "恢复原来的色彩"),
    "sepia": _task("colour", "Restore the original colours", "恢复原来的色彩"),
    "brightness": _task("colour", "Restore the original brightness", "恢复原来的亮度"),
    "contrast": _task("colour", "Restore the original contrast", "恢复原来的对比度"),
    "crop_zoom": _task("framing", "Zoom out to show the whole scene", "缩小画面，显示完整的场景"),
    "rotate": _task("framing", "Rotate the image back upright", "把图像转正"),
    "flip": _task("framing", "Flip the image back", "把图像翻转回来"),
    "add_border": _task("border", "Remove the border", "去掉边框"),
    "add_object": _task("content", "Remove the {object}", "移除{object}"),
    "remove_object": _task("content", "Put the {object} back", "把{object}放回去"),
    "replace_object": _task("content", "Replace the {new} with the {object} again", "把{new}换回{object}"),
    "blur": _task("detail", "Sharpen the image", "让图像变清晰"),
    "style_transfer": _task("style", "Make it look like a photograph again", "恢复成照片的风格"),
}


def language_of(text: str | None) -> str:
    """'zh' when Han characters are most of the letters of `text`, else 'en'."""
    if not text:
        return "en"
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and han * 2 >= letters else "en"


def aspects_of(task: str | None, given: list[str] | None = None) -> frozenset[str] | None:
    """The aspects an edit changes: the data's own list, else the task's; None when unknown."""
    if given:
        return frozenset(given)
    known = TASKS.get(task or "")
    return known.aspects if known else None


def inverse_instruction(task: str | None, language: str, params: dict | None = None,
                        given: str | None = None) -> str | None:
    """The instruction that undoes an edit: the data's own, else the task's template filled
    from `params`; None when there is no rule (or a template field has no value)."""
    if given:
        return given
    known = TASKS.get(task or "")
    if known is None:
        return None
    try:
        return known.inverse[language].format(**(params or {}))
    except (KeyError, IndexError):
        return None


def join_steps(first: str, second: str, language: str) -> str:
    """'Undo A, then do B' as one instruction: two sentences in English, one clause pair in
    Chinese."""
    head = first.rstrip(" .。!！")
    if language == "zh":
        return f"{head}，{second}"
    return f"{head}. {second}"
