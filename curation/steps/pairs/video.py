"""Frames for edit pairs from videos: shots found with PySceneDetect, frames sampled
`interval_s` apart inside each shot, returned as JPEG bytes and RGB images. No lake, no Ray.

One decoding pass over the reference frames. The decoder skips non-reference frames
(`skip_frame = "NONREF"`: most B-frames, half the frames of a typical H.264 stream, which
nothing else is predicted from): on a 60 s 720p clip `read_video` took 2.7 s instead of 4.9 s
and found the same 6 cuts. A cut on a skipped frame is found on the next decoded one, one
frame late (x264 with scene-cut keyframes off, 5 cuts: 3 one frame late, 2 exact); sampled
frames are decoded ones, so none lies across a cut. Each decoded frame is decoded once; a copy
downscaled to `analysis_side` (swscale, area filter, straight to BGR) feeds the detector, and
the frames that fall on the sampling grid of their shot are converted at full resolution (then
to `frame_side`) as they pass. A second pass that seeks to the chosen times costs more: seeking
lands on the keyframe before the target and decodes forward from it, so 20 targets 1 s apart
in a 20 s 720p H.264 clip (keyframes 5 s apart) decoded 2.3x the clip's frames (3.5 s against
1.3 s for the whole clip once). Measured CPU per 720p frame of that clip: decode 1.0 ms,
downscale to 256 px 0.5 ms, detector 0.2-0.5 ms; the full-size RGB conversion 0.4 ms, where
`VideoFrame.to_image()` takes 12 ms. Conversions go through one `VideoReformatter` per output
size: `VideoFrame.to_ndarray(width=...)` builds a new swscale context for every frame (+1.4 ms).

Shots: detectors report a cut a few frames after it happens (`event_buffer_length`), so frames
wait in a short queue until no later report can move them into another shot. Sampling: grid
times start + k * interval_s inside each shot (the first frame within half a frame of each);
consecutive grid frames make pairs, so a shot with more than `max_frames_per_shot` grid frames
keeps evenly spread *pairs* of consecutive ones (frames spread evenly one by one would have no
partner `interval_s` away); the video keeps at most `max_frames_per_video` frames the same way.
Both caps hold in bounded memory whatever the video's length (`_EvenSample`).

Times are seconds from the video stream's start; sizes are pixels.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image
from scenedetect.common import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from curation.steps.pairs.config import VideoConfig
from curation.storage import io as storage_io

__all__ = ["Frame", "VideoFrames", "frame_pairs", "read_video"]

DEFAULT_THRESHOLD = {"adaptive": 3.0, "content": 27.0}  # PySceneDetect's defaults
_ADAPTIVE = {"min_content_val": 10.0, "min_scene_len": 1}  # Open-Sora's settings (frames)
_CONTENT_MIN_SCENE_LEN = 15  # frames: Data-Juicer's video_split_by_scene_mapper
_FALLBACK_FPS = Fraction(25)  # only when the container gives no frame rate at all
_TRUNCATION_SLACK_S = 0.5  # decoding this much short of the header's duration is a warning
_Sample = tuple[int, int, float, Image.Image]  # (shot, frame index, t_s, image)
# Rotation (degrees counterclockwise, FFmpeg's display matrix) -> the PIL transpose that shows
# the frame upright, as `ffmpeg` does by default (phone videos).
_ROTATIONS = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270,
              180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}


@dataclass
class Frame:
    """One sampled frame.

    shot: index into `VideoFrames.shots`. index: the frame's number in the video, 0-based,
    round(t_s * fps) (exact at a constant frame rate). t_s: presentation time, seconds.
    jpeg: the frame, longer side <= `frame_side` px. image: the same pixels (RGB) before JPEG
    compression, for embedding.
    """

    shot: int
    index: int
    t_s: float
    jpeg: bytes
    image: Image.Image


@dataclass
class VideoFrames:
    """What `read_video` found in one video.

    duration_s: end of the last decoded frame, seconds. fps: the stream's average frame rate.
    n_frames_decoded: frames decoded (non-reference frames are skipped, so about half of a
    stream with B-frames).
    width, height: coded frame size, px. codec: FFmpeg decoder name. shots: every shot found,
    (start_s, end_s), short ones included. frames: sampled frames in time order. error: why
    the video gave nothing ("video: ..."; then `frames` is empty). warning: a note about a
    video that gave frames but looks damaged (decoding stopped early, or it ends before its
    header says).
    """

    uri: str
    duration_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""
    n_frames_decoded: int = 0
    shots: list[tuple[float, float]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None


def read_video(uri: str, cfg: VideoConfig) -> VideoFrames:
    """Shots and sampled frames of the video at `uri` (a local path or a pyarrow.fs URI).

    Never raises for a bad file: a missing, non-video, audio-only, empty or undecodable one
    returns `error`; a truncated one keeps the frames decoded before the damage, with `warning`.
    """
    out = VideoFrames(uri=uri)
    try:
        fs, path = storage_io.resolve(uri)
        with storage_io.open_input(fs, path) as f, av.open(f) as container:
            _read_container(container, cfg, out)
    except (av.FFmpegError, OSError, ValueError) as e:  # ValueError: pyarrow's bad-URI errors
        out.error = f"video: cannot open: {_reason(e)}"
    if out.error is not None:
        out.frames = []
    return out


def frame_pairs(frames: list[Frame], interval_s: float) -> list[tuple[int, int]]:
    """(i, j) positions in `frames` (in time order, as `read_video` returns them) of
    consecutive sampled frames of one shot, `interval_s` seconds apart (within half an interval:
    grid times snap to real frames); i is the earlier frame. Frames left out between two
    sampled ones (a capped shot) make a wider gap, which is not a pair."""
    return [(i, i + 1) for i, (a, b) in enumerate(itertools.pairwise(frames))
            if a.shot == b.shot and abs(b.t_s - a.t_s - interval_s) <= interval_s / 2]


def _read_container(container: av.container.InputContainer, cfg: VideoConfig, out: VideoFrames) -> None:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        out.error = f"video: no video stream (streams: {', '.join(kinds) or 'none'})"
        return
    stream = container.streams.video[0]
    if stream.codec_context is None:
        out.error = f"video: no decoder for this stream's codec ({stream.codec_tag or 'unknown'})"
        return
    out.codec = stream.codec_context.name
    stream.codec_context.skip_frame = "NONREF"  # see the module docstring
    rate = stream.average_rate or stream.guessed_rate or _FALLBACK_FPS
    out.fps = float(rate)
    out.width, out.height = stream.codec_context.width, stream.codec_context.height
    scan = _Scan(cfg, rate, _start_s(stream), stream.sample_aspect_ratio)
    stopped = None
    try:
        for frame in container.decode(stream):
            scan.add(frame)
    except av.FFmpegError as e:
        stopped = _reason(e)
    if scan.n_frames == 0:
        out.error = "video: no frames decoded" + (f" ({stopped})" if stopped else "")
        return
    if stopped:
        out.warning = f"video: decoding stopped at {scan.end_s:.2f} s ({stopped}); kept the frames before"
    out.shots, samples = scan.finish()
    out.n_frames_decoded, out.duration_s = scan.n_frames, scan.end_s
    out.frames = [Frame(shot, index, t, _jpeg(image, cfg.jpeg_quality), image)
                  for shot, index, t, image in samples]
    header_s = _header_duration_s(container, stream)
    if out.warning is None and header_s and out.duration_s < header_s - _TRUNCATION_SLACK_S:
        out.warning = (f"video: decoded {out.duration_s:.2f} s of the {header_s:.2f} s its header gives"
                       " (truncated?)")


class _Scan:
    """Feeds decoded frames (in presentation order) to the cut finder and the sampler."""

    def __init__(self, cfg: VideoConfig, rate: Fraction, start_s: float | None, sample_aspect):
        self.cfg, self.fps, self.start_s = cfg, float(rate), start_s
        self.sar = float(sample_aspect) if sample_aspect else 1.0
        self.small, self.full = VideoReformatter(), VideoReformatter()  # reused swscale contexts
        self.cuts = _CutFinder(cfg, rate)
        self.sampler = _Sampler(cfg, frame_s=1.0 / self.fps)
        self.n_frames, self.end_s, self.last_t = 0, 0.0, 0.0

    def add(self, frame: av.VideoFrame) -> None:
        t = self._time(frame)
        small = _analysis_pixels(self.small, frame, self.cfg.analysis_side)
        for index, when, held in self.cuts.push(round(t * self.fps), t, small, frame):
            self._sample(index, when, held)
        self.n_frames += 1
        self.last_t, self.end_s = t, t + 1.0 / self.fps

    def finish(self) -> tuple[list[tuple[float, float]], list[_Sample]]:
        for index, when, held in self.cuts.finish(self.last_t):
            self._sample(index, when, held)
        return self.sampler.finish(self.end_s)

    def _sample(self, index: int, t: float, frame: av.VideoFrame) -> None:
        side = self.cfg.frame_side
        self.sampler.add(index, t, self.cuts.cuts, lambda: _full_image(self.full, frame, side, self.sar))

    def _time(self, frame: av.VideoFrame) -> float:
        """Seconds from the stream start (the first frame when the container gives none);
        frames without a timestamp count frames at the nominal rate; never before the last."""
        if frame.time is None:
            return self.n_frames / self.fps
        if self.start_s is None:
            self.start_s = frame.time
        return max(frame.time - self.start_s, self.last_t if self.n_frames else 0.0)


class _CutFinder:
    """A PySceneDetect detector fed downscaled frames. It reports a cut up to
    `event_buffer_length` frames after the cut, so each frame is held that long and handed
    back only once no later report can put a cut before it."""

    def __init__(self, cfg: VideoConfig, rate: Fraction):
        self.detector = _detector(cfg)
        self.rate = rate  # exact (30000/1001), as PySceneDetect counts frames
        self.cuts: list[float] = []  # start times of shots 2..n, seconds
        self.held: deque = deque()

    def push(self, index: int, t: float, small: np.ndarray, frame: av.VideoFrame) -> list:
        found = self.detector.process_frame(FrameTimecode(t, fps=self.rate), small)
        self.cuts += [c.seconds for c in found]
        self.held.append((index, t, frame))
        ready = []
        while len(self.held) > self.detector.event_buffer_length:
            ready.append(self.held.popleft())
        return ready

    def finish(self, last_t: float) -> list:
        self.cuts += [c.seconds for c in self.detector.post_process(FrameTimecode(last_t, fps=self.rate))]
        ready, self.held = list(self.held), deque()
        return ready


class _Sampler:
    """Grid frames of each shot, grouped in units of two consecutive ones (a pair), capped per
    shot and per video by `_EvenSample`. Frames arrive in time order with the cuts known so far
    (all cuts before them are known)."""

    def __init__(self, cfg: VideoConfig, frame_s: float):
        self.cfg, self.half_frame = cfg, frame_s / 2
        self.shots: list[tuple[float, float]] = []
        self.video = _EvenSample(cfg.max_frames_per_video // 2)  # items: (shot, unit)
        self.n_units = 0  # units offered to `video`
        self._new_shot(None)

    def add(self, index: int, t: float, cuts: list[float], image) -> None:
        """`image()` makes the frame's picture; called only for frames that are kept."""
        if self.shot_start is None:
            self.shot_start = t
        while len(self.shots) < bisect.bisect_right(cuts, t):
            self._end_shot(cuts[len(self.shots)])
        interval = self.cfg.interval_s
        if t < self.shot_start + self.next_k * interval - self.half_frame:
            return
        self.next_k = int((t + self.half_frame - self.shot_start) // interval) + 1
        ordinal, self.n_taken = self.n_taken, self.n_taken + 1
        if not self.units.wants(ordinal // 2):
            return
        if ordinal % 2 == 0:
            self.units.add([(index, t, image())])
        else:
            self.units.items[-1].append((index, t, image()))

    def finish(self, end_s: float) -> tuple[list[tuple[float, float]], list[_Sample]]:
        """(shots, samples as (shot, index, t_s, image)) once every frame has been added."""
        if self.shot_start is not None:
            self._end_shot(end_s)
        kept = _spread(self.video.items, self.video.limit)
        return self.shots, [(shot, *sample) for shot, unit in kept for sample in unit]

    def _end_shot(self, end: float) -> None:
        shot = len(self.shots)
        self.shots.append((self.shot_start, end))
        units = self.units.items
        if end - self.shot_start < self.cfg.min_shot_s:
            units = []
        elif self.n_taken > self.cfg.max_frames_per_shot:  # capped: whole pairs only
            units = _spread([u for u in units if len(u) == 2], self.units.limit)
        for unit in units:
            if self.video.wants(self.n_units):
                self.video.add((shot, unit))
            self.n_units += 1
        self._new_shot(end)

    def _new_shot(self, start: float | None) -> None:
        self.shot_start, self.next_k, self.n_taken = start, 0, 0
        self.units = _EvenSample(self.cfg.max_frames_per_shot // 2)


class _EvenSample:
    """An evenly spaced subset of a stream of unknown length in bounded memory: keeps items
    whose ordinal is a multiple of `stride`; past 2 * limit held, every other one goes and the
    stride doubles. `_spread(items, limit)` then picks the final `limit`."""

    def __init__(self, limit: int):
        self.limit, self.stride = limit, 1
        self.items: list = []

    def wants(self, ordinal: int) -> bool:
        return ordinal % self.stride == 0

    def add(self, item) -> None:
        """Append an item whose ordinal `wants`; the newest one always stays."""
        self.items.append(item)
        if len(self.items) > 2 * self.limit:
            del self.items[1::2]
            self.stride *= 2


def _spread(items: list, limit: int) -> list:
    """At most `limit` of `items`, evenly spread, first and last included."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _detector(cfg: VideoConfig) -> AdaptiveDetector | ContentDetector:
    threshold = cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD[cfg.detector]
    if cfg.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold, **_ADAPTIVE)
    return ContentDetector(threshold=threshold, min_scene_len=_CONTENT_MIN_SCENE_LEN)


def _fit(width: float, height: float, side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most `side` px (never enlarged)."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _analysis_pixels(reformatter: VideoReformatter, frame: av.VideoFrame, side: int) -> np.ndarray:
    """BGR uint8 at longer side <= `side`: what the detectors read. swscale scales and converts
    in one call. Its area filter costs 0.5 ms per 720p frame, fast-bilinear 0.1 ms, but
    fast-bilinear aliases: the detector's score between frames of one shot rose by a quarter
    (median 3.5 -> 4.4 under a pan; cuts score 45-80), eating into the margin to the threshold."""
    width, height = _fit(frame.width, frame.height, side)
    small = reformatter.reformat(frame, width=width, height=height, format="bgr24", interpolation="AREA")
    return small.to_ndarray()


def _full_image(reformatter: VideoReformatter, frame: av.VideoFrame, side: int,
                sample_aspect: float) -> Image.Image:
    """RGB at the display aspect (non-square pixels stretched), longer side <= `side`, upright."""
    width, height = _fit(frame.width * sample_aspect, frame.height, side)
    sized = reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA")
    image = Image.fromarray(sized.to_ndarray())
    turn = _ROTATIONS.get(frame.rotation)
    return image.transpose(turn) if turn is not None else image


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _start_s(stream: av.video.stream.VideoStream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _header_duration_s(container: av.container.InputContainer,
                       stream: av.video.stream.VideoStream) -> float | None:
    """The video's duration as its header gives it (the stream's, else the container's), s."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration else None


def _reason(e: Exception) -> str:
    """FFmpeg's message without the errno and file name PyAV adds; others as they are."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
