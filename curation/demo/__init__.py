"""Deterministic synthetic data: photo-like images, planted defects, a demo corpus, bad inputs,
source tables and WebDataset shards. numpy + Pillow + pyarrow (fonts: matplotlib's and Noto CJK).

- `images`: `photo_like`, the defects in `DEFECTS`, the copies in `NEAR_DUPLICATE_MAKERS`;
- `oddities`: unusual-but-valid formats, undecodable files, odd caption sidecars;
- `corpus`: `write_jpegs` (benchmarks) and `make_demo_corpus` (demo and tests);
- `fonts`, `text`: faces for known text (DejaVu from matplotlib, Noto Sans CJK for Chinese) and
  drawing it with its ground-truth boxes (`draw_text`, `sign_image`: the corpus's `text` images);
- `sources`: `write_source_table` and `write_webdataset`.
"""

from curation.demo.captions import Caption, make_caption
from curation.demo.corpus import CorpusInfo, make_demo_corpus, write_jpegs
from curation.demo.images import (
    DEFECTS, NEAR_DUPLICATE_MAKERS, QUALITY_KEY, blocky, blur, color_cast, encode, extreme_aspect,
    flat, frame, low_res, noise, phash_distance, photo_like, recompressed_copy, resized_copy,
    save_image, slight_crop,
)
from curation.demo.oddities import BAD_WRITERS, CAPTION_WRITERS, SPECIAL_WRITERS, write_bad_inputs
from curation.demo.sources import write_source_table, write_webdataset

__all__ = [
    "BAD_WRITERS", "CAPTION_WRITERS", "Caption", "CorpusInfo", "DEFECTS", "NEAR_DUPLICATE_MAKERS",
    "QUALITY_KEY", "SPECIAL_WRITERS", "blocky", "blur", "color_cast", "encode", "extreme_aspect",
    "flat", "frame", "low_res", "make_caption", "make_demo_corpus", "noise", "phash_distance",
    "photo_like", "recompressed_copy", "resized_copy", "save_image", "slight_crop",
    "write_bad_inputs", "write_jpegs", "write_source_table", "write_webdataset",
]
