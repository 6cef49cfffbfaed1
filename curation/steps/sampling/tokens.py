"""Sequence lengths: image tokens at the training size plus, when configured, caption tokens.

Image tokens: the VAE downsamples by `vae_factor` (8 for the 16-channel Flux VAE the target
recipe uses) and the transformer groups `patch_size`² latent pixels (2×2) into one token, so
one token covers (vae_factor·patch_size)² = 16×16 px: a 1024×1024 image is 4096 tokens.
Both streams are padded up to a multiple of `pad_multiple` (32 in public single-stream DiT
ports), so seq_len = ceil_m(H/16 · W/16) + ceil_m(caption tokens).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.sampling.config import BatchConfig, TextTokens

__all__ = ["ceil_to", "image_tokens", "sequence_lengths", "text_tokens"]

# Han, kana, hangul, CJK punctuation and full-width forms: about one token per character in
# the multilingual tokenizers of this field.
_CJK = r"[\x{3000}-\x{30FF}\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{AC00}-\x{D7AF}\x{F900}-\x{FAFF}\x{FF00}-\x{FFEF}]"


def ceil_to(x, m: int):
    x = np.asarray(x, dtype=np.int64)
    return -(-x // m) * m


def image_tokens(height, width, patch_px: int) -> np.ndarray:
    """Tokens of an image at (height, width) px: (H // p) · (W // p), p = vae_factor·patch_size."""
    return (np.asarray(height, np.int64) // patch_px) * (np.asarray(width, np.int64) // patch_px)


def text_tokens(captions: pa.Array | list, cfg: TextTokens) -> np.ndarray:
    """Caption tokens per caption (int64, ≤ cfg.max_tokens); 0 when mode is none."""
    arr = pa.array(captions, pa.string()) if not isinstance(captions, (pa.Array, pa.ChunkedArray)) else captions
    n = len(arr)
    if cfg.mode == "none" or n == 0:
        return np.zeros(n, dtype=np.int64)
    if cfg.mode == "tokenizer":
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ValueError("text_tokens.mode 'tokenizer' needs the `tokenizers` package (pip install tokenizers)") from None
        try:
            tok = Tokenizer.from_file(cfg.tokenizer)
        except Exception as exc:  # noqa: BLE001 - the library raises its own exception type
            raise ValueError(f"text_tokens.tokenizer: cannot load {cfg.tokenizer!r} as a tokenizer.json: {exc}") from None
        texts = [t or "" for t in arr.to_pylist()]
        counts = np.array([len(e.ids) for e in tok.encode_batch(texts)], dtype=np.int64)
    else:
        arr = pc.fill_null(arr, "")
        chars = pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        cjk = pc.count_substring_regex(arr, _CJK).to_numpy(zero_copy_only=False).astype(np.int64)
        counts = cjk + np.ceil((chars - cjk) / cfg.chars_per_token).astype(np.int64)
    return np.minimum(counts, cfg.max_tokens)


def sequence_lengths(height, width, captions, patch_px: int, cfg: BatchConfig) -> np.ndarray:
    """int64 seq_len per item: ceil_m(image tokens) + ceil_m(caption tokens), m = pad_multiple."""
    img = ceil_to(image_tokens(height, width, patch_px), cfg.pad_multiple)
    txt = text_tokens(captions, cfg.text_tokens)
    return img + np.where(txt > 0, ceil_to(txt, cfg.pad_multiple), 0)
