"""Column names of a table source, read cheaply (a Parquet footer, a CSV header line, the
first JSON line) so a wrong or missing uri column is reported before any work starts."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq

from curation.storage import io as lake_io

URI_COLUMNS = ("uri", "url", "path", "image_path", "image", "file", "filepath", "file_name", "filename")
TABLE_EXTENSIONS = (".parquet", ".csv", ".jsonl", ".json", ".ndjson")
_HEAD_BYTES = 1 << 20  # the header line or first record must fit in 1 MiB


def table_columns(source: str) -> list[str] | None:
    """Column names of a table file source; None for sources that are not table files."""
    lower = source.lower()
    if not lower.endswith(TABLE_EXTENSIONS):
        return None
    fs, path = lake_io.resolve(source)
    if lower.endswith(".parquet"):
        with fs.open_input_file(path) as f:
            return list(pq.read_schema(f).names)
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


def check_uri_column(source: str, uri_column: str | None) -> str | None:
    """The uri column a table source will use; ValueError naming the columns when the given
    one is absent or none of the usual names is there."""
    names = table_columns(source)
    if names is None:
        return None
    found = choose_uri_column(names, uri_column)
    if uri_column and found is None:
        raise ValueError(f"uri column {uri_column!r} is not in {source} (columns: {names})")
    if found is None:
        raise ValueError(f"{source} has no uri column (looked for {list(URI_COLUMNS)}; columns: {names}); "
                         "name it with --uri-column / ingest.uri_column")
    return found
