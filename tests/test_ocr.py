"""OCR with its real models (rapidocr's wheel) on images rendered with known text; the `ocr` step."""

from __future__ import annotations

import importlib.metadata
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.config.typed import ConfigError
from curation.demo import fonts, photo_like
from curation.demo.text import TextLine, draw_text
from curation.steps.profiling.profile import ProfileRunner
from operators import ocr
from operators.decode import open_item, plan_for

LATIN, HAN = "Fresh Coffee 2024", "松鼠鳜鱼"


def _jpeg(img: Image.Image, quality: int = 90, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def _run(data: bytes) -> dict:
    item = open_item(data, plan_for([ocr.Ocr.need]))
    return ocr.Ocr().compute(item)


@pytest.fixture(scope="module")
def poster():
    """1400x1000 (larger than the OCR view, so boxes are scaled back): a tilted English line on a
    plate and a Chinese line straight on a photo-like background."""
    bg = photo_like(np.random.default_rng(5), 1400, 1000)
    return draw_text(bg, [TextLine(LATIN, "sans", 64, (180, 220), 3.0, (20, 20, 30), (240, 236, 225)),
                          TextLine(HAN, "cjk-sans", 80, (700, 640), 0.0, (250, 250, 250))])


def test_only_the_headless_opencv_build_is_installed():
    """The GUI build needs libGL.so.1 (absent on bare machines) and overwrites the headless cv2/."""
    for gui in ("opencv-python", "opencv-contrib-python"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(gui)
    assert importlib.metadata.version("opencv-python-headless")
    ocr.check_available()


def test_a_chinese_font_is_found():
    f = fonts.font_file("cjk-sans")
    assert fonts.covers("cjk-sans", HAN + "中文测试") and fonts.covers("sans", LATIN)
    assert not fonts.covers("sans", HAN)
    assert fonts.font("cjk-sans", 24).getmask(HAN).getbbox() is not None, f


def test_reads_known_text_at_the_right_place(poster):
    img, truth = poster
    out = _run(_jpeg(img))
    texts = [t["text"] for t in out["ocr_texts"]]
    assert out["ocr_boxes"] == len(texts) == 2, texts
    by_text = {"".join(t["text"].split()): t for t in out["ocr_texts"]}
    assert set(by_text) == {LATIN.replace(" ", ""), HAN}, texts
    for line in truth:
        got = by_text["".join(line.text.split())]
        assert got["score"] >= 0.8 and len(got["box"]) == 8
        box = np.array(got["box"]).reshape(4, 2)
        want = np.array(line.box).reshape(4, 2)
        # original-image px: the detector's box is the ink box grown by a margin of the line height
        height = np.linalg.norm(want[3] - want[0])
        assert np.linalg.norm(box.mean(axis=0) - want.mean(axis=0)) < 0.3 * height, (line.text, box, want)
        assert np.all(np.abs(box - want) < 0.8 * height), (line.text, box, want)
    # 15 Latin letters beat 4 Han characters
    assert out["ocr_script"] == "latin"
    ink = sum(np.prod(np.ptp(np.array(l.box).reshape(4, 2), axis=0)) for l in truth) / (1400 * 1000)
    assert ink < out["ocr_area"] < 3 * ink < 0.2


def test_boxes_follow_exif_orientation(poster):
    """Stored turned with EXIF orientation 6: boxes are in the upright image's px."""
    img, truth = poster
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after a 90-degree clockwise turn of the stored pixels
    stored = img.transpose(Image.Transpose.ROTATE_90)
    out = _run(_jpeg(stored, exif=exif.tobytes()))
    got = {"".join(t["text"].split()): np.array(t["box"]).reshape(4, 2) for t in out["ocr_texts"]}
    want = np.array(truth[1].box).reshape(4, 2)
    assert np.linalg.norm(got[HAN].mean(axis=0) - want.mean(axis=0)) < 25


def test_chinese_only_and_no_text():
    img, _ = draw_text(Image.new("RGB", (480, 320), (245, 240, 230)),
                       [TextLine("中文测试", "cjk-sans", 56, (100, 120), -2.0)])
    out = _run(_jpeg(img))
    assert [t["text"] for t in out["ocr_texts"]] == ["中文测试"] and out["ocr_script"] == "han"
    blank = _run(_jpeg(photo_like(np.random.default_rng(11), 800, 600)))
    assert blank == {"ocr_boxes": 0, "ocr_area": 0.0, "ocr_texts": [], "ocr_script": None}


def test_script_and_area_helpers():
    assert ocr.script_of("松鼠鳜鱼 ok") == "han" and ocr.script_of("OPEN 24h 营业") == "latin"
    assert ocr.script_of("Привет") == "other" and ocr.script_of("2024 $12.99") == "other"
    assert ocr.script_of("  ") is None and ocr.script_of("ab中文") == "han"  # ties go to han
    quarter = np.array([[[0, 0], [50, 0], [50, 50], [0, 50]]], np.float32)
    assert ocr.covered_share(quarter, 100, 100) == pytest.approx(0.25, abs=0.02)
    assert ocr.covered_share(np.concatenate([quarter, quarter]), 100, 100) == pytest.approx(0.25, abs=0.02)


def test_rows_errors_and_schema(poster, tmp_path, monkeypatch):
    img, _ = poster
    good, bad = tmp_path / "poster.jpg", tmp_path / "cut.jpg"
    good.write_bytes(_jpeg(img.resize((700, 500))))
    bad.write_bytes(good.read_bytes()[:3000])
    runner = ProfileRunner(["ocr"])
    out = runner(pa.table({"id": ["a", "b", "c"], "uri": [str(good), str(bad), str(tmp_path / "none.jpg")]}))
    assert out.schema == runner.schema and out.schema.field("ocr_texts").type == pa.list_(ocr.OCR_TEXT_TYPE)
    a, b, c = out.to_pylist()
    assert a["error"] is None and a["ocr_boxes"] >= 1 and a["profile_producer"] == ocr.Ocr.identity()
    assert b["error"].startswith("decode: corrupt or truncated JPEG") and b["ocr_boxes"] is None
    assert c["error"].startswith("read: ")
    # an engine failure is that row's error, not a crash
    monkeypatch.setattr(ocr, "engine", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("model gone")))
    (row,) = runner(pa.table({"id": ["a"], "uri": [str(good)]})).to_pylist()
    assert row["error"] == "ocr: RuntimeError: model gone" and row["ocr_boxes"] is None


def test_ocr_is_its_own_operator_set():
    from curation.config.spec import JobSpec
    from curation.config.typed import from_dict

    with pytest.raises(ConfigError, match=r"profile.operators\[1\]: 'ocr' belongs to the OCR operator set"):
        from_dict(JobSpec, {"profile": {"operators": ["metadata", "ocr"]}, "steps": [{"step": "profile"}]}).validate()
    with pytest.raises(ConfigError, match=r"ocr.operators\[0\]: unknown operator 'ocrr'"):
        from_dict(JobSpec, {"ocr": {"operators": ["ocrr"]}, "steps": [{"step": "ocr"}]}).validate()
    with pytest.raises(ConfigError, match=r"ocr.operators\[0\]: 'phash' is in profile.operators already"):
        from_dict(JobSpec, {"ocr": {"operators": ["phash"]}, "steps": [{"step": "ocr"}]}).validate()


def test_ocr_step_is_incremental_and_leaves_profiles_alone(ray_session, poster, tmp_path):
    from curation.steps.run import run_step
    from curation.storage.lake import Lake

    img, _ = poster
    src = tmp_path / "src"
    src.mkdir()
    (src / "poster.jpg").write_bytes(_jpeg(img.resize((700, 500))))
    (src / "plain.jpg").write_bytes(_jpeg(photo_like(np.random.default_rng(11), 640, 480)))
    (src / "cut.jpg").write_bytes((src / "poster.jpg").read_bytes()[:2000])
    lake = str(tmp_path / "lake")
    run_step(lake, "ingest", source=str(src))
    run_step(lake, "profile", operators=["metadata", "phash"])
    s = run_step(lake, "ocr")
    assert (s.rows_in, s.rows_out) == (3, 3) and "images/s" in s.notes["throughput"]
    assert s.notes["images_with_text"] == "1 of 2 read" and s.notes["scripts"] == {"latin": 1}
    assert list(s.errors) == ["decode: corrupt or truncated JPEG"]
    assert "throughput" in s.render()
    opened = Lake(lake)
    assert opened.read("ocr").num_rows == 3 and "ocr_texts" not in opened.read("profiles").column_names
    assert run_step(lake, "ocr").notes == {"up_to_date": True}
    assert run_step(lake, "profile", operators=["metadata", "phash"]).notes == {"up_to_date": True}
    assert opened.versions("profiles") == [0] and opened.versions("ocr") == [0]


def test_the_demo_reads_its_planted_signs(demo_lake, demo_corpus):
    import os

    from curation.storage.lake import Lake

    lake = Lake(demo_lake["lake"])
    pool = lake.read("pool", columns=["id", "uris"]).to_pylist()
    ids = {os.path.relpath(u, demo_corpus.root): r["id"] for r in pool for u in r["uris"]}
    rows = {r["id"]: r for r in lake.read("ocr").to_pylist()}
    assert len(rows) == len(pool) and len(demo_corpus.texts) == 4
    for rel, lines in demo_corpus.texts.items():
        assert [t["text"] for t in rows[ids[rel]]["ocr_texts"]] == lines, rel
    (s,) = [s for s in demo_lake["summaries"] if s.step == "ocr"]
    assert s.notes["scripts"]["han"] >= 2 and s.notes["scripts"]["latin"] >= 2
    assert "images/s" in s.notes["throughput"]


def test_short_lines_need_high_confidence():
    assert ocr.keep_line("出口", 0.99) and ocr.keep_line("OPEN", 0.6)
    assert not ocr.keep_line("85", 0.86) and not ocr.keep_line("8 5", 0.6) and not ocr.keep_line(" ", 1.0)
    assert not ocr.keep_line("1", 1.0)  # a straight stroke reads as '1' at full confidence
