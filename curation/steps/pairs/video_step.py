"""Video-frame pairs on Ray Data: one actor per CPU holds the image encoder, takes one video at a
time, decodes it once (`video.read_video`: shots, frames `interval_s` apart), embeds the sampled
frames in one batched forward per 32 and keeps the pairs of consecutive frames whose cosine
similarity lies inside the band (above: a duplicate; below: the scene changed).

Only the frames of kept pairs leave the actor (as JPEG bytes), so the driver's memory holds the
pairs' frames, never a video's.
"""

from __future__ import annotations

import json
import posixpath
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from curation.steps.pairs.config import VideoConfig
from curation.storage import io

if TYPE_CHECKING:
    from curation.steps.profiling.score import ScoreConfig

__all__ = ["VIDEO_EXTENSIONS", "encoder_for", "list_videos", "run_videos"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".flv", ".mpg", ".mpeg", ".wmv")
EMBED_BATCH = 32  # frames per encoder forward

RESULT_SCHEMA = pa.schema([
    ("uri", pa.string()), ("error", pa.string()), ("warning", pa.string()), ("duration_s", pa.float64()),
    ("frames_decoded", pa.int64()), ("shots_json", pa.string()), ("sampled", pa.int64()),
    ("frame_jpeg", pa.list_(pa.binary())), ("frame_t", pa.list_(pa.float64())), ("frame_shot", pa.list_(pa.int32())),
    ("frame_index", pa.list_(pa.int64())), ("pair_a", pa.list_(pa.int32())), ("pair_b", pa.list_(pa.int32())),
    ("pair_sim", pa.list_(pa.float32())), ("too_similar", pa.int64()), ("too_far", pa.int64()),
])


def list_videos(sources: list[str]) -> list[str]:
    """Video uris of the sources: files as given, directories walked for `VIDEO_EXTENSIONS`,
    patterns expanded. Sorted, each once."""
    from curation.steps.ingest import patterns

    out: list[str] = []
    for source in sources:
        for uri in patterns.expand(source):
            fs, path = io.resolve(uri)
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                prefix = uri.split("://", 1)[0] + "://" if "://" in uri else ""
                out += [prefix + f.path.lstrip("/") if prefix else f.path for f in found
                        if f.type == pafs.FileType.File and posixpath.splitext(f.path)[1].lower() in VIDEO_EXTENSIONS]
            else:
                out.append(uri)
    return sorted(set(out))


class VideoPairer:
    """Ray Data actor: encoder loaded once, then videos one batch at a time."""

    def __init__(self, cfg: VideoConfig, encoder: Any, torch_threads: int = 1):
        import torch

        from operators.models.encoders import load_encoder

        torch.set_num_threads(torch_threads)
        self.cfg = cfg
        self.encoder = load_encoder(encoder)

    def embed(self, images: list) -> np.ndarray:
        """L2-normalised image embeddings (n, D), float32."""
        vecs = []
        for i in range(0, len(images), EMBED_BATCH):
            pixels = np.stack([self.encoder.prepare(im) for im in images[i:i + EMBED_BATCH]])
            vecs.append(self.encoder.encode_images(pixels).normalized.cpu().numpy())
        return np.concatenate(vecs) if vecs else np.zeros((0, self.encoder.embed_dim), np.float32)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.one(uri) for uri in batch["uri"].to_pylist()], schema=RESULT_SCHEMA)

    def one(self, uri: str) -> dict:
        from curation.steps.pairs.video import frame_pairs, read_video

        v = read_video(uri, self.cfg)
        row: dict[str, Any] = {"uri": uri, "error": v.error, "warning": v.warning, "duration_s": v.duration_s,
                               "frames_decoded": v.n_frames_decoded, "shots_json": json.dumps(v.shots),
                               "sampled": len(v.frames), "too_similar": 0, "too_far": 0}
        if v.error:
            return row
        candidates = frame_pairs(v.frames, self.cfg.interval_s)
        if not candidates:
            return row
        vecs = self.embed([f.image for f in v.frames])
        lo, hi = self.cfg.band
        kept = []
        for a, b in candidates:
            sim = float(vecs[a] @ vecs[b])
            if sim > hi:
                row["too_similar"] += 1
            elif sim < lo:
                row["too_far"] += 1
            else:
                kept.append((a, b, sim))
        used = sorted({i for a, b, _ in kept for i in (a, b)})
        at = {i: k for k, i in enumerate(used)}
        frames = [v.frames[i] for i in used]
        row.update(frame_jpeg=[f.jpeg for f in frames], frame_t=[f.t_s for f in frames],
                   frame_shot=[f.shot for f in frames], frame_index=[f.index for f in frames],
                   pair_a=[at[a] for a, _, _ in kept], pair_b=[at[b] for _, b, _ in kept],
                   pair_sim=[s for _, _, s in kept])
        return row


def run_videos(cfg: VideoConfig, score: "ScoreConfig") -> tuple[list[dict], dict]:
    """(one result per video: uri, error, frames [{jpeg, t_s, shot, index}], pairs [{a, b,
    similarity, shot_span}]; notes for the step summary)."""
    import ray
    import ray.data

    from curation.runtime import cluster_cpus
    from curation.steps.ingest.patterns import as_list

    uris = list_videos(as_list(cfg.source))
    if not uris:
        raise ValueError(f"pairs.video.source: no video files ({', '.join(VIDEO_EXTENSIONS)}) in {cfg.source}")
    encoder = encoder_for(score, cfg)
    t0 = time.perf_counter()
    actors = max(1, min(len(uris), cluster_cpus()))
    # one block per video, made on the driver: no upstream task competes with the actors for CPUs
    ds = ray.data.from_arrow([pa.table({"uri": [u]}) for u in uris]).map_batches(
        VideoPairer, fn_constructor_kwargs={"cfg": cfg, "encoder": encoder}, batch_format="pyarrow", batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    table = pa.concat_tables(ray.get(ds.to_arrow_refs())) if uris else RESULT_SCHEMA.empty_table()
    wall = time.perf_counter() - t0
    results = []
    for r in table.to_pylist():
        shots = json.loads(r["shots_json"] or "[]")
        frames = [{"jpeg": j, "t_s": t, "shot": s, "index": i} for j, t, s, i in
                  zip(r["frame_jpeg"] or [], r["frame_t"] or [], r["frame_shot"] or [], r["frame_index"] or [])]
        pairs = [{"a": a, "b": b, "similarity": s, "shot_span": shots[frames[a]["shot"]]} for a, b, s in
                 zip(r["pair_a"] or [], r["pair_b"] or [], r["pair_sim"] or [])]
        results.append({"uri": r["uri"], "error": r["error"], "warning": r["warning"], "frames": frames,
                        "pairs": pairs, "shots": shots, "duration_s": r["duration_s"]})
    minutes = sum(r["duration_s"] or 0.0 for r in results) / 60.0
    col = {c: table[c].to_pylist() for c in ("frames_decoded", "sampled", "too_similar", "too_far")}
    notes = {
        "videos": len(uris), "video_minutes": round(minutes, 3),
        "shots": sum(len(r["shots"]) for r in results if not r["error"]),
        "frames_decoded": sum(col["frames_decoded"]), "frames_sampled": sum(col["sampled"]),
        "rejected_by_band": {"too_similar": sum(col["too_similar"]), "too_far": sum(col["too_far"])},
        "band": list(cfg.band), "encoder": encoder.name,
        "throughput": f"{minutes / (wall / 60.0):.2f} video minutes per minute" if wall > 0 else "",
        "warnings": [f"{r['uri']}: {r['warning']}" for r in results if r["warning"]][:10],
    }
    return results, notes


def encoder_for(score: "ScoreConfig", cfg: VideoConfig) -> Any:
    """The encoder config that embeds the frames: `pairs.video.encoder`, else the alignment
    encoder, else the first of `score.encoders` (ValueError naming the key otherwise)."""
    encoders = {e.name: e for e in score.encoders}
    name = cfg.encoder or score.alignment_encoder or next(iter(encoders), None)
    if name is None:
        raise ValueError("pairs.video.encoder: frames are embedded by an image encoder; configure one in "
                         "score.encoders")
    if name not in encoders:
        raise ValueError(f"pairs.video.encoder: {name!r} is not among score.encoders {sorted(encoders)}")
    return encoders[name]
