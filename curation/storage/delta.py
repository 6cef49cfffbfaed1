"""Delta-format details behind `curation.storage.lake`: writing one data file, the type
mapping Delta needs, keys, and the commit metadata. Module-level functions, so Ray can ship
`write_block` to its workers.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

WRITER_APP_ID = "curate-writer"
OWN_FILE = re.compile(r"^part-[0-9a-f]{32}\.parquet$")  # the names `write_block` gives its files
META_KEY = "curate"

def write_block(batch: pa.Table, fs: pafs.FileSystem, dir_path: str, schema: pa.Schema | None) -> pa.Table:
    """Write one Parquet file of `batch` into `dir_path`; return its listing row."""
    columns = ["path", "size", "rows", "mtime_ms"]
    if batch.num_rows == 0:
        return pa.table({c: pa.array([], pa.string() if c == "path" else pa.int64()) for c in columns})
    name = f"part-{uuid.uuid4().hex}.parquet"
    path = posixpath.join(dir_path, name)
    fs.create_dir(dir_path, recursive=True)
    if schema is not None:
        batch = batch.select(schema.names).cast(schema)
    pq.write_table(to_delta(batch), path, filesystem=fs, compression="zstd")
    size = fs.get_file_info(path).size
    return pa.table({"path": [name], "size": [size], "rows": [batch.num_rows], "mtime_ms": [int(time.time() * 1000)]})


def check_catalogue(table: str, schema: pa.Schema) -> None:
    """Tables the catalogue names must be written in their declared schema (the key and
    required columns, the declared types); other tables are the user's own."""
    from curation.storage.schemas import SchemaError, table_spec

    try:
        spec = table_spec(table)
    except SchemaError:
        return
    spec.check(schema, table)


# Delta has no unsigned integers: such columns are stored as the signed type of the same width
# (the same bits), marked in the field metadata, and viewed back on read.
SIGNED = {pa.uint8(): pa.int8(), pa.uint16(): pa.int16(), pa.uint32(): pa.int32(), pa.uint64(): pa.int64()}
TYPE_META = b"curate.arrow_type"


def delta_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        if f.type in SIGNED:
            f = pa.field(f.name, SIGNED[f.type], f.nullable, {**(f.metadata or {}), TYPE_META: str(f.type).encode()})
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def to_delta(table: pa.Table) -> pa.Table:
    if not any(f.type in SIGNED for f in table.schema):
        return table
    schema = delta_schema(table.schema)
    cols = [pa.chunked_array([c.view(schema.field(i).type) for c in col.chunks], schema.field(i).type)
            if table.schema.field(i).type in SIGNED else col for i, col in enumerate(table.columns)]
    return pa.Table.from_arrays(cols, schema=schema)


def from_delta(table: pa.Table) -> pa.Table:
    marked = [i for i, f in enumerate(table.schema) if TYPE_META in (f.metadata or {})]
    for i in marked:
        f = table.schema.field(i)
        target = pa.type_for_alias(f.metadata[TYPE_META].decode())
        col = pa.chunked_array([c.view(target) for c in table.column(i).chunks], target)
        meta = {k: v for k, v in f.metadata.items() if k != TYPE_META}
        table = table.set_column(i, pa.field(f.name, target, f.nullable, meta or None), col)
    return table


def as_table_types(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """A block read from a data file in the table's (Delta) schema, unsigned types restored."""
    return from_delta(batch.select(schema.names).cast(schema))


def key_array(table: pa.Table, keys: list[str]) -> pa.Array:
    if len(keys) == 1:
        return table.column(keys[0]).combine_chunks().cast(pa.string())
    cols = [pc.cast(table.column(k), pa.string()) for k in keys]
    return pc.binary_join_element_wise(*cols, "\x1f").combine_chunks()


def first_occurrence(values: pa.Array) -> pa.Array:
    """True where a value appears for the first time in `values`."""
    idx = pa.table({"v": values, "i": pa.array(range(len(values)), pa.int64())})
    firsts = idx.group_by("v", use_threads=False).aggregate([("i", "min")])["i_min"]
    return pc.is_in(idx["i"], value_set=firsts).combine_chunks()


def commit_properties(meta: dict[str, Any], *, create: bool = False):
    """Commit properties of every lake commit.

    create: the commit creates the table (version 0). delta-rs would retry a create that lost
        the race at the next version, silently adding a second "version 0" on top of the
        winner's (its conflict check lets a create through); with no retries the loser fails
        and the lake appends to, or recomputes against, the winner's table instead.
    """
    from deltalake import CommitProperties
    from deltalake.transaction import Transaction

    # The application transaction makes any two of our commits to one table conflict when
    # they start from the same snapshot (delta-rs checks app ids the committing writer read).
    return CommitProperties(custom_metadata={META_KEY: json.dumps(meta, default=str, sort_keys=True)},
                            app_transactions=[Transaction(WRITER_APP_ID, time.time_ns() // 1000)],
                            max_commit_retries=0 if create else None)


def parse_meta(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}
    return {}  # written by another Delta client: no curate metadata


def backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * (2 ** attempt)) * (0.5 + (uuid.uuid4().int % 1000) / 1000))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def as_uri(root: str) -> str:
    if "://" in root:
        return root
    return "file://" + os.path.abspath(os.path.expanduser(root))
