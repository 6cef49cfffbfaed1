"""Unusual-but-valid images, broken files and odd caption sidecars.

One writer per kind, shared by `make_demo_corpus` and `write_bad_inputs`:

- ``SPECIAL_WRITERS[kind](path, img)`` stores the RGB image `img` in an unusual but valid way;
- ``BAD_WRITERS[kind](path, rng)`` writes a file that must not decode (or, for ``huge_header``,
  must be rejected on its header before decoding);
- ``CAPTION_WRITERS[kind](path, rng)`` writes an odd ``.txt`` sidecar.

``DEFAULT_NAMES`` gives each kind a file name (all stems distinct, so sidecars never collide).

Hostile inputs, each of which must become one row with an error (or a flagged caption) and
never harm the run: a PNG bomb that inflates to 3.6 GB with its EXIF after the image data
(`write_png_bomb`), a sidecar nested 100,000 deep (`write_deep_json`), JSON strings with lone
surrogates (`write_surrogate_json`), a file name that is not UTF-8 (`write_non_utf8_name`),
links out of the source, loops and dangling links (`write_symlinks`), a shard with repeated
member names (`write_duplicate_member_tar`), and CSV / JSONL tables with a non-UTF-8 line, a
malformed line and a 5 MB cell (`write_hostile_table`); `write_hostile_inputs` writes them all.
"""

from __future__ import annotations

import io as pyio
import os
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from curation.demo.captions import long_caption
from curation.demo.images import encode, photo_like, save_image

EXIF_ORIENTATION_TAG = 0x0112
HUGE_SIDE = 30_000  # px, both sides, claimed by the huge_header PNG's IHDR
INVALID_UTF8 = b"\xff\xfe bad \xc3\x28"
LONG_CAPTION_CHARS = 20_000


# ---- unusual but valid images ----------------------------------------------------------------

def write_grayscale(path: Path, img: Image.Image) -> None:
    """8-bit single-channel (mode L) JPEG."""
    save_image(img.convert("L"), path)


def write_palette_transparency(path: Path, img: Image.Image) -> None:
    """Palette (mode P, 63 colours + index 0) PNG; index 0 is reserved for full transparency,
    used by a central disc and the four corners."""
    q = img.convert("RGB").quantize(63, method=Image.Quantize.FASTOCTREE)
    p = Image.fromarray(np.asarray(q) + np.uint8(1), "P")
    p.putpalette([0, 0, 0] + q.getpalette()[: 63 * 3])
    w, h = p.size
    draw = ImageDraw.Draw(p)
    draw.ellipse([w * 0.35, h * 0.35, w * 0.65, h * 0.65], fill=0)
    for x0, y0 in ((0, 0), (w * 0.85, 0), (0, h * 0.85), (w * 0.85, h * 0.85)):
        draw.rectangle([x0, y0, x0 + w * 0.15, y0 + h * 0.15], fill=0)
    save_image(p, path, transparency=0)


def write_rgba(path: Path, img: Image.Image) -> None:
    """RGBA PNG with a radial alpha falloff (opaque centre, alpha ~0.1 in the corners)."""
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alpha = Image.fromarray((np.clip(1.5 - r, 0, 1) * 255).astype(np.uint8), "L")
    out = img.convert("RGB")
    out.putalpha(alpha)
    save_image(out, path)


def write_png16(path: Path, img: Image.Image) -> None:
    """16-bit greyscale PNG (mode I;16): 8-bit luma x 257 plus sub-8-bit detail."""
    luma = np.asarray(img.convert("L"), dtype=np.uint32) * 257
    fine = (np.arange(img.width, dtype=np.uint32) * 37) % 200
    arr = np.clip(luma + fine[None, :], 0, 65535).astype(np.uint16)
    save_image(Image.fromarray(arr), path)


def write_cmyk(path: Path, img: Image.Image) -> None:
    """CMYK JPEG (Adobe APP14 marker, as written by Pillow)."""
    save_image(img.convert("RGB").convert("CMYK"), path)


def _frames(img: Image.Image, n: int) -> list[Image.Image]:
    w, h = img.size
    step = max(1, w // (4 * n))
    return [img.transform(img.size, Image.Transform.AFFINE, (1, 0, i * step, 0, 1, 0)) for i in range(n)]


def write_animated_gif(path: Path, img: Image.Image) -> None:
    """4-frame looping GIF (a horizontal pan), 100 ms per frame, 64 colours; the frames are
    smoothed first (radius 1.5 px) so LZW compresses them like a typical GIF."""
    smooth = img.convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    frames = [f.quantize(64, method=Image.Quantize.FASTOCTREE) for f in _frames(smooth, 4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_animated_webp(path: Path, img: Image.Image) -> None:
    """4-frame looping lossy WebP (a horizontal pan), 100 ms per frame."""
    frames = _frames(img.convert("RGB"), 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0,
                   quality=80, method=0)


def write_exif_rotated(path: Path, img: Image.Image) -> None:
    """JPEG with EXIF Orientation = 6: stored rotated 90 deg counter-clockwise, so that
    `ImageOps.exif_transpose` gives back `img` (stored size is `img.size` swapped)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    save_image(img.convert("RGB").transpose(Image.Transpose.ROTATE_90), path, exif=exif.tobytes())


def write_tiny(path: Path, img: Image.Image) -> None:
    """1x1 px RGB PNG (the mean colour of `img`)."""
    save_image(img.convert("RGB").resize((1, 1), Image.Resampling.BOX), path)


SPECIAL_WRITERS: dict[str, Callable[[Path, Image.Image], None]] = {
    "grayscale": write_grayscale, "palette_transparency": write_palette_transparency,
    "rgba": write_rgba, "png16": write_png16, "cmyk": write_cmyk,
    "animated_gif": write_animated_gif, "animated_webp": write_animated_webp,
    "exif_rotated": write_exif_rotated, "tiny_1x1": write_tiny,
}


# ---- files that must not decode ----------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_empty(path: Path, rng: np.random.Generator) -> None:
    """Zero bytes."""
    _write(path, b"")


def write_truncated(path: Path, rng: np.random.Generator) -> None:
    """The first 60% of the bytes of a valid 640x480 quality-90 JPEG (no EOI marker)."""
    data = encode(photo_like(rng, 640, 480), "JPEG", 90)
    _write(path, data[: int(len(data) * 0.6)])


def write_random_bytes(path: Path, rng: np.random.Generator) -> None:
    """4096 random bytes (no image signature)."""
    _write(path, b"\x00\x17" + rng.bytes(4094))


def write_html(path: Path, rng: np.random.Generator) -> None:
    """An HTML error page (what a failed download often saves)."""
    _write(path, b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                 b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n")


def write_text(path: Path, rng: np.random.Generator) -> None:
    """A plain UTF-8 text note."""
    _write(path, "Remember to buy milk. Café at 10:00 — 東京\n".encode())


def write_pdf(path: Path, rng: np.random.Generator) -> None:
    """A minimal one-page PDF (a format Pillow can write but not read)."""
    _write(path, b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                 b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                 b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
                 b"trailer<</Root 1 0 R>>\n%%EOF\n")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_huge_header(path: Path, rng: np.random.Generator) -> None:
    """A PNG whose IHDR claims 30000x30000 8-bit RGB (2.7 GB decoded) with one tiny IDAT.

    `Image.open` reads the header (when `Image.MAX_IMAGE_PIXELS` is None or large enough;
    Pillow's default raises DecompressionBombError at open); `.load()` must never be tried.
    """
    ihdr = struct.pack(">IIBBBBB", HUGE_SIDE, HUGE_SIDE, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * 3 * 64)
    _write(path, b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
           + _png_chunk(b"IEND", b""))


BAD_WRITERS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "empty": write_empty, "truncated": write_truncated, "random_bytes": write_random_bytes,
    "html_as_png": write_html, "text_as_webp": write_text, "unsupported_format": write_pdf,
    "huge_header": write_huge_header,
}


# ---- odd caption sidecars ------------------------------------------------------------------------

CAPTION_WRITERS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "caption_empty": lambda path, rng: _write(path, b""),
    "caption_invalid_utf8": lambda path, rng: _write(path, INVALID_UTF8),
    "caption_long": lambda path, rng: _write(path, long_caption(rng, LONG_CAPTION_CHARS).encode()),
}

DEFAULT_NAMES = {
    "grayscale": "grayscale.jpg", "palette_transparency": "palette_transparent.png",
    "rgba": "rgba_alpha.png", "png16": "gray16.png", "cmyk": "cmyk.jpg",
    "animated_gif": "animated.gif", "animated_webp": "animated_loop.webp",
    "exif_rotated": "rotated_exif6.jpg", "tiny_1x1": "one_pixel.png",
    "empty": "empty.jpg", "truncated": "truncated.jpg", "random_bytes": "noise.jpg",
    "html_as_png": "page.png", "text_as_webp": "note.webp", "unsupported_format": "document.jpg",
    "huge_header": "huge_header.png",
    "caption_empty": "caption_empty.txt", "caption_invalid_utf8": "caption_invalid_utf8.txt",
    "caption_long": "caption_long.txt",
}


def write_bad_inputs(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write every special, bad and odd-caption kind once into `out_dir` (flat).

    Returns kind -> path. Image kinds map to the image file; caption kinds map to the ``.txt``
    sidecar, whose image is the same stem with ``.jpg`` (a valid 512x384 JPEG).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    for kind, writer in SPECIAL_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        writer(paths[kind], photo_like(rng, 480, 360))
    for kind, bad in BAD_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        bad(paths[kind], rng)
    for kind, cap in CAPTION_WRITERS.items():
        paths[kind] = out_dir / DEFAULT_NAMES[kind]
        cap(paths[kind], rng)
        save_image(photo_like(rng, 512, 384), paths[kind].with_suffix(".jpg"))
    return paths


# ---- hostile inputs: each must become one row with an error (or a flagged caption), never harm --

PNG_BOMB_SIDE = 60_000  # px, both sides, of the png_bomb (3.6 GB once decoded, 437 KB stored)
DEEP_JSON_LEVELS = 100_000  # nesting depth of the deep_json sidecar
BIG_CELL_BYTES = 5 << 20  # caption cell size of the hostile tables, bytes
NON_UTF8_NAME = b"bad_\xff\xfe_name"  # a file stem that is not UTF-8 (bytes, as on disk)


def _zeros_zlib(row_bytes: int, rows: int) -> bytes:
    """A zlib stream of rows * row_bytes zero bytes, built in milliseconds.

    After a full flush deflate restarts with an empty window, so every flushed block of the
    same input compresses to the same bytes: one ~4 MB block is compressed once and repeated.
    The Adler-32 of n zeros is (n mod 65521) << 16 | 1 (a stays 1, b grows by 1 per byte).
    """
    per = max(1, (4 << 20) // row_bytes)  # rows per repeated block
    full, rest = divmod(rows, per)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib framing is added here
    block = c.compress(bytes(per * row_bytes)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(bytes(rest * row_bytes)) + c.flush(zlib.Z_FINISH)
    adler = ((rows * row_bytes) % 65521) << 16 | 1
    return b"\x78\xda" + block * full + tail + struct.pack(">I", adler)


def write_png_bomb(path: Path, rng: np.random.Generator | None = None, side: int = PNG_BOMB_SIDE,
                   orientation: int = 6) -> None:
    """A valid all-black 1-bit greyscale PNG of side x side px whose image data really inflates
    to side * (side / 8 + 1) bytes (450 MB at 60000: the file is 437 KB), with an EXIF block
    (Orientation = `orientation`) stored AFTER the image data, where Pillow's PNG `getexif()`
    decodes the whole image (mode "1", one byte per pixel: 3.6 GB) to reach it."""
    row_bytes = 1 + (side + 7) // 8  # filter byte + packed bits
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    _write(path, b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"IDAT", _zeros_zlib(row_bytes, side))
           + _png_chunk(b"eXIf", exif.tobytes()[6:])  # without the "Exif\0\0" JPEG prefix
           + _png_chunk(b"IEND", b""))


def write_deep_json(path: Path, rng: np.random.Generator | None = None, depth: int = DEEP_JSON_LEVELS) -> None:
    """A JSON sidecar of `depth` nested arrays (Python's json recursion limit is ~1000)."""
    _write(path, b"[" * depth + b"]" * depth)


def write_surrogate_json(path: Path, rng: np.random.Generator | None = None) -> None:
    """A JSON sidecar whose strings hold lone UTF-16 surrogates (valid JSON escapes, but not
    Unicode text): in the caption, a tag, an extra field's name and its value."""
    _write(path, b'{"caption": "half \\ud800 a pair", "tags": ["ok", "\\udfff"], '
                 b'"note\\udc80": "x\\udbff"}')


def write_non_utf8_name(directory: Path, rng: np.random.Generator | None = None) -> Path:
    """A valid JPEG and its `.txt` caption under the stem NON_UTF8_NAME (not UTF-8) in
    `directory`. Returns the image path (its str form holds surrogate escapes). Raises OSError
    on file systems that only take UTF-8 names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = os.path.join(os.fsencode(directory), NON_UTF8_NAME)
    rng = rng if rng is not None else np.random.default_rng(0)
    with open(stem + b".jpg", "wb") as f:
        f.write(encode(photo_like(rng, 96, 64), "JPEG", 90))
    with open(stem + b".txt", "wb") as f:
        f.write(b"a caption beside a file name that is not UTF-8")
    return Path(os.fsdecode(stem + b".jpg"))


def write_symlinks(source: Path, outside: Path, rng: np.random.Generator | None = None) -> dict[str, Path]:
    """Links in the `source` directory that must not be followed (or read) by default.

    `outside` (a directory that is not under `source`) gets a valid image and a caption file.
    In `source`: `escape.jpg` and `escape_dir` link outside; `captioned.jpg` is a real image
    whose `captioned.txt` links to the outside caption; `loop.jpg` links to itself; `self`
    links to `source` (a directory loop); `dangling.jpg` links to nothing; `alias.jpg` links to
    the real image `inside.jpg` (inside: followed). Returns name -> path of each. Raises OSError
    where symbolic links cannot be made.
    """
    source, outside = Path(source), Path(outside).absolute()  # relative targets resolve from the link
    rng = rng if rng is not None else np.random.default_rng(0)
    source.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    save_image(photo_like(rng, 80, 60), outside / "secret.jpg")
    (outside / "secret.txt").write_text("a caption from outside the source")
    (outside / "sub").mkdir(exist_ok=True)
    save_image(photo_like(rng, 80, 60), outside / "sub" / "other.jpg")
    save_image(photo_like(rng, 80, 60), source / "captioned.jpg")
    save_image(photo_like(rng, 80, 60), source / "inside.jpg")
    links = {
        "escape.jpg": outside / "secret.jpg", "escape_dir": outside / "sub",
        "captioned.txt": outside / "secret.txt", "loop.jpg": Path("loop.jpg"),
        "self": Path("."), "dangling.jpg": Path("no_such_file.jpg"), "alias.jpg": Path("inside.jpg"),
    }
    out = {"captioned.jpg": source / "captioned.jpg", "inside.jpg": source / "inside.jpg"}
    for name, target in links.items():
        (source / name).symlink_to(target)
        out[name] = source / name
    return out


def write_duplicate_member_tar(path: Path, rng: np.random.Generator | None = None) -> list[tuple[str, bytes, str]]:
    """A WebDataset shard in which names repeat (tar allows it): `a.jpg` + `a.txt` twice with
    different images and captions, then `b.jpg` and `b.png` (one key, two images) with one
    `b.txt`. Returns (member name, image bytes, caption) for each of the four images, in order."""
    rng = rng if rng is not None else np.random.default_rng(0)
    images = [("a.jpg", encode(photo_like(rng, 64, 48), "JPEG", 90), "first a"),
              ("a.jpg", encode(photo_like(rng, 64, 48), "JPEG", 90), "second a"),
              ("b.jpg", encode(photo_like(rng, 64, 48), "JPEG", 90), "b"),
              ("b.png", encode(photo_like(rng, 64, 48), "PNG"), "b")]
    members = [("a.jpg", images[0][1]), ("a.txt", b"first a"), ("a.jpg", images[1][1]), ("a.txt", b"second a"),
               ("b.jpg", images[2][1]), ("b.png", images[3][1]), ("b.txt", b"b")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, pyio.BytesIO(data))
    return images


def write_hostile_table(path: Path, image_paths: list[Path], big_cell_bytes: int = BIG_CELL_BYTES) -> dict[str, int]:
    """A CSV or JSON Lines source (by `path`'s suffix: .csv / .jsonl) over at least 4 images:
    row 0 is plain, row 1's caption is not UTF-8, row 2 is malformed (CSV: an extra field;
    JSONL: cut mid-object), row 3's caption is a `big_cell_bytes` cell, and rows 4+ are plain.
    Returns kind -> 1-based line number ("plain", "invalid_utf8", "malformed", "big_cell")."""
    if len(image_paths) < 4:
        raise ValueError("need at least 4 images")
    big = b"A long caption. " * (big_cell_bytes // 16)
    csv_mode = Path(path).suffix.lower() == ".csv"
    lines, kinds = [b"uri,caption"] if csv_mode else [], {}
    for i, p in enumerate(image_paths):
        uri = os.fsencode(str(Path(p).absolute()))
        caption = {1: b"caf\xe9 \xff bad bytes", 3: big}.get(i, f"image {i}".encode())
        if csv_mode:
            line = uri + b"," + caption + (b",surplus" if i == 2 else b"")
        else:
            line = b'{"uri": "' + uri + b'", "caption": "' + caption + b'"}'
            if i == 2:
                line = line[: len(line) // 2]
        lines.append(line)
        kinds.setdefault({1: "invalid_utf8", 2: "malformed", 3: "big_cell"}.get(i, "plain"), len(lines))
    _write(Path(path), b"\n".join(lines) + b"\n")
    return kinds


def write_hostile_inputs(out_dir: Path, seed: int = 0, bomb_side: int = PNG_BOMB_SIDE,
                         big_cell_bytes: int = BIG_CELL_BYTES) -> dict[str, Path]:
    """Every hostile kind once, laid out as sources to ingest:

    - ``dir``: a directory source holding ``plain_*.jpg`` (5 valid JPEGs), ``png_bomb.png``,
      ``deep.jpg`` + ``deep.json`` (write_deep_json), ``surrogates.jpg`` + ``surrogates.json``
      (write_surrogate_json), the non-UTF-8 name (where the file system takes it) and the links
      of write_symlinks (where links can be made), whose targets are in ``outside``;
    - ``tar``: write_duplicate_member_tar; ``csv`` / ``jsonl``: write_hostile_table over the
      plain images.

    Returns kind -> path: the keys above plus ``png_bomb``, ``deep_json``, ``surrogate_json``
    and, when made, ``non_utf8_name`` and each link as ``link:<name>``.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    src, outside = out_dir / "dir", out_dir / "outside"
    paths: dict[str, Path] = {"dir": src, "outside": outside}
    plain = [save_image(photo_like(rng, 96, 64), src / f"plain_{i}.jpg") for i in range(5)]
    paths["png_bomb"] = src / "png_bomb.png"
    write_png_bomb(paths["png_bomb"], rng, side=bomb_side)
    save_image(photo_like(rng, 96, 64), src / "deep.jpg")
    paths["deep_json"] = src / "deep.json"
    write_deep_json(paths["deep_json"], rng)
    save_image(photo_like(rng, 96, 64), src / "surrogates.jpg")
    paths["surrogate_json"] = src / "surrogates.json"
    write_surrogate_json(paths["surrogate_json"], rng)
    try:
        paths["non_utf8_name"] = write_non_utf8_name(src, rng)
    except OSError:  # a file system that only takes UTF-8 names
        pass
    try:
        for name, p in write_symlinks(src, outside, rng).items():
            paths[f"link:{name}"] = p
    except OSError:  # no symbolic links here
        pass
    paths["tar"] = out_dir / "shards" / "dup.tar"
    write_duplicate_member_tar(paths["tar"], rng)
    for fmt in ("csv", "jsonl"):
        paths[fmt] = out_dir / f"table.{fmt}"
        write_hostile_table(paths[fmt], plain, big_cell_bytes)
    return paths
