"""Convert a lake from the pre-Delta layout to Delta tables (`curate migrate LAKE`).

The old layout kept each table as `<table>/data/vNNNNNNNN/*.parquet` plus commit records
`<table>/_commits/vNNNNNNNN.json` listing the snapshot's files. Migration writes each table's
latest committed snapshot as version 0 of a Delta table in the same directory, with the old
producer in the commit metadata, then moves the old `data/` and `_commits/` directories to
`<lake>/_legacy/<table>/` (nothing is deleted: remove that folder once satisfied). Older
versions are not carried over. A table whose old record lists a missing file is reported and
left as it was. Running it again on a converted lake does nothing.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from curation.storage import io
from curation.storage.lake import LEGACY_COMMITS, Lake, LakeError
from curation.storage.schemas import CAPTION_FIELDS_TYPE, embeddings_schema

LEGACY_DIR = "_legacy"


def migrate(root: str) -> dict[str, Any]:
    """Convert every old-layout table of the lake at `root`; returns table -> outcome."""
    lake = Lake(root, create=False, allow_legacy=True)
    outcome: dict[str, Any] = {}
    for table in lake.legacy_tables():
        try:
            outcome[table] = _migrate_table(lake, table)
        except (LakeError, OSError, ValueError) as exc:
            outcome[table] = {"error": str(exc)}
    return outcome


def _migrate_table(lake: Lake, table: str) -> dict[str, Any]:
    base = lake.table_dir(table)
    commits = posixpath.join(base, LEGACY_COMMITS)
    records = sorted(i.path for i in io.list_dir(lake.fs, commits)
                     if posixpath.basename(i.path).startswith("v") and i.path.endswith(".json"))
    if not records:
        raise LakeError(f"{table}: no commit record in {commits}")
    with lake.fs.open_input_stream(records[-1]) as f:
        rec = json.loads(f.read())
    files = [posixpath.join(base, p) for p in rec.get("files", [])]
    missing = [p for p in files if lake.fs.get_file_info(p).type == pafs.FileType.NotFound]
    if missing:
        raise LakeError(f"{table}: the old snapshot lists missing files, e.g. {missing[0]}")
    if files:
        data = pads.dataset(files, filesystem=lake.fs, format="parquet").to_table()
    else:
        schema_hex = (rec.get("stats") or {}).get("schema")
        schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(schema_hex))) if schema_hex else pa.schema([])
        data = schema.empty_table()
    data = _delta_types(data)
    # Move the old layout aside first: the Delta table is created in the same directory.
    legacy = posixpath.join(lake.root, LEGACY_DIR, table)
    lake.fs.create_dir(legacy, recursive=True)
    for name in (LEGACY_COMMITS, "data"):
        src = posixpath.join(base, name)
        if lake.fs.get_file_info(src).type != pafs.FileType.NotFound:
            lake.fs.move(src, posixpath.join(legacy, name))
    commit = lake.write(table, data, mode="overwrite",
                        producer=dict(rec.get("producer") or {}, migrated_from=f"legacy v{rec.get('version')}"))
    return {"rows": commit.rows, "legacy_version": rec.get("version"), "moved_to": legacy}


def _delta_types(table: pa.Table) -> pa.Table:
    """Old embeddings kept `vector` as a fixed-size list of float16, which Delta cannot store:
    pack each row's float16 values into bytes (the layout `embeddings/<encoder>` uses now).
    Old `caption_fields` maps become the list of {key, value} structs the pool uses now."""
    for i, f in enumerate(table.schema):
        if pa.types.is_map(f.type):
            col = table.column(i).combine_chunks()
            entries = pa.StructArray.from_arrays([col.keys.cast(pa.string()), col.items.cast(pa.string())],
                                                 names=["key", "value"])
            as_list = pa.ListArray.from_arrays(col.offsets, entries, mask=col.is_null())
            table = table.set_column(i, pa.field(f.name, CAPTION_FIELDS_TYPE, f.nullable, f.metadata), as_list)
            continue
        if pa.types.is_fixed_size_list(f.type) and pa.types.is_float16(f.type.value_type):
            col = table.column(i).combine_chunks()
            dim = f.type.list_size
            values = col.values.to_numpy(zero_copy_only=False).astype("<f2", copy=False)
            offsets = pa.array(range(0, (len(col) + 1) * dim * 2, dim * 2), pa.int32())
            packed = pa.BinaryArray.from_buffers(pa.binary(), len(col), [None, offsets.buffers()[1],
                                                 pa.py_buffer(values.tobytes())])
            if col.null_count:
                raise LakeError(f"column {f.name!r} has null vectors; the old layout never wrote those")
            table = table.set_column(i, embeddings_schema(dim).field("vector").with_name(f.name), packed)
    return table
