"""The text renderer of edit pairs (`curation.steps.pairs.render`): every edit in English and
Chinese on procedural backgrounds, OCR read-back, vertical Chinese, glyph coverage, rejections,
determinism. No Ray, no lake."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from curation.demo import fonts
from curation.steps.pairs.config import RENDER_EDITS, RenderConfig
from curation.steps.pairs.render import (
    PALETTE,
    TASKS,
    Rejection,
    RenderedPair,
    cer,
    instruction,
    render_pair,
    resolve_faces,
    sign_text,
    verify,
)

CFG = RenderConfig()


def _background(seed: int = 0, width: int = 1000, height: int = 700) -> Image.Image:
    """Strong noise in the bottom third, a flat colour with a gentle gradient above it."""
    rng = np.random.default_rng(seed)
    arr = np.empty((height, width, 3), np.float32)
    top = round(0.66 * height)
    ramp = np.linspace(0, 12, width, dtype=np.float32)[None, :, None]
    arr[:top] = np.array([90, 140, 190], np.float32) + ramp
    arr[top:] = rng.uniform(0, 255, (height - top, width, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _noise(seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (600, 800, 3), dtype=np.uint8))


def _first_pair(language: str, edit: str, cfg: RenderConfig = CFG, start: int = 0) -> RenderedPair:
    """The first index from `start` that renders (the background has room for every text)."""
    for index in range(start, start + 20):
        pair = render_pair(_background(), index, cfg, language, edit)
        if isinstance(pair, RenderedPair):
            return pair
    raise AssertionError(f"no {language} {edit} pair in 20 indices: {pair.reason}")


def _changed_outside(pair: RenderedPair) -> int:
    """Pixels that differ between source and target outside the text's region(s)."""
    diff = np.any(np.asarray(pair.source) != np.asarray(pair.target), axis=2)
    for x0, y0, x1, y1 in (pair.params["box"], pair.params["target_box"]):
        diff[y0:y1 + 1, x0:x1 + 1] = False
    return int(diff.sum())


@pytest.fixture(scope="module")
def pairs() -> dict[tuple[str, str], RenderedPair]:
    return {(lang, edit): _first_pair(lang, edit) for lang in ("en", "zh") for edit in RENDER_EDITS}


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("edit", RENDER_EDITS)
def test_each_edit_draws_its_pair_and_instruction(pairs, language, edit):
    pair = pairs[language, edit]
    p, src, tgt = pair.params, pair.source_text, pair.target_text
    assert pair.task == TASKS[edit] and pair.language == language and p["edit"] == edit
    assert pair.source.size == pair.target.size and max(pair.source.size) == CFG.side
    assert p["version"] and p["seed"] == CFG.seed and p["px"] >= round(CFG.text_height[0] * min(pair.source.size))
    box = r"(?: inside the \w+ box)?" if language == "en" else r"(?:\w{2}框内的)?"
    expected = {
        ("en", "change"): fr"Change the text '{re.escape(src)}'{box} to '{re.escape(tgt or '')}'",
        ("en", "recolor"): fr"Change the colour of the text '{re.escape(src)}'{box} to {p['target_colour_name']}",
        ("en", "move"): fr"Move the text '{re.escape(src)}' to the (top|bottom|left|right|centre|top left|top right|"
                        r"bottom left|bottom right|left side|right side)",
        ("en", "remove"): fr"Remove the text '{re.escape(src)}'{box}",
        ("zh", "change"): fr"把{box}文字“{src}”改为“{tgt}”",
        ("zh", "recolor"): fr"把{box}文字“{src}”的颜色改为\w{{2}}",
        ("zh", "move"): fr"把文字“{src}”移到(左上角|顶部|右上角|左侧|中间|右侧|左下角|底部|右下角)",
        ("zh", "remove"): fr"删除{box}文字“{src}”",
    }[language, edit]
    assert re.fullmatch(expected, pair.instruction), pair.instruction
    if edit == "change":
        assert tgt and tgt != src
    if edit == "recolor":
        assert tgt == src and p["target_colour"] != p["colour"]
    if edit == "move":
        assert tgt == src and p["target_box"] != p["box"]
    if edit == "remove":
        assert tgt is None
    # the images differ, and only where the text is (or was, or went)
    assert np.any(np.asarray(pair.source) != np.asarray(pair.target))
    assert _changed_outside(pair) == 0


def test_instruction_wording():
    red, blue = (next(c for c in PALETTE if c.en == name) for name in ("red", "blue"))
    assert instruction("en", "change", "OPEN DAILY", "CLOSED TODAY") == "Change the text 'OPEN DAILY' to 'CLOSED TODAY'"
    assert instruction("en", "recolor", "X", colour=red) == "Change the colour of the text 'X' to red"
    assert instruction("en", "move", "X", place=(0, 0)) == "Move the text 'X' to the top left"
    assert instruction("en", "remove", "X", outline=blue) == "Remove the text 'X' inside the blue box"
    assert instruction("zh", "change", "营业中", "暂停营业") == "把文字“营业中”改为“暂停营业”"
    assert instruction("zh", "recolor", "X", colour=red) == "把文字“X”的颜色改为红色"
    assert instruction("zh", "move", "X", place=(0, 0)) == "把文字“X”移到左上角"
    assert instruction("zh", "remove", "X") == "删除文字“X”"
    assert instruction("zh", "change", "X", "Y", outline=blue) == "把蓝色框内的文字“X”改为“Y”"


def test_an_outline_is_drawn_in_both_images_when_the_instruction_names_it():
    cfg = RenderConfig(edits=["change"])
    pairs = (render_pair(_background(), index, cfg, "en", "change") for index in range(40))
    pair = next((p for p in pairs if isinstance(p, RenderedPair) and p.params["outline"]), None)
    assert pair, "no pair with an outline in 40"
    x0, y0, x1, y1 = pair.params["box"]
    rgb = next(c.rgb for c in PALETTE if c.en == pair.params["outline"])
    assert f"inside the {pair.params['outline']} box" in pair.instruction
    for img in (pair.source, pair.target):
        assert img.getpixel((x0, (y0 + y1) // 2)) == rgb and img.getpixel(((x0 + x1) // 2, y1)) == rgb


def test_text_reads_back_with_ocr(pairs):
    for key in (("en", "change"), ("en", "move"), ("zh", "recolor"), ("zh", "remove")):
        assert verify(pairs[key]) is None, key


def test_a_wrong_text_fails_the_read_back(pairs):
    pair = pairs["en", "change"]
    wrong = replace(pair, target_text=pair.target_text + "XYZ")
    reason = verify(wrong)
    assert reason.startswith("ocr: target read ") and "(cer 0." in reason
    assert verify(replace(pair, task="text_remove", target_text=None, target=pair.source)).startswith(
        "ocr: target reads ")


def test_vertical_chinese_is_drawn_top_to_bottom_and_reads_back():
    pair = _first_pair("zh", "recolor", RenderConfig(vertical_share=1.0))
    x0, y0, x1, y1 = pair.params["box"]
    assert pair.params["orientation"] == "vertical" and y1 - y0 > 1.5 * (x1 - x0)
    assert _changed_outside(pair) == 0 and verify(pair) is None
    assert all(_first_pair("en", "change", RenderConfig(vertical_share=1.0), i).params["orientation"] == "horizontal"
               for i in (0, 5))


def test_a_face_without_the_glyphs_is_not_used():
    mixed = RenderConfig(fonts=["sans", "serif", "cjk-sans"])
    assert {render_pair(_background(), i, mixed, "zh", "remove").params["font"] for i in range(8)} == {"cjk-sans"}
    latin_only = RenderConfig(fonts=["sans"])
    rejected = render_pair(_background(), 0, latin_only, "zh", "remove")
    assert isinstance(rejected, Rejection) and rejected.reason.startswith("no font has glyphs for ")
    assert isinstance(render_pair(_background(), 0, latin_only, "en", "remove"), RenderedPair)


def test_font_files_and_font_dir(tmp_path):
    path = fonts.font_file("serif").path
    shutil.copy(path, tmp_path / "MySerif.ttf")
    faces, missing = resolve_faces(("sans", path), str(tmp_path))
    assert [f.name for f in faces] == ["sans", "DejaVuSerif.ttf", "MySerif.ttf"] and missing == ()
    pair = render_pair(_background(), 0, RenderConfig(fonts=[], font_dir=str(tmp_path)), "en", "change")
    assert pair.params["font"] == "MySerif.ttf"
    with pytest.raises(ValueError, match="neither a face name"):
        resolve_faces(("no-such-face",))


def test_no_flat_region_is_a_rejection():
    rejected = render_pair(_noise(), 0, CFG, "en", "change")
    assert isinstance(rejected, Rejection) and rejected.reason.startswith("no flat region")


def test_text_that_does_not_fit_is_a_rejection():
    text = "An Extraordinarily Long Shop Sign That Cannot Fit"
    rejected = render_pair(_background(), 0, CFG, "en", "recolor", text=text)
    assert isinstance(rejected, Rejection) and rejected.reason.startswith("text does not fit")
    assert isinstance(render_pair(_background(), 0, CFG, "en", "recolor", text="FREE WIFI"), RenderedPair)


def test_small_backgrounds_are_rejected():
    rejected = render_pair(_background(width=300, height=200), 0, CFG, "en", "remove")
    assert isinstance(rejected, Rejection) and "shorter side below" in rejected.reason


def test_same_seed_and_index_give_the_same_bytes():
    a, b = (render_pair(_background(), 3, CFG, "zh", "move") for _ in range(2))
    assert a.source.tobytes() == b.source.tobytes() and a.target.tobytes() == b.target.tobytes()
    assert a.params == b.params and a.instruction == b.instruction
    other = render_pair(_background(), 3, RenderConfig(seed=1), "zh", "move")
    assert other.params != a.params


def test_sign_texts():
    for language, unit, lo, hi in (("en", lambda t: len(t.split()), 1, 4), ("zh", len, 2, 6)):
        texts = [sign_text(language, 0, i) for i in range(200)]
        assert texts == [sign_text(language, 0, i) for i in range(200)]
        assert len(set(texts)) > 60 and all(lo <= unit(t) <= hi for t in texts), texts
        assert all(fonts.covers("cjk-sans", t) for t in texts)
    assert all(fonts.covers("sans", sign_text("en", 0, i)) for i in range(200))
    assert sign_text("en", 0, 7, 1) != sign_text("en", 0, 7)


def test_cer():
    assert cer("Open  daily", "OPEN DAILY") == 0.0
    assert cer("CL0SED", "CLOSED") == pytest.approx(1 / 6)
    assert cer("", "营业中") == 1.0 and cer("", "") == 0.0
