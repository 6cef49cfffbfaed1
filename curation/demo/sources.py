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
