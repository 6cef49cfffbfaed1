"""Fonts for rendering known text (demo corpus, OCR tests and benchmark, the text renderer).

One lookup, so every renderer draws with the same faces on every machine:

- **Latin**: the DejaVu faces that matplotlib (a main dependency) ships in its wheel
  (`matplotlib/mpl-data/fonts/ttf/`): sans, sans-bold, serif, mono. No system font is needed.
- **Simplified Chinese** (`cjk-sans`, `cjk-mono`): Noto Sans CJK, SIL Open Font License 1.1, in
  this order:
    1. `CURATE_CJK_FONT=/path/font.ttc[:face index]` (a font of your choice);
    2. the `noto-cjk-sans-otc` wheel (a dependency of this project: `NotoSansCJK-Regular.ttc`,
       the same collection Debian ships, 19 MB; face 2 = Noto Sans CJK SC, 7 = Mono SC);
    3. the system's Noto Sans CJK (Debian / Ubuntu: `apt-get install fonts-noto-cjk`, found at
       its usual paths or through fontconfig's `fc-match :lang=zh-cn`).
  A face is used only if it has glyphs for every character of `CJK_PROBE`; without one,
  `cjk_available()` is False and `font("cjk-sans", ...)` raises `FontNotFound` naming the fixes.

`font(name, px)` returns a cached `PIL.ImageFont.FreeTypeFont`; `font_file(name)` the path and
face index (for fontTools or another renderer); `covers(name, text)` says whether a face has a
glyph for every character of `text` (so a renderer never draws tofu boxes), `file_covers(path,
index, text)` the same for any font file.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

CJK_PROBE = "松鼠鳜鱼中文测试欢迎光临"  # characters a usable Simplified Chinese face must have
LATIN_FACES = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf",
               "serif": "DejaVuSerif.ttf", "mono": "DejaVuSansMono.ttf"}
CJK_FACES = {"cjk-sans": 2, "cjk-mono": 7}  # face index in NotoSansCJK-Regular.ttc (SC, Mono SC)
FONT_NAMES = (*LATIN_FACES, *CJK_FACES)
_SYSTEM_CJK = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
               "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
               "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc")


class FontNotFound(LookupError):
    """No font file for a face name (the message says how to get one)."""


@dataclass(frozen=True)
class FontFile:
    """A face: its file and its index inside a collection (.ttc), with where it came from."""

    path: str
    index: int = 0
    origin: str = ""


@functools.lru_cache(maxsize=64)
def _codepoints(path: str, index: int) -> frozenset[int]:
    """The code points face `index` of `path` maps (empty if the file cannot be read)."""
    try:
        from fontTools.ttLib import TTFont

        with TTFont(path, fontNumber=index, lazy=True) as f:
            return frozenset(f.getBestCmap() or {})
    except Exception:  # unreadable file, bad index: not usable
        return frozenset()


def _has_glyphs(path: str, index: int, text: str) -> bool:
    cmap = _codepoints(path, index)
    return bool(cmap) and all(ord(ch) in cmap for ch in text if not ch.isspace())


def _latin_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _cjk_candidates():
    env = os.environ.get("CURATE_CJK_FONT")
    if env:
        path, _, idx = env.rpartition(":") if env.rsplit(":", 1)[-1].isdigit() else (env, "", "")
        yield path, int(idx) if idx else None, "CURATE_CJK_FONT"
    try:
        import noto_cjk_sans_otc

        yield str(noto_cjk_sans_otc.FONT_PATH), None, "noto-cjk-sans-otc wheel"
    except ImportError:
        pass
    for path in _SYSTEM_CJK:
        if os.path.exists(path):
            yield path, None, "system font"
    if shutil.which("fc-match"):
        try:
            out = subprocess.run(["fc-match", "-f", "%{file}:%{index}", ":lang=zh-cn"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and ":" in out:
            path, _, idx = out.rpartition(":")
            yield path, int(idx) if idx.isdigit() else 0, "fontconfig"


@functools.lru_cache(maxsize=None)
def font_file(name: str) -> FontFile:
    """The file (and face index) of face `name` (one of `FONT_NAMES`); FontNotFound otherwise."""
    if name in LATIN_FACES:
        path = _latin_dir() / LATIN_FACES[name]
        if not path.exists():
            raise FontNotFound(f"{path} is missing: matplotlib's bundled DejaVu fonts are needed")
        return FontFile(str(path), 0, "matplotlib")
    if name not in CJK_FACES:
        raise FontNotFound(f"unknown font {name!r}; known: {', '.join(FONT_NAMES)}")
    for path, index, origin in _cjk_candidates():
        # a Noto CJK collection: SC (or Mono SC) face; another font: the index given, else 0
        wanted = index if index is not None else (CJK_FACES[name] if path.endswith("NotoSansCJK-Regular.ttc") else 0)
        if os.path.exists(path) and _has_glyphs(path, wanted, CJK_PROBE):
            return FontFile(path, wanted, origin)
    raise FontNotFound("no Simplified Chinese font found: `pip install noto-cjk-sans-otc` (a dependency of "
                       "this project), or `apt-get install fonts-noto-cjk`, or set CURATE_CJK_FONT=/path/font.ttc[:index]")


def cjk_available() -> bool:
    """True if a Simplified Chinese face is installed (see the module docstring)."""
    try:
        font_file("cjk-sans")
        return True
    except FontNotFound:
        return False


@functools.lru_cache(maxsize=256)
def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    """Face `name` at `px` pixels (the em size); cached."""
    f = font_file(name)
    return ImageFont.truetype(f.path, int(px), index=f.index)


def covers(name: str, text: str) -> bool:
    """Whether face `name` has a glyph for every non-space character of `text`."""
    f = font_file(name)
    return _has_glyphs(f.path, f.index, text)


def file_covers(path: str, index: int, text: str) -> bool:
    """Whether face `index` of the font file `path` (any .ttf / .otf / .ttc) has a glyph for every
    non-space character of `text` (False for a file fontTools cannot read)."""
    return _has_glyphs(path, index, text)
