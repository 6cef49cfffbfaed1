"""Rendered text-editing pairs: known text drawn on a flat region of a background (the source),
the same background drawn again with the edit applied (the target); the instruction is known
by construction. Pure functions: no lake, no Ray.

One pair (`render_pair`), every choice drawn from `numpy.random.default_rng([seed, index])`:

1. The background is resized to `cfg.side` (longer side) and converted to RGB.
2. Text: a sign / menu / notice / street string (`sign_text`, English 1-4 words, Simplified
   Chinese 2-6 characters); Chinese is drawn top-to-bottom (raqm's 'ttb') for
   `cfg.vertical_share` of the texts.
3. Face: one of `cfg.fonts` (+ the files of `cfg.font_dir`) whose cmap (fontTools) has a glyph
   for every character of every text the pair draws; none: "no font has glyphs for ...".
4. Size: the em size is drawn from `cfg.text_height` x the shorter side, capped so that the
   region (ink box measured with `getbbox`, plus `PAD_EM` em on each side) fits the image;
   text that does not fit even at the smallest size: "text does not fit".
5. Place: a grid of candidate regions of that size (every shorter side / `GRID` px, `MARGIN`
   from the edges); a region is flat when the luma standard deviation over it is at most
   `cfg.max_region_std`. Without one the size steps down 15% at a time to the smallest; still
   none: "no flat region". Up to `PLACE_TRIES` flat regions are tried, in a random order, for
   one where the edit's colours exist.
6. Colour: a named colour (`PALETTE`) whose WCAG contrast ratio with the region's mean colour
   is at least `MIN_CONTRAST` (black or white always reaches 4.1); for `OUTLINE_SHARE` of the
   pairs (not `move`) a rectangle of another such colour is drawn around the region in both
   images, and the instruction names it ("the text 'X' inside the blue box").
7. Edit: `change` (another string of the same kind, same face, size, colour and place),
   `recolor` (another readable named colour), `move` (another flat region, in another ninth
   of the image, that does not overlap the first; the instruction names that ninth), `remove`
   (the target is the background without the text).

`verify` reads a pair back with the `ocr` operator's code path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from curation.demo import fonts
from curation.steps.pairs.config import RENDER_EDITS, RenderConfig
from operators import ocr

__all__ = ["LANGUAGES", "PALETTE", "RENDER_VERSION", "TASKS", "Face", "Rejection", "RenderedPair", "cer", "contrast",
           "instruction", "render_pair", "resolve_faces", "sign_text", "verify"]

RENDER_VERSION = "render-1"
LANGUAGES = ("en", "zh")
TASKS = {"change": "text_change", "recolor": "text_recolor", "move": "text_move", "remove": "text_remove"}
PAD_EM = 0.3  # free space around the ink inside its region, em
MARGIN = 0.03  # regions keep this share of the shorter side from the image's edges
GRID = 32  # candidate regions start every (shorter side / GRID) px
MIN_CONTRAST = 3.0  # WCAG contrast ratio (1..21) of a colour with a region's mean colour
OUTLINE_SHARE = 0.3  # share of change / recolor / remove pairs with a box drawn around the text
PLACE_TRIES = 8  # flat regions tried (in a random order) for one whose colours suit the edit
# rng streams of the text generator: default_rng([seed, index, stream, ...]); the layout's rng is
# default_rng([seed, index]). (SeedSequence ignores trailing zeros: [s, i, 2, 0] == [s, i, 2].)
_KIND_STREAM, _TEXT_STREAM = 1, 2


@dataclass(frozen=True)
class Colour:
    """A named colour: English and Chinese name, sRGB 0-255."""

    en: str
    zh: str
    rgb: tuple[int, int, int]


PALETTE = (Colour("black", "黑色", (20, 20, 20)), Colour("white", "白色", (245, 245, 245)),
           Colour("red", "红色", (210, 30, 30)), Colour("blue", "蓝色", (30, 70, 200)),
           Colour("green", "绿色", (20, 140, 50)), Colour("yellow", "黄色", (245, 200, 20)),
           Colour("orange", "橙色", (240, 120, 20)), Colour("purple", "紫色", (120, 40, 160)))

# ninths of the image (row, column) -> name in the instruction
_PLACES = {(0, 0): ("the top left", "左上角"), (0, 1): ("the top", "顶部"), (0, 2): ("the top right", "右上角"),
           (1, 0): ("the left side", "左侧"), (1, 1): ("the centre", "中间"), (1, 2): ("the right side", "右侧"),
           (2, 0): ("the bottom left", "左下角"), (2, 1): ("the bottom", "底部"),
           (2, 2): ("the bottom right", "右下角")}


@dataclass
class RenderedPair:
    """A rendered pair. target_text: None for `remove`; task: a value of `TASKS`; params: what
    was drawn (font, px, colours as rgb and name, region `box` and `target_box` as [x0, y0, x1,
    y1] image px, outline, orientation, edit, seed, index, version)."""

    source: Image.Image
    target: Image.Image
    source_text: str
    target_text: str | None
    instruction: str
    task: str
    language: str
    params: dict


@dataclass
class Rejection:
    """No pair: why (`reason`), with the choices made up to that point (`params`)."""

    reason: str
    params: dict


# ---- texts -------------------------------------------------------------------------------------

_EN_SHOP = (("Fresh", "Golden", "Royal", "Corner", "Green", "Lucky", "Sunny", "Old Town", "Blue Moon", "Happy",
             "Silver", "Harbor"),
            ("Bakery", "Cafe", "Books", "Market", "Pharmacy", "Noodles", "Flowers", "Hardware", "Tea House",
             "Barber", "Deli", "Pizza"))
_EN_MENU = ("Beef Noodles", "Iced Coffee", "Green Tea", "Fried Rice", "Apple Pie", "Fish Tacos", "Tomato Soup",
            "Lemonade", "Dumplings", "Hot Chocolate", "Garlic Bread", "Mango Smoothie", "Chicken Curry",
            "Veggie Burger")
_EN_NOTICE = ("OPEN DAILY", "CLOSED TODAY", "NO PARKING", "STAFF ONLY", "WET FLOOR", "KEEP OUT", "EXIT ONLY",
              "NO SMOKING", "PLEASE WAIT HERE", "OPEN 24 HOURS", "BACK IN 10 MINUTES", "GRAND OPENING",
              "SALE TODAY", "FREE WIFI", "PUSH", "PULL")
_EN_STREET = (("Maple", "Oak", "River", "Market", "Station", "King", "Elm", "Harbor", "Mill", "Church", "Park",
               "Cedar"),
              ("Street", "Road", "Avenue", "Lane", "Way", "Square"))
_ZH_SHOP = (("老王", "幸福", "阳光", "金龙", "百姓", "新华", "好运", "东方", "红星", "天天"),
            ("面馆", "书店", "超市", "药房", "花店", "茶楼", "饭店", "水果店", "理发店", "便利店"))
_ZH_MENU = ("牛肉面", "红烧肉", "宫保鸡丁", "麻婆豆腐", "小笼包", "酸辣汤", "扬州炒饭", "豆浆油条", "煎饺",
            "北京烤鸭", "西湖醋鱼", "蛋炒饭", "珍珠奶茶", "凉皮")
_ZH_NOTICE = ("营业中", "暂停营业", "禁止吸烟", "小心地滑", "请勿停车", "安全出口", "闲人免进", "今日特价",
              "欢迎光临", "请排队", "全场五折", "内有监控", "正在施工", "免费停车")
_ZH_STREET = (("人民", "解放", "中山", "建设", "和平", "长江", "黄河", "朝阳", "文化", "胜利"),
              ("路", "街", "大道", "巷", "北路", "南路"))


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _en_text(kind: int, rng: np.random.Generator) -> str:
    if kind == 0:
        name = f"{_pick(rng, _EN_SHOP[0])} {_pick(rng, _EN_SHOP[1])}"
        return name.upper() if rng.random() < 0.5 else name
    if kind == 1:
        return _pick(rng, _EN_MENU) + (f" {int(rng.integers(2, 20))}.{_pick(rng, ('00', '50', '95'))}"
                                       if rng.random() < 0.3 else "")
    if kind == 2:
        return _pick(rng, _EN_NOTICE)
    street = f"{_pick(rng, _EN_STREET[0])} {_pick(rng, _EN_STREET[1])}"
    return f"{int(rng.integers(1, 200))} {street}" if rng.random() < 0.3 else street


def _zh_text(kind: int, rng: np.random.Generator) -> str:
    if kind == 0:
        return _pick(rng, _ZH_SHOP[0]) + _pick(rng, _ZH_SHOP[1])
    if kind == 1:
        return _pick(rng, _ZH_MENU)
    if kind == 2:
        return _pick(rng, _ZH_NOTICE)
    return _pick(rng, _ZH_STREET[0]) + _pick(rng, _ZH_STREET[1])


def sign_text(language: str, seed: int, index: int, variant: int = 0) -> str:
    """A plausible sign string: a shop sign, menu item (English: sometimes with a price), notice
    or street name (English: 1-4 words; Chinese: 2-6 characters). The kind comes from (seed,
    index); the string from (seed, index, variant), so variants of one index are of one kind
    (the `change` edit's new text is a variant)."""
    kind = int(np.random.default_rng([seed, index, _KIND_STREAM]).integers(4))
    rng = np.random.default_rng([seed, index, _TEXT_STREAM, variant])
    if language == "en":
        return _en_text(kind, rng)
    if language == "zh":
        return _zh_text(kind, rng)
    raise ValueError(f"language {language!r}: choose from {list(LANGUAGES)}")


def _new_text(language: str, seed: int, index: int, old: str) -> str:
    """The first variant of (seed, index) that differs from `old` (ignoring case and spaces)."""
    for variant in range(1, 64):
        text = sign_text(language, seed, index, variant)
        if _norm(text) != _norm(old):
            return text
    raise RuntimeError(f"no second {language} text for index {index}")  # the lists have >= 14 of each kind


# ---- fonts -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Face:
    """A font face: its name (a `curation.demo.fonts` name or the file's name), file, index."""

    name: str
    path: str
    index: int = 0

    def covers(self, text: str) -> bool:
        """Whether the face's cmap has a glyph for every non-space character of `text`."""
        return fonts.file_covers(self.path, self.index, text)

    def at(self, px: int) -> ImageFont.FreeTypeFont:
        """The face at em size `px`, pixels."""
        return _truetype(self.path, self.index, px)


@functools.lru_cache(maxsize=256)
def _truetype(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px, index=index)


def _file_face(spec: str) -> Face:
    """A face from 'path' or 'path:index' (a face of a collection)."""
    path, _, idx = spec.rpartition(":") if spec.rsplit(":", 1)[-1].isdigit() else (spec, "", "")
    if not Path(path).is_file():
        raise ValueError(f"pairs.render.fonts: {spec!r} is neither a face name ({', '.join(fonts.FONT_NAMES)}) "
                         "nor a font file")
    return Face(Path(spec).name, path, int(idx or 0))


@functools.lru_cache(maxsize=16)
def resolve_faces(names: tuple[str, ...], font_dir: str | None = None) -> tuple[tuple[Face, ...], tuple[str, ...]]:
    """(faces, missing): the faces of `names` (face names of `curation.demo.fonts` or font file
    paths, 'path:index' for a face of a collection) then face 0 of every .ttf / .otf / .ttc file
    of `font_dir` (sorted by name); `missing`: the face names this machine lacks (a CJK face
    without its font installed). ValueError for a name that is neither a face nor a file."""
    faces, missing = [], []
    for name in names:
        if name not in fonts.FONT_NAMES:
            faces.append(_file_face(name))
            continue
        try:
            f = fonts.font_file(name)
        except fonts.FontNotFound:
            missing.append(name)
            continue
        faces.append(Face(name, f.path, f.index))
    if font_dir:
        files = sorted(p for p in Path(font_dir).iterdir() if p.suffix.lower() in (".ttf", ".otf", ".ttc"))
        faces += [Face(p.name, str(p), 0) for p in files]
    return tuple(faces), tuple(missing)


# ---- layout ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Style:
    face: Face
    px: int
    vertical: bool

    def ink(self, text: str) -> tuple[int, int, int, int]:
        """Ink box (left, top, right, bottom) of `text` drawn at (0, 0), px."""
        return self.face.at(self.px).getbbox(text, direction="ttb" if self.vertical else None)

    def region(self, texts: list[str]) -> tuple[int, int]:
        """(width, height) of the region holding any of `texts`: the largest ink box plus
        PAD_EM em on each side, px."""
        boxes = [self.ink(t) for t in texts]
        pad = 2 * round(PAD_EM * self.px)
        return max(x1 - x0 for x0, _, x1, _ in boxes) + pad, max(y1 - y0 for _, y0, _, y1 in boxes) + pad


def _px_range(face: Face, texts: list[str], vertical: bool, cfg: RenderConfig,
              size: tuple[int, int]) -> tuple[int, int] | None:
    """(lo, top) em sizes, px: lo, hi = `cfg.text_height` x the shorter side of an image of
    `size`; top = hi lowered until the region of every text (measured with getbbox) fits inside
    the margins; None if even lo does not fit."""
    short = min(size)
    lo, hi = max(6, round(cfg.text_height[0] * short)), max(6, round(cfg.text_height[1] * short))
    room_w, room_h = (s - 2 * _margin(size) for s in size)
    w, h = _Style(face, hi, vertical).region(texts)
    top = min(hi, math.floor(hi * min(room_w / w, room_h / h)))  # glyphs scale ~linearly with px
    while top >= lo:
        w, h = _Style(face, top, vertical).region(texts)
        if w <= room_w and h <= room_h:
            return lo, top
        top -= 1
    return None


def _margin(size: tuple[int, int]) -> int:
    return round(MARGIN * min(size))


def _resized(background: Image.Image, side: int) -> Image.Image:
    """RGB, longer side `side` px (aspect kept)."""
    img = background.convert("RGB")
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


class _Stats:
    """Luma mean and variance of one image over any box in O(1) (integral images of luma and
    luma squared, exact in int64), and mean colours of boxes."""

    def __init__(self, img: Image.Image):
        self._rgb = np.asarray(img)
        luma = np.asarray(img.convert("L"), np.int64)
        self.shape = luma.shape
        self._s1, self._s2 = (np.pad(v, ((1, 0), (1, 0))).cumsum(0).cumsum(1) for v in (luma, luma * luma))

    def regions(self, w: int, h: int, max_std: float, step: int, margin: int) -> np.ndarray:
        """Candidate regions of `w` x `h` px on a grid of `step` px, `margin` px inside the
        edges, whose luma standard deviation (0-255) is <= `max_std`: int array [k, 4] of x0,
        y0, x1, y1 in grid order (rows, then columns)."""
        H, W = self.shape
        xs, ys = np.arange(margin, W - margin - w + 1, step), np.arange(margin, H - margin - h + 1, step)
        y0, x0 = (a.reshape(-1) for a in np.meshgrid(ys, xs, indexing="ij"))

        def box_sum(s):
            return s[y0 + h, x0 + w] - s[y0, x0 + w] - s[y0 + h, x0] + s[y0, x0]

        n = w * h
        variance = (box_sum(self._s2) * n - box_sum(self._s1) ** 2) / (n * n)
        x0, y0 = x0[variance <= max_std ** 2], y0[variance <= max_std ** 2]
        return np.stack([x0, y0, x0 + w, y0 + h], axis=1)

    def colour(self, box) -> np.ndarray:
        """Mean sRGB colour (0-255) of `box` (x0, y0, x1, y1 px)."""
        x0, y0, x1, y1 = box
        return self._rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)


def _place(box, size: tuple[int, int]) -> tuple[int, int]:
    """(row, column) of the ninth of the image holding the box's centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(2, int(3 * cy / size[1])), min(2, int(3 * cx / size[0]))


def _apart(a, b, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


# ---- colour ------------------------------------------------------------------------------------

def _luminance(rgb) -> float:
    """WCAG relative luminance (0..1) of an sRGB colour (0-255 per channel)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(lin @ np.array([0.2126, 0.7152, 0.0722]))


def contrast(a, b) -> float:
    """WCAG contrast ratio (1..21) of two sRGB colours."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _readable(stats: _Stats, boxes: list) -> list[Colour]:
    """Palette colours with contrast >= MIN_CONTRAST against the mean colour of every box."""
    means = [stats.colour(b) for b in boxes]
    return [c for c in PALETTE if all(contrast(c.rgb, m) >= MIN_CONTRAST for m in means)]


# ---- instructions ------------------------------------------------------------------------------

def instruction(language: str, edit: str, text: str, new_text: str | None = None, colour: Colour | None = None,
                place: tuple[int, int] | None = None, outline: Colour | None = None) -> str:
    """The instruction of an edit in the text's language: `new_text` for change, `colour` (the
    new one) for recolor, `place` (row, column of the image's ninth) for move; `outline`: the
    colour of the box drawn around the text, named in the instruction."""
    if language == "en":
        what = f"the text '{text}'" + (f" inside the {outline.en} box" if outline else "")
        return {"change": lambda: f"Change {what} to '{new_text}'",
                "recolor": lambda: f"Change the colour of {what} to {colour.en}",
                "move": lambda: f"Move {what} to {_PLACES[place][0]}",
                "remove": lambda: f"Remove {what}"}[edit]()
    what = (f"{outline.zh}框内的" if outline else "") + f"文字“{text}”"
    return {"change": lambda: f"把{what}改为“{new_text}”",
            "recolor": lambda: f"把{what}的颜色改为{colour.zh}",
            "move": lambda: f"把{what}移到{_PLACES[place][1]}",
            "remove": lambda: f"删除{what}"}[edit]()


# ---- drawing -----------------------------------------------------------------------------------

def _draw(bg: Image.Image, style: _Style, text: str | None, box, colour: Colour | None,
          outline: Colour | None) -> Image.Image:
    """A copy of `bg` with `outline` around `box` and `text` centred in it (None: no text)."""
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    if outline:
        draw.rectangle(list(box), outline=outline.rgb, width=max(2, round(style.px / 16)))
    if text:
        left, top, right, bottom = style.ink(text)
        x = box[0] + ((box[2] - box[0]) - (right - left)) // 2 - left
        y = box[1] + ((box[3] - box[1]) - (bottom - top)) // 2 - top
        draw.text((x, y), text, font=style.face.at(style.px), fill=colour.rgb,
                  direction="ttb" if style.vertical else None)
    return img


# ---- one pair ----------------------------------------------------------------------------------

def render_pair(background: Image.Image, index: int, cfg: RenderConfig, language: str, edit: str, *,
                text: str | None = None, new_text: str | None = None) -> RenderedPair | Rejection:
    """Pair number `index` of `cfg.seed` drawn on `background` (any mode and size): text in
    `language` ('en' | 'zh') and the `edit` (one of RENDER_EDITS) applied. `text` / `new_text`
    replace the generated strings (`new_text`: for `change`). See the module for the steps;
    the same inputs give the same pixels."""
    if language not in LANGUAGES or edit not in RENDER_EDITS:
        raise ValueError(f"language {language!r} / edit {edit!r}: choose from {list(LANGUAGES)} / {list(RENDER_EDITS)}")
    rng = np.random.default_rng([cfg.seed, index])
    params = {"version": RENDER_VERSION, "seed": cfg.seed, "index": index, "language": language, "edit": edit}
    if min(background.size) < cfg.min_background_side:
        return Rejection(f"background {background.width}x{background.height} px: shorter side below "
                         f"{cfg.min_background_side}", params)
    source_text = text or sign_text(language, cfg.seed, index)
    target_text = (new_text or _new_text(language, cfg.seed, index, source_text)) if edit == "change" else None
    drawn = [t for t in (source_text, target_text) if t]
    vertical = language == "zh" and rng.random() < cfg.vertical_share
    params["orientation"] = "vertical" if vertical else "horizontal"
    if vertical and not features.check("raqm"):
        return Rejection("vertical text needs Pillow built with libraqm", params)
    faces, missing = resolve_faces(tuple(cfg.fonts), cfg.font_dir)
    usable = [f for f in faces if all(f.covers(t) for t in drawn)]
    if not usable:
        return Rejection(f"no font has glyphs for {' / '.join(map(repr, drawn))} among "
                         f"{', '.join(f.name for f in faces) or 'no faces'}"
                         + (f" ({', '.join(missing)} not installed)" if missing else ""), params)
    face = _pick(rng, usable)
    bg = _resized(background, cfg.side)
    sizes = _px_range(face, drawn, vertical, cfg, bg.size)
    params["font"] = face.name
    if sizes is None:
        return Rejection(f"text does not fit: {' / '.join(map(repr, drawn))} in a {bg.width}x{bg.height} image "
                         f"at {cfg.text_height[0]} of its shorter side", params)
    lo, top = sizes
    px = round(lo + float(rng.random()) * (top - lo))
    stats = _Stats(bg)
    for size in _px_ladder(px, lo):
        style = _Style(face, size, vertical)
        regions = _regions(stats, style, drawn, cfg, bg.size)
        if len(regions):
            params.update(px=size)
            return _edit(bg, stats, rng, style, regions, source_text, target_text, params)
    w, h = _Style(face, px, vertical).region(drawn)
    return Rejection(f"no flat region: none of {w}x{h} px (or smaller, down to {cfg.text_height[0]} of the shorter "
                     f"side) has luma std <= {cfg.max_region_std}", params)


def _px_ladder(px: int, lo: int) -> list[int]:
    """Em sizes tried for a place, px: `px`, then 15% smaller each step, ending at `lo`."""
    sizes = [px]
    while sizes[-1] > lo:
        sizes.append(max(lo, math.floor(sizes[-1] * 0.85)))
    return sizes


def _regions(stats: _Stats, style: _Style, texts: list[str], cfg: RenderConfig, size: tuple[int, int]) -> np.ndarray:
    """The flat candidate regions for `texts` in `style` ([k, 4] x0, y0, x1, y1 px)."""
    w, h = style.region(texts)
    return stats.regions(w, h, cfg.max_region_std, max(4, min(size) // GRID), _margin(size))


def _boxes(stats: _Stats, rng: np.random.Generator, style: _Style, regions: np.ndarray, edit: str):
    """(box, target box) for `edit`: up to PLACE_TRIES flat regions in a random order, the first
    where the edit's colours exist (recolor: two readable colours; move: a target region apart
    from the box by PAD_EM em, in another ninth of the image, with a colour readable on both);
    None if there is none."""
    size = stats.shape[::-1]
    for i in rng.permutation(len(regions))[:PLACE_TRIES]:
        box = tuple(int(v) for v in regions[i])
        if edit == "move":
            gap = round(PAD_EM * style.px)
            for j in rng.permutation(len(regions)):
                r = tuple(int(v) for v in regions[j])
                if _apart(box, r, gap) and _place(r, size) != _place(box, size) and _readable(stats, [box, r]):
                    return box, r
        elif len(_readable(stats, [box])) >= (2 if edit == "recolor" else 1):
            return box, box
    return None


def _edit(bg: Image.Image, stats: _Stats, rng: np.random.Generator, style: _Style, regions: np.ndarray,
          source_text: str, target_text: str | None, params: dict) -> RenderedPair | Rejection:
    """Place, colours, the optional outline, both images and the instruction of a sized text."""
    edit = params["edit"]
    boxes = _boxes(stats, rng, style, regions, edit)
    if boxes is None:
        need = {"move": "no flat region to move the text to (apart from it, in another ninth of the image, with a "
                        "colour readable on both)", "recolor": "no flat region with two readable colours"}
        return Rejection(f"{need.get(edit, 'no flat region with a readable colour')} (contrast >= {MIN_CONTRAST})",
                         params)
    box, target_box = boxes
    params.update(box=list(box), target_box=list(target_box))
    readable = _readable(stats, [box, target_box])
    colour = new_colour = _pick(rng, readable)
    if edit == "recolor":
        new_colour = _pick(rng, [c for c in readable if c != colour])
    spare = [c for c in readable if c not in (colour, new_colour)]
    outline = _pick(rng, spare) if edit != "move" and spare and rng.random() < OUTLINE_SHARE else None
    params.update(colour=list(colour.rgb), colour_name=colour.en, target_colour=list(new_colour.rgb),
                  target_colour_name=new_colour.en, outline=outline.en if outline else None)
    after = None if edit == "remove" else (target_text or source_text)
    source = _draw(bg, style, source_text, box, colour, outline)
    target = _draw(bg, style, after, target_box, new_colour, outline)
    language = params["language"]
    text = instruction(language, edit, source_text, target_text, new_colour, _place(target_box, bg.size), outline)
    return RenderedPair(source, target, source_text, after, text, TASKS[edit], language, params)


# ---- read-back ---------------------------------------------------------------------------------

def _norm(text: str) -> str:
    """Case-folded, whitespace removed (OCR drops or adds spaces between words and characters)."""
    return "".join(text.split()).casefold()


def cer(read: str, expected: str) -> float:
    """Character error rate of `read` against `expected` after `_norm`: edit distance /
    characters expected (1.0 when nothing was expected and something was read)."""
    a, b = _norm(read), _norm(expected)
    return ocr.edit_distance(a, b) / len(b) if b else float(bool(a))


def _read_in(eng: ocr.OcrEngine, img: Image.Image, box, vertical: bool) -> str:
    """What the `ocr` operator's path reads inside `box` (image px): detection and recognition
    on the operator's view (longer side `ocr.SIDE`, area filter, never upscaled), the lines
    whose box centre lies in `box`, in reading order."""
    view = img.convert("RGB")
    if max(view.size) > ocr.SIDE:
        scale = ocr.SIDE / max(view.size)
        view = view.resize((max(1, round(view.width * scale)), max(1, round(view.height * scale))),
                           Image.Resampling.BOX, reducing_gap=2.0)
    arr = np.asarray(view)
    boxes, read = ocr.read_text(eng, arr, arr)
    centres = boxes.mean(axis=1) * np.array([img.width / view.width, img.height / view.height])
    x0, y0, x1, y1 = box
    inside = [(c[1] if vertical else c[0], t) for c, (t, _) in zip(centres, read)
              if x0 <= c[0] <= x1 and y0 <= c[1] <= y1]
    return "".join(t for _, t in sorted(inside))


def verify(pair: RenderedPair, engine: ocr.OcrEngine | None = None, max_cer: float = 0.0) -> str | None:
    """OCR read-back of a pair (`engine`: default the process's `ocr.engine()`): the target's
    text must read back at its place with a character error rate <= max_cer (for `text_remove`:
    nothing may read back where the text was), then the source's text. None when both pass,
    else the first failure, e.g. "ocr: target read 'CL0SED' for 'CLOSED' (cer 0.17)".

    Vertical Chinese: detection finds the column as one box, and the crop (taller than 1.5x its
    width) is turned 90 degrees before recognition, which reads it in order; on a flat
    background 59 of 60 generated strings read back exactly in each orientation (the miss, in
    both: the detached top of 今 in 今日特价). `benchmarks/pairs_render_bench.py` measures the
    share on photos.
    """
    eng = engine or ocr.engine()
    vertical = pair.params["orientation"] == "vertical"
    if pair.target_text is None:
        got = _read_in(eng, pair.target, pair.params["box"], vertical)
        if got:
            return f"ocr: target reads {got!r} where {pair.source_text!r} was removed"
    else:
        got = _read_in(eng, pair.target, pair.params["target_box"], vertical)
        if cer(got, pair.target_text) > max_cer:
            return f"ocr: target read {got!r} for {pair.target_text!r} (cer {cer(got, pair.target_text):.2f})"
    got = _read_in(eng, pair.source, pair.params["box"], vertical)
    if cer(got, pair.source_text) > max_cer:
        return f"ocr: source read {got!r} for {pair.source_text!r} (cer {cer(got, pair.source_text):.2f})"
    return None
