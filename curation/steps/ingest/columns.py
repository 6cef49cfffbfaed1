"""Column names of a table source, read cheaply (a Parquet footer, an Arrow schema, a CSV
header line, the first JSON line) so a wrong or missing uri or image column is reported before
any work starts."""

from __future__ import annotations

import csv
import io
import json

from curation.storage import io as lake_io
from curation.steps.ingest.embedded import EMBEDDED_EXTENSIONS, find_image_column, read_schema

URI_COLUMNS = ("uri", "url", "path", "image_path", "image", "file", "filepath", "file_name", "filename")
TABLE_EXTENSIONS = (".parquet", ".arrow", ".feather", ".ipc", ".csv", ".jsonl", ".json", ".ndjson")
_HEAD_BYTES = 1 << 20  # the header line or first record must fit in 1 MiB


def table_columns(source: str) -> list[str] | None:
    """Column names of a table file source; None for sources that are not table files."""
    lower = source.lower()
    if not lower.endswith(TABLE_EXTENSIONS):
        return None
    fs, path = lake_io.resolve(source)
    if lower.endswith(EMBEDDED_EXTENSIONS):
        return list(read_schema(fs, path).names)
    with fs.open_input_stream(path) as f:
        head = f.read(_HEAD_BYTES).decode("utf-8", "replace")
    if lower.endswith(".csv"):
        return next(csv.reader(io.StringIO(head)), [])
    for line in head.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                return None  # a JSON array file or a bad first line: the reader reports it per row
            return list(record) if isinstance(record, dict) else None
    return []


def choose_uri_column(names: list[str], uri_column: str | None) -> str | None:
    """The given column if the table has it, else the first usual uri column name; None if neither."""
    if uri_column:
        return uri_column if uri_column in names else None
    return next((c for c in URI_COLUMNS if c in names), None)


def check_table_columns(source: str, uri_column: str | None, image_column: str | None = None) -> str | None:
    """The column a table source will be read by: its image column (Parquet / Arrow tables
    with image bytes, unless `uri_column` is given) or its uri column; None for sources that
    are not table files. ValueError naming the columns when a given column is absent (or does
    not hold image bytes), or when neither kind of column is found."""
    lower = source.lower()
    if lower.endswith(EMBEDDED_EXTENSIONS):
        schema = read_schema(*lake_io.resolve(source))
        names = list(schema.names)
        if not uri_column:
            try:
                found = find_image_column(schema, image_column)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
            if found is not None:
                return found
    else:
        names = table_columns(source)
    if names is None:
        return None
    found = choose_uri_column(names, uri_column)
    if uri_column and found is None:
        raise ValueError(f"uri column {uri_column!r} is not in {source} (columns: {names})")
    if found is None:
        hint = " or an image column (binary, or a struct<bytes, path>)" if lower.endswith(EMBEDDED_EXTENSIONS) else ""
        raise ValueError(f"{source} has no uri column (looked for {list(URI_COLUMNS)}; columns: {names}){hint}; "
                         "name it with --uri-column / ingest.uri_column")
    return found
