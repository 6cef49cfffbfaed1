"""OCR: how much text an image carries, what it says and in which script (RapidOCR, CPU).

Models: RapidOCR 3.10 (`rapidocr`, Apache-2.0) with the PP-OCRv6 small detection and
recognition networks (PaddleOCR, Apache-2.0; Chinese + English, one 18k-character
dictionary) that ship inside its wheel, run by ONNX Runtime: no download, no GPU.

Per image:

1. **Detection** (DB text-region segmentation) on the RGB view with longer side `SIDE` (an
   image already smaller is used as it is, never upscaled): quadrilateral boxes.
2. **Recognition** only where detection found something: each box is cut out of the same view
   (perspective crop) and the crops are read in batches. An image without text costs
   detection only.
3. Lines read with confidence below `MIN_SCORE`, or as empty strings, are dropped: detection
   alone fires on textures (strokes, foliage) that recognition does not read as text. Textures
   that it does read come out as one or two characters: a straight stroke is a '1' with
   confidence 1.0, a blob a '●', others '3', 'K', '一', '85' at 0.1-0.86, on the benchmark's and
   the demo's images without text, while real two-character lines ('出口', '超市') score >= 0.99.
   So a line needs `MIN_CHARS` characters, and one of at most `SHORT_CHARS` needs confidence
   `MIN_SCORE_SHORT`: a lone glyph is not counted as text (the price: a real one-character
   sign is missed).

Size (`benchmarks/ocr_bench.py`: 240 rendered JPEGs of 800-2000 px, 425 lines of English and
Chinese, letters 1.8-7% of the longer side, tilted up to 5 degrees, JPEG quality 50-95; one
core): character error rate 1.06% at 640 px, 0.32% at 800, 0.24% at 960, 0.16% at 1280,
0.93% on the whole image and 0.90% for the library's default call (which also reads the whole
image); on the 87 small lines (ink under 2.5% of the longer side) 2.6% at 640, 0% at 800-1280,
1.4% whole. 640 is the smallest size within a point of the whole image: ~2.9 images/s on a core
against ~0.5 for the default call and ~1.75 at 800 (the next choice if small print matters
more than a 1.7x cost). Cutting the lines from a larger view than the one detection saw
(640/1280) gained nothing (0.98%): the misses at 640 are detection's.
The direction classifier (180-degree turns) is off: it only helps upside-down lines and costs
a third model per worker.

One engine per worker process (created lazily on first use, then reused by every image and
every task that process runs), with ONNX Runtime on one thread (`intra_op_num_threads=1`):
Ray runs one task per CPU, so more threads per task only contend.

Columns (`writes`): `ocr_boxes` lines read, `ocr_area` share of the image covered by their
boxes (union, so overlaps count once), `ocr_texts` each line's text, confidence and box (4
corners in the original image's pixels, orientation applied), `ocr_script` the dominant script
of the letters read ('han', 'latin', 'other'; null without text).
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from operators.base import DecodeNeed, Operator, field
from operators.decode import ImageItem

SIDE = 640  # px: longer side of the view text is detected on and lines are cut from
MIN_SCORE = 0.5  # recognition confidence below which a line is dropped (the library's default)
MIN_CHARS = 2  # lines of fewer characters (spaces not counted) are dropped (see the module)
SHORT_CHARS, MIN_SCORE_SHORT = 2, 0.9  # lines of <= 2 characters need this confidence
USE_CLS = False  # the 0/180-degree direction classifier
ENGINE_VERSION = "rapidocr-3.10.0/PP-OCRv6-small"

OCR_TEXT_TYPE = pa.struct([
    pa.field("text", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("box", pa.list_(pa.float32())),
])


class OcrUnavailable(RuntimeError):
    """The OCR engine (rapidocr + onnxruntime) is not installed or its models are missing."""


class OcrEngine:
    """Text detection and recognition with RapidOCR's models, one ONNX Runtime thread each.

    `detect(bgr)` -> (boxes float32 [n, 4, 2] in the array's px, det scores);
    `recognize(crops)` -> [(text, score)] for BGR line crops. It drives rapidocr's detector and
    recogniser objects directly (rapidocr is pinned for that). Get one through `engine()`: one
    per process, loaded once.
    """

    def __init__(self, threads: int = 1, use_cls: bool = USE_CLS, det_side: int = SIDE):
        try:
            from rapidocr import RapidOCR
            from rapidocr.ch_ppocr_rec import TextRecInput
            from rapidocr.utils.process_img import get_rotate_crop_image
        except ImportError as exc:
            raise OcrUnavailable(f"OCR needs `rapidocr` and `onnxruntime` (pip install -e .): {exc}") from None
        self._rec_input, self._crop = TextRecInput, get_rotate_crop_image
        params = {
            "Global.log_level": "error",
            "Global.use_cls": use_cls,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": threads,
            # The view is already at most det_side: only round it to the network's 32-px grid.
            "Det.limit_type": "max",
            "Det.limit_side_len": det_side,
        }
        try:
            self._ocr = RapidOCR(params=params)
            self._det = self._ocr._load_det_model()
            self._rec = self._ocr._load_rec_model()
            self._cls = self._ocr._load_cls_model() if use_cls else None
        except Exception as exc:  # a missing model file, an engine that cannot start
            raise OcrUnavailable(f"cannot start the OCR engine: {type(exc).__name__}: {exc}") from None

    def detect(self, bgr: np.ndarray) -> tuple[np.ndarray, list[float]]:
        out = self._det(bgr)
        if out.boxes is None or len(out.boxes) == 0:
            return np.zeros((0, 4, 2), np.float32), []
        return np.asarray(out.boxes, np.float32).reshape(-1, 4, 2), [float(s) for s in out.scores]

    def crop(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._crop(bgr, np.ascontiguousarray(box, np.float32))

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        if self._cls is not None:
            crops = self._cls(crops).img_list
        out = self._rec(self._rec_input(img=crops))
        return [(str(t), float(s)) for t, s in zip(out.txts or (), out.scores or ())]


MODEL_FILES = ("PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx")


def check_available() -> None:
    """Raise OcrUnavailable naming what is missing (packages, the models in rapidocr's wheel);
    loads no model. Run before any work (the `ocr` step's preflight)."""
    import importlib.util
    from pathlib import Path

    missing = [m for m in ("rapidocr", "onnxruntime", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        raise OcrUnavailable(f"OCR needs {', '.join(missing)} (rapidocr==3.10.0, onnxruntime, "
                             "opencv-python-headless: pip install -e .)")
    try:
        import cv2  # noqa: F401
    except ImportError as exc:  # e.g. the GUI build (opencv-python) without libGL.so.1
        raise OcrUnavailable(f"cannot import OpenCV ({exc}); install the headless build alone: pip uninstall -y "
                             "opencv-python opencv-python-headless && pip install opencv-python-headless") from None
    models = Path(importlib.util.find_spec("rapidocr").origin).parent / "models"
    absent = [f for f in MODEL_FILES if not (models / f).is_file()]
    if absent:
        raise OcrUnavailable(f"the OCR models {', '.join(absent)} are not in {models} (reinstall rapidocr==3.10.0: "
                             "its wheel ships them)")


_ENGINES: dict[tuple, OcrEngine] = {}
_LOCK = threading.Lock()


def engine(threads: int = 1, use_cls: bool = USE_CLS, det_side: int = SIDE) -> OcrEngine:
    """The process's engine for these settings: created on first use, then shared."""
    key = (threads, use_cls, det_side)
    if key not in _ENGINES:
        with _LOCK:
            if key not in _ENGINES:
                _ENGINES[key] = OcrEngine(threads, use_cls, det_side)
    return _ENGINES[key]


def script_of(text: str) -> str | None:
    """The dominant script of the letters in `text` by count: 'han' (CJK ideographs), 'latin',
    'other' (any other letters: kana, hangul, Cyrillic, ...); digits and punctuation do not
    count, and a text of only those is 'other'. None for empty text."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isspace():
            continue
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3134F:
            counts["han"] += 1
        elif ch.isalpha():
            counts["latin" if "LATIN" in unicodedata.name(ch, "") else "other"] += 1
    if not counts:
        return "other" if text.strip() else None
    # ties go to han, then latin
    return max(counts, key=lambda k: (counts[k], k == "han", k == "latin"))


def covered_share(boxes: np.ndarray, width: int, height: int) -> float:
    """Share of a width x height image covered by the union of quadrilaterals `boxes` [n, 4, 2]
    (image px): the polygons are filled on a mask of at most 512 px on the longer side."""
    if len(boxes) == 0 or width <= 0 or height <= 0:
        return 0.0
    import cv2

    scale = min(1.0, 512 / max(width, height))
    mw, mh = max(1, round(width * scale)), max(1, round(height * scale))
    mask = np.zeros((mh, mw), np.uint8)
    for b in boxes:  # one by one: a multi-polygon fill would cancel where boxes overlap
        cv2.fillConvexPoly(mask, np.round(b * scale).astype(np.int32), 1)
    return float(mask.mean())


def keep_line(text: str, score: float, min_score: float = MIN_SCORE) -> bool:
    """Whether a line read is kept: at least MIN_CHARS characters (spaces not counted),
    confidence >= min_score, and >= MIN_SCORE_SHORT for lines of at most SHORT_CHARS."""
    n = len("".join(text.split()))
    return n >= MIN_CHARS and score >= min_score and (n > SHORT_CHARS or score >= max(min_score, MIN_SCORE_SHORT))


def read_text(eng: OcrEngine, det_view: np.ndarray, rec_view: np.ndarray,
              min_score: float = MIN_SCORE) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Detect on `det_view`, recognise crops of `rec_view` (the same image, at the same or another
    size; both RGB uint8 [h, w, 3]). Returns (boxes [n, 4, 2] in rec_view px, [(text, score)]) for the lines
    kept (`keep_line`), top to bottom."""
    det_bgr = np.ascontiguousarray(det_view[:, :, ::-1])
    boxes, _ = eng.detect(det_bgr)
    if len(boxes) == 0:
        return boxes, []
    sy, sx = rec_view.shape[0] / det_view.shape[0], rec_view.shape[1] / det_view.shape[1]
    boxes = boxes * np.array([sx, sy], np.float32)
    rec_bgr = det_bgr if rec_view is det_view else np.ascontiguousarray(rec_view[:, :, ::-1])
    read = eng.recognize([eng.crop(rec_bgr, b) for b in boxes])
    keep = [i for i, (t, s) in enumerate(read) if keep_line(t, s, min_score)]
    return boxes[keep], [read[i] for i in keep]


class Ocr(Operator):
    """Text lines, their boxes and script, by detection then recognition (see the module)."""

    name = "ocr"
    version = f"1+{ENGINE_VERSION}@{SIDE}"
    need = DecodeNeed("rgb", min_long_side=SIDE)
    # Two ONNX sessions (detection 10 MB, recognition 21 MB) and their working buffers.
    resources = {"num_cpus": 1, "memory": 600 * 2**20}
    writes = (
        field("ocr_boxes", pa.int32(), "text lines read (detected, then recognised: >= 2 characters, confidence "
                                       ">= 0.5, >= 0.9 for 2-character lines), count"),
        field("ocr_area", pa.float32(), "share of the image area covered by the union of the lines' boxes, 0..1"),
        field("ocr_texts", pa.list_(OCR_TEXT_TYPE),
              "the lines read, top to bottom: text (UTF-8, original language), score (recognition confidence, "
              "0..1), box (8 float32: x0,y0,x1,y1,x2,y2,x3,y3, the 4 corners clockwise from top-left, in the "
              "original image's px with EXIF orientation applied)"),
        field("ocr_script", pa.string(), "dominant script of the letters read by count: 'han', 'latin' or 'other'; "
                                         "null when no text was read"),
    )

    def compute(self, item: ImageItem) -> dict[str, Any]:
        eng = engine()
        view = item.rgb(SIDE)
        boxes, read = read_text(eng, view, view)
        if not read:
            return {"ocr_boxes": 0, "ocr_area": 0.0, "ocr_texts": [], "ocr_script": None}
        h, w = view.shape[:2]
        full = boxes * np.array([item.header.width / w, item.header.height / h], np.float32)
        texts = [{"text": t, "score": s, "box": [float(v) for v in b.reshape(-1)]} for b, (t, s) in zip(full, read)]
        return {"ocr_boxes": len(read), "ocr_area": covered_share(boxes, w, h), "ocr_texts": texts,
                "ocr_script": script_of("".join(t for t, _ in read))}


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions, substitutions), the
    numerator of a character error rate."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
