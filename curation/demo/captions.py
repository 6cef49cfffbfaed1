"""Short generated captions (English + Chinese) and tags from a small, skewed vocabulary.

Subjects follow a Zipf-like distribution (a few concepts are common, most are rare) so that
concept balancing downstream has something to correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# (english, chinese) pairs
SUBJECTS = [
    ("dog", "狗"), ("cat", "猫"), ("car", "汽车"), ("mountain", "山"), ("beach", "海滩"),
    ("city skyline", "城市天际线"), ("flower", "花"), ("horse", "马"), ("bird", "鸟"),
    ("bicycle", "自行车"), ("sailing boat", "帆船"), ("train", "火车"), ("forest", "森林"),
    ("bridge", "桥"), ("lighthouse", "灯塔"), ("waterfall", "瀑布"), ("cake", "蛋糕"),
    ("coffee cup", "咖啡杯"), ("castle", "城堡"), ("robot", "机器人"), ("tree", "树"),
    ("house", "房子"), ("owl", "猫头鹰"), ("teapot", "茶壶"),
]
COLOURS = [("red", "红色的"), ("blue", "蓝色的"), ("green", "绿色的"), ("yellow", "黄色的"),
           ("white", "白色的"), ("black", "黑色的"), ("orange", "橙色的"), ("purple", "紫色的")]
ADJECTIVES = ["small", "large", "old", "shiny", "cozy", "majestic", "colorful", "quiet"]
SETTINGS = [("at sunset", "日落时"), ("in the snow", "雪中"), ("on a busy street", "繁忙的街道上"),
            ("in a park", "公园里"), ("under a cloudy sky", "多云的天空下"), ("at night", "夜晚"),
            ("in the desert", "沙漠中"), ("by the sea", "海边"), ("in a studio", "摄影棚里")]
STYLES = [("photo", "照片"), ("watercolor painting", "水彩画"), ("oil painting", "油画"),
          ("digital illustration", "数字插画"), ("pencil sketch", "铅笔素描"), ("3d render", "三维渲染")]
_STYLE_P = np.array([0.55, 0.1, 0.1, 0.12, 0.06, 0.07])
_SUBJECT_P = 1.0 / np.arange(1, len(SUBJECTS) + 1) ** 1.1
_SUBJECT_P /= _SUBJECT_P.sum()


@dataclass
class Caption:
    """One generated caption: English text, Chinese text and tags (lower-case words)."""

    en: str
    zh: str
    tags: list[str] = field(default_factory=list)


def make_caption(rng: np.random.Generator) -> Caption:
    """A short caption like "A photo of a small red dog at sunset." with its tags."""
    s_en, s_zh = SUBJECTS[int(rng.choice(len(SUBJECTS), p=_SUBJECT_P))]
    c_en, c_zh = COLOURS[int(rng.integers(len(COLOURS)))]
    st_en, st_zh = STYLES[int(rng.choice(len(STYLES), p=_STYLE_P))]
    set_en, set_zh = SETTINGS[int(rng.integers(len(SETTINGS)))]
    adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
    words = [w for w in (adj, c_en, s_en) if rng.random() < 0.8 or w == s_en]
    noun = " ".join(words)
    article = "an" if noun[0] in "aeiou" else "a"
    en = f"A {st_en} of {article} {noun} {set_en}."
    zh = f"一张{st_zh}：{set_zh}的{c_zh}{s_zh}。"
    tags = [s_en, c_en, st_en, set_en.split()[-1]]
    return Caption(en=en, zh=zh, tags=tags)


def long_caption(rng: np.random.Generator, n_chars: int = 20_000) -> str:
    """A run-on caption of exactly `n_chars` characters, made of generated sentences."""
    parts: list[str] = []
    total = 0
    while total < n_chars:
        parts.append(make_caption(rng).en)
        total += len(parts[-1]) + 1
    return " ".join(parts)[:n_chars]
