"""Other input layouts for the same images: a source table (Parquet/CSV/JSONL) and WebDataset shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

LICENSES = ["cc-by-4.0", "cc0-1.0", "cc-by-sa-4.0", "unknown"]
TAR_MTIME = 1_700_000_000  # fixed member mtime (Unix seconds) so shards are byte-reproducible
_WDS_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".gif": "gif"}

Captions = Sequence[str | None] | Mapping[str, str | None]


def _caption_list(image_paths: Sequence[Path], captions: Captions | None) -> list[str | None]:
    """Captions aligned with image_paths; a mapping may be keyed by str(path) or by Path."""
    if captions is None:
        return [None] * len(image_paths)
    if isinstance(captions, Mapping):
        return [captions.get(str(p), captions.get(p)) for p in image_paths]  # type: ignore[call-overload]
    if len(captions) != len(image_paths):
        raise ValueError(f"{len(captions)} captions for {len(image_paths)} images")
    return list(captions)


def write_source_table(out_path: Path, image_paths: Sequence[Path], fmt: str, captions: Captions,
                       extra_columns: bool = True, include_missing: bool = True,
                       include_duplicate_rows: bool = True, *, uri_column: str = "uri",
                       captions_zh: Captions | None = None, as_file_uri: bool = False,
                       seed: int = 0) -> Path:
    """Write a table of images to `out_path` as fmt = "parquet" | "csv" | "jsonl".

    Columns: `uri_column` (str(path), or a file:// URI when as_file_uri), ``caption``,
    ``caption_zh`` when captions_zh is given, and with extra_columns ``license`` (str) and
    ``aesthetic_hint`` (float, 3-8). include_missing adds a row whose uri names a file that does
    not exist (``missing_000000.jpg`` beside the first image); include_duplicate_rows appends an
    exact copy of the first row. Captions may be None (null). Returns out_path.
    """
    if fmt not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"unknown table format {fmt!r}")
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("no images")
    rng = np.random.default_rng(seed)
    caps = _caption_list(paths, captions)
    zh = _caption_list(paths, captions_zh) if captions_zh is not None else None
    if include_missing:
        paths.append(paths[0].parent / "missing_000000.jpg")
        caps.append("A photo that was deleted before download.")
        if zh is not None:
            zh.append(None)
    uris = [p.absolute().as_uri() if as_file_uri else str(p) for p in paths]
    cols: dict[str, list] = {uri_column: uris, "caption": caps}
    if zh is not None:
        cols["caption_zh"] = zh
    if extra_columns:
        cols["license"] = [LICENSES[int(i)] for i in rng.integers(len(LICENSES), size=len(uris))]
        cols["aesthetic_hint"] = [round(float(x), 2) for x in rng.uniform(3.0, 8.0, size=len(uris))]
    if include_duplicate_rows:
        for values in cols.values():
            values.append(values[0])
    table = pa.table({k: pa.array(v, type=pa.float64() if k == "aesthetic_hint" else pa.string())
                      for k, v in cols.items()})
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, out_path)
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        pcsv.write_csv(table, out_path)
    else:
        with open(out_path, "w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out_path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(out_dir: Path, image_paths: Sequence[Path], captions: Captions,
                     shard_size: int = 16, *, prefix: str = "shard", start_key: int = 0) -> list[Path]:
    """Write WebDataset shards ``{prefix}-000000.tar`` ... of `shard_size` samples each.

    Sample k (key ``f"{start_key + k:09d}"``) holds consecutive members ``{key}.jpg`` (or
    .png/.webp/.gif: the image's bytes, unchanged), ``{key}.txt`` (UTF-8 caption; left out when
    the caption is None) and ``{key}.json`` ({"key", "caption", "source_name"}). Members have a
    fixed mtime, so the same inputs give byte-identical shards. Returns the shard paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in image_paths]
    caps = _caption_list(paths, captions)
    shards = []
    for s, start in enumerate(range(0, len(paths), shard_size)):
        shard = out_dir / f"{prefix}-{s:06d}.tar"
        with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
            for k in range(start, min(start + shard_size, len(paths))):
                key = f"{start_key + k:09d}"
                p, cap = paths[k], caps[k]
                _add(tar, f"{key}.{_WDS_EXT.get(p.suffix.lower(), 'jpg')}", p.read_bytes())
                if cap is not None:
                    _add(tar, f"{key}.txt", cap.encode("utf-8"))
                meta = {"key": key, "caption": cap, "source_name": p.name}
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        shards.append(shard)
    return shards


# ---- img2dataset output folders ------------------------------------------------------------------

IMG2DATASET_ERRORS = [  # (status, error_message) of failed rows, as img2dataset reports them
    ("failed_to_download", "HTTP Error 404: Not Found"),
    ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>"),
    ("failed_to_download", "The read operation timed out"),
    ("failed_to_resize", "cannot identify image file <_io.BytesIO object at 0x7f3a2c1b4e50>"),
]


def write_img2dataset(out_dir: Path, n: int, fail_every: int | None = 4, mode: str = "webdataset", *,
                      shard_size: int = 8, additional_columns: bool = True, seed: int = 0) -> dict:
    """Write `n` samples as img2dataset writes its output folder, in output_format `mode`:

    - "webdataset": per shard ``00000.tar`` (members ``KEY.jpg``, ``KEY.json``, ``KEY.txt`` in
      webdataset's sorted order; only successful samples), ``00000.parquet`` (every row, failed
      ones included) and ``00000_stats.json``;
    - "files": the same members as files in a ``00000/`` folder, with the parquet and stats beside;
    - "parquet": only ``00000.parquet`` (+ stats) with the image bytes in a ``jpg`` column.

    Keys are img2dataset's: 5-digit shard id + 4-digit index in the shard (``000010003``).
    Parquet columns: ``key, caption, url, status, error_message, width, height, original_width,
    original_height, exif, sha256`` and, with additional_columns, ``license`` (str) and
    ``similarity`` (float, LAION's clip score), which img2dataset keeps when asked to
    (save_additional_columns). Every `fail_every`-th sample fails (status ``failed_to_download``
    or ``failed_to_resize``, an error_message, null sizes and hash, no image). Images are small
    distinct JPEGs. Returns {"shards": [paths], "success": {key: row + "image": bytes},
    "failed": {key: row}}.
    """
    import hashlib
    import math

    import pyarrow.parquet as pq
    from PIL import Image

    if mode not in ("webdataset", "files", "parquet"):
        raise ValueError(f"unknown img2dataset output mode {mode!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    oom_sample = max(1, math.ceil(math.log10(10_000)))  # img2dataset's default number_sample_per_shard
    success: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    shards: list[Path] = []
    n_fail = 0
    for s, start in enumerate(range(0, n, shard_size)):
        shard_name = f"{s:05d}"
        rows: list[dict] = []
        images: list[bytes | None] = []
        for i, k in enumerate(range(start, min(start + shard_size, n))):
            key = f"{shard_name}{i:0{oom_sample}d}"
            row = {"key": key, "caption": f"a photo number {k} of a {['cat', 'dog', 'bird', 'tree'][k % 4]}",
                   "url": f"https://img.example.com/{k:06d}.jpg"}
            if additional_columns:
                row["license"] = LICENSES[k % len(LICENSES)]
                row["similarity"] = round(float(rng.uniform(0.28, 0.4)), 4)
            if fail_every and k % fail_every == fail_every - 1:
                status, message = IMG2DATASET_ERRORS[n_fail % len(IMG2DATASET_ERRORS)]
                n_fail += 1
                row.update(status=status, error_message=message, width=None, height=None,
                           original_width=None, original_height=None, exif=None, sha256=None)
                failed[key] = row
                image = None
            else:
                w, h = 32 + 8 * (k % 5), 24 + 8 * (k % 3)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "JPEG", quality=90)
                image = buf.getvalue()
                row.update(status="success", error_message=None, width=w, height=h,
                           original_width=w * 4, original_height=h * 4, exif="{}",
                           sha256=hashlib.sha256(image).hexdigest())
                success[key] = dict(row, image=image)
            rows.append(row)
            images.append(image)
        columns = ["key", "caption", "url", "status", "error_message", "width", "height", "original_width",
                   "original_height", "exif", "sha256"] + (["license", "similarity"] if additional_columns else [])
        types = {"width": pa.int32(), "height": pa.int32(), "original_width": pa.int32(),
                 "original_height": pa.int32(), "similarity": pa.float64()}
        schema = pa.schema([(c, types.get(c, pa.string())) for c in columns])
        table = pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows], schema=schema)
        if mode == "parquet":
            table = table.append_column(pa.field("jpg", pa.binary()), pa.array(images, pa.binary()))
        pq.write_table(table, out_dir / f"{shard_name}.parquet")
        members = [(f"{r['key']}.{ext}", data) for r, img in zip(rows, images) if img is not None
                   for ext, data in (("jpg", img), ("json", json.dumps({c: r[c] for c in columns}, indent=4).encode()),
                                     ("txt", r["caption"].encode("utf-8")))]
        if mode == "webdataset":
            shard = out_dir / f"{shard_name}.tar"
            with tarfile.open(shard, "w") as tar:
                for name, data in members:
                    _add(tar, name, data)
            shards.append(shard)
        elif mode == "files":
            folder = out_dir / shard_name
            folder.mkdir(exist_ok=True)
            for name, data in members:
                (folder / name).write_bytes(data)
            shards.append(folder)
        else:
            shards.append(out_dir / f"{shard_name}.parquet")
        ok = sum(img is not None for img in images)
        status_dict: dict[str, int] = {"success": ok} if ok else {}
        for r in rows:
            if r["status"] != "success":
                status_dict[r["error_message"]] = status_dict.get(r["error_message"], 0) + 1
        stats = {"count": len(rows), "successes": ok,
                 "failed_to_download": sum(r["status"] == "failed_to_download" for r in rows),
                 "failed_to_resize": sum(r["status"] == "failed_to_resize" for r in rows),
                 "duration": 1.5, "bytes_downloaded": sum(len(i) for i in images if i),
                 "start_time": float(TAR_MTIME), "end_time": float(TAR_MTIME) + 1.5, "status_dict": status_dict}
        (out_dir / f"{shard_name}_stats.json").write_text(json.dumps(stats, indent=4))
    return {"shards": shards, "success": success, "failed": failed}
