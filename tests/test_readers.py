"""Every lake table and the plain manifest open in the readers users have: pyarrow, pandas,
Polars, DuckDB and Hugging Face `datasets` (no Arrow type any of them cannot map)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.storage.lake import Lake


@pytest.fixture(scope="module")
def lake(demo_lake):
    return Lake(demo_lake["lake"], create=False)


def test_every_table_opens_in_every_reader(lake):
    import datasets
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    tables = lake.tables()
    assert {"pool", "profiles", "scores", "embeddings/clip", "dedup", "manifests/lowres", "weights"} <= set(tables)
    for table in tables:
        path = lake.table_uri(table)
        rows = lake.read(table)
        assert DeltaTable(path).to_pandas().shape[0] == rows.num_rows, table
        assert pl.read_delta(path).height == rows.num_rows, table
        ds = DeltaTable(path).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads the local by name)
        assert duckdb.sql("select count(*) from ds").fetchall() == [(rows.num_rows,)], table
        hf = datasets.Dataset(rows)  # fails on any Arrow type `datasets` has no feature for
        assert hf.num_rows == rows.num_rows, table


def test_plain_manifest_opens_in_every_reader(demo_lake):
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.parquet as pq

    manifest = Path(demo_lake["workdir"]) / "export" / "lowres" / "manifest.parquet"
    n = pq.read_table(manifest).num_rows
    assert n > 0 and pd.read_parquet(manifest).shape[0] == n and pl.read_parquet(manifest).height == n
    assert duckdb.sql(f"select count(*) from read_parquet('{manifest}')").fetchall() == [(n,)]
    hf = datasets.load_dataset("parquet", data_files=str(manifest), split="train",
                               cache_dir=str(manifest.parent / ".hf-cache"))
    assert hf.num_rows == n
    row = hf[0]
    assert {"id", "uri", "caption", "caption_fields", "bucket_height", "bucket_width", "seq_len"} <= set(row)
    assert all(set(f) == {"key", "value"} for f in row["caption_fields"] or [])
