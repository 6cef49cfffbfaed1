"""Small tables users hand to the knowledge-graph steps (judgments, prompt logs): Parquet,
CSV or JSON lines, chosen by the file's suffix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json")


def is_table_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def read_table_file(path: str | Path, text_columns: tuple[str, ...] = (), what: str = "table file") -> pa.Table:
    """The file as a table; `text_columns` (where present) are read as strings, so a title
    such as "1987" or a numeric-looking prompt never becomes a number. `what` names the file
    in errors."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        # absent columns in column_types are ignored by the reader
        types = {name: pa.string() for name in text_columns}
        table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pjson

        table = pjson.read_json(path)  # newline-delimited JSON objects
    else:
        raise ValueError(f"{what} {path}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")
    for name in text_columns:
        if name in table.column_names and not pa.types.is_string(table.column(name).type):
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.string()))
    return table
