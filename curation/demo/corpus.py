"""Benchmark JPEG sets and the planted demo corpus.

`make_demo_corpus` writes a folder tree of images with caption sidecars and records exactly
what was planted where (`CorpusInfo`), so tests and the demo can check what the pipeline finds.
Every base image i draws from its own generator seeded by ``(seed, i)``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curation.demo import fonts
from curation.demo.captions import make_caption
from curation.demo.images import (
    DEFECTS, NEAR_DUPLICATE_MAKERS, encode, phash_bits, photo_like, save_image,
)
from curation.demo.oddities import (
    BAD_WRITERS, CAPTION_WRITERS, DEFAULT_NAMES, SPECIAL_WRITERS,
)
from curation.demo.text import sign_image

_ASPECTS = (1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 9)


def _size(rng: np.random.Generator, pixels: float | None = None,
          long_range: tuple[int, int] = (512, 1024), min_short: int = 384) -> tuple[int, int]:
    """(width, height) in px from a common aspect ratio, ~30% portrait; `pixels` fixes the area."""
    aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    if pixels is not None:
        long = math.sqrt(pixels * aspect)
        short = long / aspect
    else:
        long = rng.integers(long_range[0], long_range[1] + 1)
        short = max(min_short, long / aspect)
    w, h = round(long), round(short)
    return (h, w) if rng.random() < 0.3 else (w, h)


def write_jpegs(out_dir: Path, n: int, megapixels: tuple[float, float] = (1.0, 2.0), seed: int = 0,
                quality: int = 90) -> list[Path]:
    """Write n photo-like JPEGs ``img_000000.jpg`` ... of 1-2 MP (megapixels = 1e6 px) each.

    Image i depends only on (seed, i), not on n. ~25 ms per 1.5 MP image on one core
    (generation ~20 ms, encoding ~5 ms); ~300 KB each at quality 90.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        w, h = _size(rng, pixels=rng.uniform(*megapixels) * 1e6)
        paths.append(save_image(photo_like(rng, w, h), out_dir / f"img_{i:06d}.jpg", quality))
    return paths


@dataclass
class CorpusInfo:
    """What `make_demo_corpus` wrote. Paths in the dicts are POSIX paths relative to `root`.

    files: every image-named file (bad ones included), absolute, sorted.
    planted: category -> image paths (see `make_demo_corpus` for the categories).
    near_duplicate_groups: [original, copy, ...] per group (pHash within 3 bits of the original).
    exact_duplicates: [original, byte-identical copy] per pair.
    bad_files: kind -> path of a file that must be rejected (see `oddities.BAD_WRITERS`).
    captions: image path -> caption text written beside it ("" for an empty sidecar, None when
    there is no sidecar or it is not valid UTF-8); JSON sidecars give their "caption".
    texts: image path -> the lines of text drawn into it (the planted `text` images), top to bottom.
    """

    root: Path
    files: list[Path]
    planted: dict[str, list[str]]
    near_duplicate_groups: list[list[str]]
    exact_duplicates: list[list[str]]
    bad_files: dict[str, str]
    captions: dict[str, str | None] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable form (paths as strings)."""
        d = asdict(self)
        d["root"] = str(self.root)
        d["files"] = [str(p) for p in self.files]
        return d


FOLDERS = ["photos/2021", "photos/2022/summer trip", "photos/2022/winter", "scans",
           "web/downloads", "données/été", "misc", "incoming/batch 01"]
UNICODE_STEMS = ["café 東京", "Straße am Meer", "naïve photo (1)", "my holiday pic", "日本語のファイル"]
_NAME_STYLES = ["IMG_{:04d}", "DSC{:05d}", "img-{:03d}", "photo_{}"]
_JPEG_EXTS = [".jpg"] * 6 + [".jpeg", ".JPG"]
_FORCED_EXT = {"blocky": ".jpg", "grayscale": ".jpg", "cmyk": ".jpg", "exif_rotated": ".jpg",
               "palette_transparency": ".png", "rgba": ".png", "png16": ".png",
               "animated_gif": ".gif", "animated_webp": ".webp"}
_CORPUS_SPECIALS = [k for k in SPECIAL_WRITERS if k not in ("exif_rotated", "tiny_1x1")]
_BAD_FOLDERS = {"empty": "incoming/batch 01", "truncated": "photos/2021", "random_bytes": "web/downloads",
                "html_as_png": "web/downloads", "text_as_webp": "misc", "unsupported_format": "scans",
                "huge_header": "misc", "tiny_1x1": "misc"}
N_NEAR_DUP_GROUPS, N_EXACT_DUPS, N_EXIF = 8, 3, 3
# The planted `text` images (signs on photo-like pictures, for OCR): (folder, stem, lines).
TEXT_SIGNS = [
    ("photos/2022/summer trip", "IMG_sign_01", ["FRESH COFFEE", "Open Daily"]),
    ("web/downloads", "menu-board", ["松鼠鳜鱼", "欢迎光临"]),
    ("photos/2021", "DSC_street", ["Welcome to the Lake"]),
    ("misc", "海报", ["中文测试"]),
]
NEAR_DUP_MAX_BITS = 3  # planted copies are checked (decoded) to be within this pHash distance


def _roles(n: int, defect_rate: float) -> list[tuple[str, str]]:
    """(role, what) for each base image; defects shrink (to >= 1 each) when n is small."""
    fixed = [("special", s) for s in _CORPUS_SPECIALS] + [("special", "exif_rotated")] * N_EXIF
    fixed += [("near_dup", "")] * N_NEAR_DUP_GROUPS + [("exact_dup", "")] * N_EXACT_DUPS
    if n < len(fixed) + len(DEFECTS):
        raise ValueError(f"n_images must be at least {len(fixed) + len(DEFECTS)}, got {n}")
    k = max(1, min(round(defect_rate * n), (n - len(fixed)) // len(DEFECTS)))
    roles = [("defect", d) for d in DEFECTS for _ in range(k)] + fixed
    return roles + [("clean", "")] * (n - len(roles))


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _near_dup_group(rng, w, h, fmt, kinds):
    """An original and its copies whose decoded pHashes are within NEAR_DUP_MAX_BITS."""
    for _ in range(20):
        img = photo_like(rng, w, h)
        data = encode(img, fmt)
        copies = [(kind, NEAR_DUPLICATE_MAKERS[kind](img, rng)) for kind in kinds]
        blobs = [encode(c, "JPEG" if kind != "resized" else fmt) for kind, c in copies]
        orig = phash_bits(_decode(data))
        if all(np.count_nonzero(orig != phash_bits(_decode(b))) <= NEAR_DUP_MAX_BITS for b in blobs):
            return data, blobs
    raise RuntimeError("could not plant a near-duplicate group")  # pragma: no cover


def make_demo_corpus(out_dir: Path, n_images: int = 120, seed: int = 0,
                     defect_rate: float = 0.06) -> CorpusInfo:
    """Write a planted demo corpus of `n_images` base images (384-1024 px) plus extra files.

    Base images (n_images >= 29): ``round(defect_rate * n)`` per defect in `DEFECTS` (fewer,
    but at least one, when n is too small for that), i.e. blur, noise, frame, flat,
    color_cast, blocky, low_res, extreme_aspect), one each of grayscale, palette_transparency,
    rgba, png16, cmyk, animated_gif, animated_webp, three exif_rotated (orientation 6), 8
    near-duplicate originals, 3 exact-duplicate originals, the rest clean. Extra files: 12
    near-duplicate copies (4 pairs, 4 triples; resized 0.6x / JPEG q60 / 2% crop), 3
    byte-identical copies, a 1x1 PNG, the 7 bad files of `BAD_WRITERS` and the 4 `text` images
    of `TEXT_SIGNS` (English and Chinese lines on a sign, `CorpusInfo.texts`; Chinese needs the
    CJK font of `curation.demo.fonts`, without one those lines are written in English). Formats: ~72%
    JPEG (.jpg/.jpeg/.JPG), ~12% PNG, ~16% WebP. Sidecars: ``x.txt`` (English) for most,
    ~15% ``x.json`` {caption, caption_zh, tags, source_url}, a few Chinese ``.txt``, ~5%
    none, plus one empty, one invalid-UTF-8 and one 20,000-character ``.txt``.
    `out_dir` should be empty or absent. ~3 s for 120 images (~16 MB) on one core.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1 << 30])  # layout; base image i uses (seed, i)
    roles = _roles(n_images, defect_rate)
    role_of = [roles[j] for j in np.argsort(rng.permutation(n_images))]
    picks = [int(i) for i in rng.choice(n_images, len(UNICODE_STEMS) + len(CAPTION_WRITERS), replace=False)]
    unicode_stem = dict(zip(picks, UNICODE_STEMS))
    n_json, n_zh, n_none = round(0.15 * n_images), max(2, round(0.03 * n_images)), max(2, round(0.05 * n_images))
    odd_caps = dict(zip(picks[len(UNICODE_STEMS):], CAPTION_WRITERS))
    others = [i for i in range(n_images) if i not in odd_caps]
    kinds = ["json"] * n_json + ["zh"] * n_zh + ["none"] * n_none
    kinds += ["txt"] * (len(others) - len(kinds))
    cap_kind = {i: str(k) for i, k in zip(others, rng.permutation(kinds))} | odd_caps

    planted: dict[str, list[str]] = {}
    captions: dict[str, str | None] = {}
    groups: list[list[str]] = []
    exact: list[list[str]] = []
    files: list[Path] = []

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    def sidecar(img_path: Path, kind: str, r: np.random.Generator, url_id: int) -> None:
        cap = make_caption(r)
        key = rel(img_path)
        if kind in CAPTION_WRITERS:
            CAPTION_WRITERS[kind](img_path.with_suffix(".txt"), r)
            text = img_path.with_suffix(".txt").read_bytes()
            captions[key] = None if kind == "caption_invalid_utf8" else text.decode()
            planted.setdefault(kind, []).append(key)
            return
        if kind == "none":
            captions[key] = None
            planted.setdefault("caption_missing", []).append(key)
            return
        if kind == "json":
            doc = {"caption": cap.en, "caption_zh": cap.zh, "tags": cap.tags,
                   "source_url": f"https://images.example.com/{url_id:06d}.jpg"}
            img_path.with_suffix(".json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            planted.setdefault("caption_json", []).append(key)
            captions[key] = cap.en
            return
        text = cap.zh if kind == "zh" else cap.en
        if kind == "zh":
            planted.setdefault("caption_zh", []).append(key)
        img_path.with_suffix(".txt").write_text(text, encoding="utf-8")
        captions[key] = text

    for i in range(n_images):
        r = np.random.default_rng([seed, i])
        role, what = role_of[i]
        fi = int(r.integers(len(FOLDERS)))
        ext = [_JPEG_EXTS[int(r.integers(len(_JPEG_EXTS)))], ".png", ".webp"][int(r.choice(3, p=[0.72, 0.12, 0.16]))]
        ext = _FORCED_EXT.get(what, ext)
        stem = unicode_stem.get(i, _NAME_STYLES[fi % len(_NAME_STYLES)].format(i))
        path = root / FOLDERS[fi] / (stem + ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        animated = what in ("animated_gif", "animated_webp")
        w, h = _size(r, long_range=(384, 512) if animated else (512, 1024))
        fmt = {".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}.get(ext.lower(), "JPEG")
        if role == "near_dup":
            g = len(groups)
            kinds_g = [list(NEAR_DUPLICATE_MAKERS)[(g + j) % 3] for j in range(1 + g % 2)]
            data, blobs = _near_dup_group(r, w, h, fmt, kinds_g)
            path.write_bytes(data)
            group = [rel(path)]
            for kind, blob in zip(kinds_g, blobs):
                cfold = FOLDERS[(fi + 1 + int(r.integers(len(FOLDERS) - 1))) % len(FOLDERS)]
                cname = {"resized": f"thumb_{i:04d}{ext}", "recompressed": f"IMG_{i:04d} (copy).jpg",
                         "cropped": f"edit_{i:04d}.jpg"}[kind]
                cpath = root / cfold / cname
                cpath.parent.mkdir(parents=True, exist_ok=True)
                cpath.write_bytes(blob)
                files.append(cpath)
                sidecar(cpath, "txt", np.random.default_rng([seed, i]), i)  # same caption as original
                group.append(rel(cpath))
                planted.setdefault("near_duplicate_copies", []).append(rel(cpath))
            groups.append(group)
        else:
            img = photo_like(r, w, h)
            if role == "defect":
                save_image(DEFECTS[what](img, r), path)
            elif role == "special":
                SPECIAL_WRITERS[what](path, img)
            else:
                save_image(img, path)
        files.append(path)
        planted.setdefault(what or "clean", []).append(rel(path))
        if i in unicode_stem:
            planted.setdefault("unicode_names", []).append(rel(path))
        sidecar(path, cap_kind[i], np.random.default_rng([seed, i]), i)
        if role == "exact_dup":
            cpath = root / FOLDERS[(fi + 3) % len(FOLDERS)] / f"saved_image_{i:03d}{ext}"
            cpath.parent.mkdir(parents=True, exist_ok=True)
            cpath.write_bytes(path.read_bytes())
            files.append(cpath)
            sidecar(cpath, "txt", np.random.default_rng([seed, i]), i)
            exact.append([rel(path), rel(cpath)])
            planted.setdefault("exact_duplicate_copies", []).append(rel(cpath))

    bad: dict[str, str] = {}
    for kind, folder in _BAD_FOLDERS.items():
        path = root / folder / DEFAULT_NAMES[kind]
        if kind in BAD_WRITERS:
            BAD_WRITERS[kind](path, rng)
            bad[kind] = rel(path)
        else:
            SPECIAL_WRITERS[kind](path, photo_like(rng, 64, 48))
            planted.setdefault(kind, []).append(rel(path))
        files.append(path)
        sidecar(path, "txt", rng, n_images + len(bad))

    # Last, with their own generator: the images above do not depend on them.
    texts = {}
    for j, (folder, stem, lines) in enumerate(TEXT_SIGNS):
        r = np.random.default_rng([seed, 1 << 31, j])
        if not fonts.cjk_available():
            lines = [line if fonts.covers("sans", line) else f"Sign {j} line {k}" for k, line in enumerate(lines)]
        img, _ = sign_image(r, *_size(r), lines)
        path = root / folder / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(img, path)
        files.append(path)
        planted.setdefault("text", []).append(rel(path))
        texts[rel(path)] = list(lines)
        sidecar(path, "txt", r, n_images + 100 + j)

    files.sort(key=rel)
    return CorpusInfo(root=root, files=files, planted=planted, near_duplicate_groups=groups,
                      exact_duplicates=exact, bad_files=bad, captions=captions, texts=texts)
