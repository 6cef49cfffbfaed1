"""Options of the edit-pair builder (`pairs:` section of a job spec), one dataclass per source.

    pairs:
      experts: {source: edits/, kinds: [expert, inverse, mixed], max_pairs_per_group: null}
      video:   {source: clips/, interval_s: 1.0, band: [0.80, 0.985], encoder: clip}
      render:  {n: 200, languages: [en, zh], edits: [change, recolor, move, remove]}

Each kind is its own step (`pairs-experts`, `pairs-video`, `pairs-render`) and its own
`curate pairs LAKE --from KIND` call; all three write `edit_pairs` (and the images they make or
read to `pool`, so rules, dedup and scores apply to pair images as to every image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ExpertsConfig", "PAIR_KINDS", "PairsConfig", "RENDER_EDITS", "RenderConfig", "VideoConfig"]

PAIR_KINDS = ("expert", "inverse", "mixed", "video", "render")
EXPERT_KINDS = ("expert", "inverse", "mixed")
RENDER_EDITS = ("change", "recolor", "move", "remove")


@dataclass
class ExpertsConfig:
    """Pairs from expert edits: groups of one original and N edited versions of it.

    source: a directory (one sub-directory per group: `original.*` and the edits, with
        `edits.jsonl` / `edits.json` / `edits.csv` naming each edit's file, task and
        instruction) or a table file (.parquet / .csv / .jsonl) with one row per image:
        group, file, role (original | edit), task, instruction. See `experts.py`.
    name: source name recorded in `pool.sources` for the group images.
    kinds: which of the N(N+1) ordered pairs to emit: expert (original -> edit, N),
        inverse (edit -> original, N), mixed (edit i -> edit j, N(N-1)).
    max_pairs_per_group: cap per group (expert pairs first, then inverse, then mixed, each in
        a fixed order); None = all.
    difference_captions: when the `caption:` section names a captioner (an http url, or a vllm
        weights directory), pairs whose instruction cannot be composed get a VLM difference
        caption; without one they are kept with `instruction_source = pending`.
    """

    source: str | list[str] = ""
    name: str = "experts"
    kinds: list[str] = field(default_factory=lambda: list(EXPERT_KINDS))
    max_pairs_per_group: int | None = field(default=None, metadata={"min": 1})
    difference_captions: bool = True


@dataclass
class VideoConfig:
    """Pairs from video frames: two frames `interval_s` apart inside one shot whose image
    embeddings' cosine similarity lies inside `band` (above it: a duplicate; below it: the
    scene changed).

    source: video files, a directory of them, or a pattern (`clips/**/*.mp4`).
    name: source name recorded in `pool.sources` for the frames.
    interval_s: seconds between the two frames of a pair (and between sampled frames).
    max_frames_per_shot: sampled frames per shot at most (evenly spread when a shot is long).
    max_frames_per_video: sampled frames per video at most.
    detector: PySceneDetect detector: "adaptive" (AdaptiveDetector, Open-Sora's settings) or
        "content" (ContentDetector).
    threshold: the detector's threshold (adaptive_threshold for "adaptive", threshold for
        "content"); None = the detector's documented default used by the peers (3.0 / 27.0).
    min_shot_s: shots shorter than this are not used for pairs, seconds.
    analysis_side: shot detection decodes frames downscaled to this longer side, px.
    frame_side: frames are stored (JPEG) at this longer side at most, px.
    jpeg_quality: quality of the stored frames (1..100).
    band: [min, max] cosine similarity of a kept pair, inclusive.
    encoder: the image encoder (a name among `score.encoders`; None = the alignment encoder,
        else the first) that embeds the frames.
    """

    source: str | list[str] = ""
    name: str = "video"
    interval_s: float = field(default=1.0, metadata={"min": 0.04})
    max_frames_per_shot: int = field(default=8, metadata={"min": 2})
    max_frames_per_video: int = field(default=64, metadata={"min": 2})
    detector: str = "adaptive"
    threshold: float | None = None
    min_shot_s: float = field(default=0.5, metadata={"min": 0.0})
    analysis_side: int = field(default=256, metadata={"min": 32})
    frame_side: int = field(default=1024, metadata={"min": 64})
    jpeg_quality: int = field(default=92, metadata={"min": 1, "max": 100})
    band: list[float] = field(default_factory=lambda: [0.80, 0.985])
    encoder: str | None = None


@dataclass
class RenderConfig:
    """Rendered text-editing pairs: text drawn on a flat region of a pool image (the source),
    the same scene drawn again with the text changed, recoloured, moved or removed (the
    target); the instruction is known by construction. Every pair is checked by OCR.

    n: pairs to make per run.
    name: source name recorded in `pool.sources` for the rendered images.
    languages: "en" and / or "zh" (the instruction is written in the text's language).
    edits: which edits to draw (change, recolor, move, remove).
    fonts: face names of `curation.demo.fonts` (sans, serif, mono, sans-bold, cjk-sans,
        cjk-mono) or font file paths; a face without a glyph of the text is not used for it.
    font_dir: a directory whose .ttf / .otf / .ttc files are added to `fonts`.
    vertical_share: share of Chinese texts drawn top-to-bottom (raqm's 'ttb').
    text_height: [min, max] height of a text line, as a share of the image's shorter side.
    side: backgrounds are drawn at this longer side, px.
    min_background_side: pool images with a shorter side below this are not used, px.
    max_region_std: a region is flat enough for text when its luma standard deviation (0-255)
        is at most this.
    ocr_check: read the target back with the OCR operator; a pair whose target text does not
        read back is kept with an `error` saying so.
    max_cer: the largest character error rate of the read-back that still passes (0..1).
    seed: every choice (background, text, font, colours, place) comes from (seed, pair index).
    """

    n: int = field(default=100, metadata={"min": 1})
    name: str = "render"
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    edits: list[str] = field(default_factory=lambda: list(RENDER_EDITS))
    fonts: list[str] = field(default_factory=lambda: ["sans", "serif", "sans-bold", "cjk-sans"])
    font_dir: str | None = None
    vertical_share: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    text_height: list[float] = field(default_factory=lambda: [0.07, 0.14])
    side: int = field(default=768, metadata={"min": 128})
    min_background_side: int = field(default=256, metadata={"min": 32})
    max_region_std: float = field(default=28.0, metadata={"min": 0.0})
    ocr_check: bool = True
    max_cer: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    seed: int = field(default=0, metadata={"min": 0})


@dataclass
class PairsConfig:
    """The edit-pair builder: `experts`, `video` and `render` (see each)."""

    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    render: RenderConfig = field(default_factory=RenderConfig)

    def validate(self) -> None:
        """ValueError naming the key for values the dataclass types cannot express."""
        bad = [k for k in self.experts.kinds if k not in EXPERT_KINDS]
        if bad or not self.experts.kinds:
            raise ValueError(f"pairs.experts.kinds: {bad or 'empty'}; choose from {list(EXPERT_KINDS)}")
        lo_hi = self.video.band
        if len(lo_hi) != 2 or not -1.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
            raise ValueError(f"pairs.video.band: need [min, max] with -1 <= min <= max <= 1, got {lo_hi}")
        if self.video.detector not in ("adaptive", "content"):
            raise ValueError(f"pairs.video.detector: {self.video.detector!r}; choose adaptive or content")
        bad = [x for x in self.render.languages if x not in ("en", "zh")]
        if bad or not self.render.languages:
            raise ValueError(f"pairs.render.languages: {bad or 'empty'}; choose from ['en', 'zh']")
        bad = [x for x in self.render.edits if x not in RENDER_EDITS]
        if bad or not self.render.edits:
            raise ValueError(f"pairs.render.edits: {bad or 'empty'}; choose from {list(RENDER_EDITS)}")
        h = self.render.text_height
        if len(h) != 2 or not 0.0 < h[0] <= h[1] < 1.0:
            raise ValueError(f"pairs.render.text_height: need [min, max] with 0 < min <= max < 1, got {h}")
