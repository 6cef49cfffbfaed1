"""Vectorised hashing over the lake's hex ids (sha256, 64 lowercase hex characters).

Per-row `hashlib` calls cost about a microsecond each; a sampler draw or an edit-pair build
over millions of rows hashes with numpy over the Arrow string buffers instead:
`hex_words` reads the leading hex characters of each id as big-endian 64-bit words, and
`splitmix64` (Steele, Lea and Flood's SplitMix64 finaliser) mixes them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

__all__ = ["hex_words", "pair_hash", "pair_hash_indexed", "splitmix64"]

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_BYTE_HEX = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(), dtype=np.uint8).reshape(256, 2)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of a uint64 array (a bijection; every input bit reaches every
    output bit)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def hex_words(arr: pa.Array | pa.ChunkedArray, words: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 (n, words): the first 16·words hex characters of each string, big-endian;
    bool (n,): which rows are such hex strings). Rows that are null, shorter or not hex are
    False and their words are 0."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.cast(pa.string())
    n, width = len(arr), 16 * words
    out = np.zeros((n, words), dtype=np.uint64)
    if n == 0:
        return out, np.zeros(0, dtype=bool)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
    lengths = np.diff(offsets)
    valid = lengths >= width
    if arr.null_count:
        valid &= arr.is_valid().to_numpy(zero_copy_only=False)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    if np.all(lengths == lengths[0]) and lengths[0] >= width and not arr.null_count:
        # equal-length ids (sha256 hex): a strided view, no gather
        chars = data[offsets[0]:offsets[-1]].reshape(n, -1)[:, :width]
    else:
        starts = np.where(valid, offsets[:-1], 0)
        chars = data[np.minimum(starts[:, None] + np.arange(width), max(len(data) - 1, 0))] if len(data) else \
            np.zeros((n, width), np.uint8)
    nibbles = _HEX[chars]
    valid &= ~(nibbles == 255).any(axis=1)
    nibbles = np.where(valid[:, None], nibbles, 0).astype(np.uint8)
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])  # 8 bytes per word
    out[:] = packed.view(">u8").reshape(n, words).astype(np.uint64)
    return out, valid


def pair_hash(left: pa.Array | pa.ChunkedArray, right: pa.Array | pa.ChunkedArray, tag: np.ndarray) -> pa.Array:
    """A 128-bit hash of (left id, right id, tag) per row, as 32 lowercase hex characters.

    Hex ids (the lake's) are mixed from their first 128 bits with numpy; any other id (or a
    null) is hashed per row with blake2b of 'left>right:tag'. The result depends only on the
    row's values, never on the batch it is computed in. tag: a small non-negative int per row.
    """
    n = len(tag)
    rows = np.arange(n)
    return _pair_hash(hex_words(left, 2), rows, hex_words(right, 2), rows, np.asarray(tag, np.uint64),
                      lambda i: (left[int(i)].as_py(), right[int(i)].as_py()))


def pair_hash_indexed(ids: pa.Array | pa.ChunkedArray, a: np.ndarray, b: np.ndarray, tag: np.ndarray) -> pa.Array:
    """`pair_hash(ids[a], ids[b], tag)` with each id parsed once (pairs outnumber the ids)."""
    words = hex_words(ids, 2)
    return _pair_hash(words, a, words, b, np.asarray(tag, np.uint64),
                      lambda i: (ids[int(a[i])].as_py(), ids[int(b[i])].as_py()))


def _pair_hash(left: tuple[np.ndarray, np.ndarray], a: np.ndarray, right: tuple[np.ndarray, np.ndarray],
               b: np.ndarray, tag: np.ndarray, values_of) -> pa.Array:
    (lw, lok), (rw, rok) = left, right
    n = len(tag)
    digest = np.zeros((n, 2), dtype=np.uint64)
    words = (lw[a, 0], lw[a, 1], rw[b, 0], rw[b, 1])
    for col, seed in enumerate((np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))):
        x = splitmix64(np.full(n, seed, dtype=np.uint64) ^ tag)
        for word in words:
            x = splitmix64(x ^ word)
        digest[:, col] = x
    text = _BYTE_HEX[digest.astype(">u8").view(np.uint8).reshape(n, -1)].reshape(-1)  # big-endian hex
    out = pa.StringArray.from_buffers(n, pa.py_buffer(np.arange(0, 32 * n + 1, 32, dtype=np.int32)),
                                      pa.py_buffer(text.tobytes()))
    slow = np.flatnonzero(~(lok[a] & rok[b]))
    if len(slow) == 0:
        return out
    values = out.to_numpy(zero_copy_only=False).astype(object)
    for i in slow:
        x, y = values_of(i)
        values[i] = hashlib.blake2b(f"{x}>{y}:{int(tag[i])}".encode("utf-8", "surrogatepass"),
                                    digest_size=16).hexdigest()
    return pa.array(values, pa.string())

