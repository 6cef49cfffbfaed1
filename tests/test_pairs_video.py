"""Video frames for edit pairs (curation/steps/pairs/video.py): shots, sampling, pairs, bad files.

The videos come from `curation.demo.videos` (a camera move over one picture, a hard cut at a
known time, another move over a second picture), written small (320x180, 24 fps) to stay fast.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from curation.demo.images import photo_like
from curation.demo.videos import DEMO_CUTS_S, DEMO_FPS, DEMO_SHOTS_S, write_demo_videos
from curation.steps.pairs.config import VideoConfig
from curation.steps.pairs.video import frame_pairs, read_video

SIZE = (320, 180)
FRAME_S = 1.0 / DEMO_FPS


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    rng = np.random.default_rng(7)
    images = [photo_like(rng, *SIZE) for _ in range(4)]
    return write_demo_videos(images, tmp_path_factory.mktemp("videos"), seed=3, size=SIZE)


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_cut_is_found_and_frames_stay_inside_their_shot(videos, detector):
    cfg = VideoConfig(detector=detector, interval_s=1.0)
    for path, cut, shot_s in zip(videos, DEMO_CUTS_S, DEMO_SHOTS_S):
        got = read_video(path, cfg)
        assert got.error is None and got.warning is None
        assert (got.codec, got.width, got.height, got.fps) == ("h264", *SIZE, DEMO_FPS)
        assert round(sum(shot_s) * DEMO_FPS) / 3 < got.n_frames_decoded <= round(sum(shot_s) * DEMO_FPS)
        assert got.duration_s == pytest.approx(sum(shot_s), abs=FRAME_S / 2)
        assert len(got.shots) == 2
        assert got.shots[0][1] == got.shots[1][0] == pytest.approx(cut, abs=2 * FRAME_S)
        for k, (start, end) in enumerate(got.shots):
            times = [f.t_s for f in got.frames if f.shot == k]
            assert all(start <= t < end for t in times)
            assert times[0] == pytest.approx(start, abs=FRAME_S)  # the grid starts at the shot
            assert np.allclose(np.diff(times), cfg.interval_s, atol=FRAME_S)
            assert len(times) == int((end - start) / cfg.interval_s - 1e-9) + 1
        assert [f.index for f in got.frames] == [round(f.t_s * DEMO_FPS) for f in got.frames]


def test_frame_pairs_join_consecutive_frames_of_one_shot(videos):
    cfg = VideoConfig(interval_s=1.0)
    frames = read_video(videos[1], cfg).frames
    pairs = frame_pairs(frames, cfg.interval_s)
    per_shot = [sum(f.shot == k for f in frames) for k in (0, 1)]
    assert len(pairs) == sum(n - 1 for n in per_shot)
    for i, j in pairs:
        assert j == i + 1 and frames[i].shot == frames[j].shot
        assert frames[j].t_s - frames[i].t_s == pytest.approx(cfg.interval_s, abs=FRAME_S)
    assert frame_pairs([], 1.0) == []


def test_a_long_shot_keeps_evenly_spread_pairs(videos):
    cfg = VideoConfig(interval_s=0.25, max_frames_per_shot=4)
    got = read_video(videos[0], cfg)  # shots of 2.5 s: 10 grid frames each, 4 kept
    for k, (start, end) in enumerate(got.shots):
        times = [f.t_s for f in got.frames if f.shot == k]
        assert len(times) == 4
        assert times[0] == pytest.approx(start, abs=FRAME_S)
        assert times[-1] > end - 1.0  # the second pair comes from the end of the shot
    pairs = frame_pairs(got.frames, cfg.interval_s)
    assert len(pairs) == 4 and [i % 2 for i, _ in pairs] == [0] * 4  # 2 pairs per shot, not chained


def test_caps_and_short_shots(videos):
    capped = read_video(videos[0], VideoConfig(interval_s=0.25, max_frames_per_video=3))
    assert len(capped.frames) == 2 and len(frame_pairs(capped.frames, 0.25)) == 1
    # Video 1: shots of 3.0 s and 2.0 s; only the first is long enough.
    long_only = read_video(videos[1], VideoConfig(min_shot_s=2.5))
    assert {f.shot for f in long_only.frames} == {0} and len(long_only.shots) == 2


def test_frames_are_jpegs_within_frame_side(videos):
    cfg = VideoConfig(frame_side=160, jpeg_quality=80)
    got = read_video(videos[0], cfg)
    assert got.frames
    for frame in got.frames:
        with Image.open(io.BytesIO(frame.jpeg)) as im:
            assert im.format == "JPEG" and im.size == frame.image.size == (160, 90)
            assert np.abs(np.asarray(im, np.int16) - np.asarray(frame.image, np.int16)).mean() < 8
        assert frame.image.mode == "RGB"


def test_reads_file_uris(videos):
    by_path, by_uri = (read_video(u, VideoConfig()) for u in (videos[0], Path(videos[0]).as_uri()))
    assert by_uri.error is None
    assert [f.jpeg for f in by_uri.frames] == [f.jpeg for f in by_path.frames]


def test_demo_videos_repeat_for_a_seed(tmp_path):
    images = [photo_like(np.random.default_rng(1), 160, 90), photo_like(np.random.default_rng(2), 160, 90)]
    first = write_demo_videos(images, tmp_path / "a", seed=5, size=(160, 96))
    second = write_demo_videos(images, tmp_path / "b", seed=5, size=(160, 96))
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in second]


def _write_frames(path: Path, n: int, size=(64, 32), codec="libx264") -> Path:
    """n frames, left half red and right half blue, started explicitly so n = 0 still has a header."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, : w // 2, 0] = 255
    pixels[:, w // 2:, 2] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=DEMO_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        container.start_encoding()
        for _ in range(n):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _text(path: Path) -> Path:
    path.write_text("not a video\n" * 20)
    return path


def _halved(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize("make, says", [
    (lambda d: _audio_only(d / "sound.m4a"), "no video stream (streams: audio)"),
    (lambda d: _write_frames(d / "empty.avi", 0), "no frames decoded"),
    (lambda d: _write_frames(d / "empty.mp4", 0), "no video stream"),
    (lambda d: _text(d / "notes.mp4"), "cannot open"),
    (lambda d: d / "missing.mp4", "cannot open"),
])
def test_bad_files_give_an_error_not_an_exception(tmp_path, make, says):
    got = read_video(str(make(tmp_path)), VideoConfig())
    assert got.error is not None and got.error.startswith("video: ") and says in got.error
    assert got.frames == [] and got.shots == []


def test_truncated_files_keep_what_decoded(videos, tmp_path):
    # The demo mp4 keeps its index first (+faststart): half a file decodes until the data stops.
    half_mp4 = read_video(str(_halved(Path(videos[0]), tmp_path / "half.mp4")), VideoConfig())
    assert half_mp4.error is None and half_mp4.frames
    assert half_mp4.warning.startswith("video: ") and half_mp4.duration_s < 4.0
    # Matroska cut short just ends early; the header's duration tells.
    full = _write_frames(tmp_path / "full.mkv", 96)
    half_mkv = read_video(str(_halved(full, tmp_path / "half.mkv")), VideoConfig())
    assert half_mkv.frames and "truncated" in half_mkv.warning
    # An mp4 with its index at the end loses it: nothing to read.
    tail_index = _write_frames(tmp_path / "tail.mp4", 48)
    lost = read_video(str(_halved(tail_index, tmp_path / "tail_half.mp4")), VideoConfig())
    assert lost.error.startswith("video: cannot open") and lost.frames == []


def test_rotated_video_comes_out_upright(tmp_path):
    """A phone-style 'rotate 90' (display matrix of the track header): frames turn clockwise,
    so the red left half of the stored frame ends up on top."""
    data = _write_frames(tmp_path / "flat.mp4", 12).read_bytes()
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    clockwise = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    at = data.index(identity, data.index(b"tkhd"))
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(data[:at] + clockwise + data[at + len(identity):])
    image = np.asarray(read_video(str(rotated), VideoConfig()).frames[0].image, np.int16)
    assert image.shape[:2] == (64, 32)
    top, bottom = image[:24].mean(axis=(0, 1)), image[40:].mean(axis=(0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]
