"""One read and one decode per item, shared by profiling, scoring and image search.

    item = read_item(row, plan, max_pixels)      # row: a pool row (uri, byte_offset, byte_size)
    item = read_item("query.png", plan)          # or a plain uri

`read_item` reads the bytes (`curation.storage.io.read_bytes`: a file, or a byte range of a
WebDataset shard), parses the header with the pixel limit applied before anything is decoded
(`operators.decode.open_header`) and decodes once per `plan`. Every failure is one `ItemError`
whose message is the row's `error` text: `read: <ExceptionType>: <message>` or
`decode: <message>`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from curation.storage import io
from operators.decode import DEFAULT_MAX_PIXELS, DecodeError, DecodePlan, ImageItem, decode_pixels, open_header

HEADER_ONLY = DecodePlan("header")


class ItemError(Exception):
    """An item that cannot be read or decoded; str(exc) is its `error` message.

    `item` is the header-only ImageItem when the header parsed but the pixels were refused
    (too many pixels) or failed (truncated, corrupt), so header-only operators can still
    describe the file; None when the bytes could not be read or are not an image.
    """

    def __init__(self, message: str, item: ImageItem | None = None):
        super().__init__(message)
        self.item = item


def read_item(row: Mapping[str, Any] | str, plan: DecodePlan = HEADER_ONLY,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageItem:
    """Read one item and decode it per `plan`; raises ItemError.

    row: a mapping with `uri` and optionally `byte_offset` / `byte_size` (bytes), or a uri.
    max_pixels: images whose header claims more pixels (stored width x height) are refused
        on the header, before any pixel or compressed metadata is decoded.
    """
    if isinstance(row, str):
        uri, offset, size = row, None, None
    else:
        uri, offset, size = row.get("uri"), row.get("byte_offset"), row.get("byte_size")
    if not uri:
        raise ItemError("read: no uri")
    try:
        # Looked up on the module at call time (tests count reads by patching it).
        data = io.read_bytes(uri, offset, size)
    except (OSError, ValueError, pa.ArrowException) as exc:  # missing file, bad uri, store error
        raise ItemError(io.printable(f"read: {type(exc).__name__}: {exc}")) from None
    try:
        item = open_header(data, max_pixels)
    except DecodeError as exc:
        raise ItemError(f"decode: {exc}", exc.item) from None
    try:
        decode_pixels(item, plan, max_pixels)
    except DecodeError as exc:
        raise ItemError(f"decode: {exc}", item) from None
    return item
