"""curation.storage.schemas: the table catalogue (names, keys, schemas, checks on write)."""

from __future__ import annotations

import importlib

import numpy as np
import pyarrow as pa
import pytest

from curation.storage import schemas as S
from curation.storage.schemas import CATALOG, SchemaError, table_spec


def test_every_table_has_one_entry_with_its_key():
    names = [s.name for s in CATALOG]
    assert len(names) == len(set(names))
    assert {"pool", "profiles", "ocr", "captions", "scores", "embeddings/<encoder>", "dedup", "graph_edges/<encoder>", "removals",
            "kg_nodes", "kg_edges", "weights", "manifests/<stage>", "edit_pairs", "samples/<stage>",
            "batches/<stage>", "hardcases", "reviews", "labels", "runs", "tag_stats"} == set(names)
    keys = {s.name: s.key for s in CATALOG}
    assert keys["kg_nodes"] == ("node",) and keys["kg_edges"] == ("src", "dst", "kind")
    assert keys["graph_edges/<encoder>"] == ("src", "dst")
    assert keys["edit_pairs"] == ("pair_id",)
    assert keys["hardcases"] == ("case_id",) and keys["reviews"] == ("review_id",)
    assert keys["tag_stats"] == ("tag",)
    assert all(k == ("id",) for n, k in keys.items()
               if not n.startswith(("kg_", "graph_edges", "edit_pairs", "hardcases", "reviews", "runs", "tag_stats")))
    for spec in CATALOG:
        assert spec.doc and spec.written_by
        for f in spec.fields().values():
            assert (f.metadata or {}).get(b"doc"), f"{spec.name}.{f.name} has no doc"


def test_names_resolve_and_unknown_names_list_the_catalogue():
    assert table_spec("pool").name == "pool"
    assert table_spec("embeddings/clip_b32").name == "embeddings/<encoder>"
    assert table_spec("embeddings/<encoder>").name == "embeddings/<encoder>"
    assert table_spec(S.manifest_table("lowres")).name == "manifests/<stage>"
    assert S.embeddings_table("clip") == "embeddings/clip" and S.graph_edges_table("clip") == "graph_edges/clip"
    assert table_spec("graph_edges/x").part("graph_edges/x") == "x"
    assert table_spec("embeddings/<encoder>").members(["pool", "embeddings/b", "embeddings/a", "graph_edges/a"]) == ["a", "b"]
    for bad in ("nope", "embeddings/", "embeddings/a/b", "pool/x"):
        with pytest.raises(SchemaError, match="unknown lake table .*pool, profiles"):
            table_spec(bad)
    with pytest.raises(SchemaError, match="not a valid name"):
        S.embeddings_table("a/b")
    for name in ("pool", "profiles", "embeddings/x", "manifests/sft"):  # no two entries claim one name
        assert sum(s.matches(name) for s in CATALOG) == 1


def test_table_name_constants_come_from_the_catalogue():
    from curation.steps.export import export
    from curation.steps.ingest import pool
    from curation.steps.kg import steps

    assert (pool.POOL, export.DEDUP, export.REMOVALS) == (S.POOL, S.DEDUP, S.REMOVALS)
    assert (steps.KG_NODES, steps.KG_EDGES, steps.WEIGHTS) == (S.KG_NODES, S.KG_EDGES, S.WEIGHTS)
    for name in (S.POOL, S.PROFILES, S.SCORES, S.DEDUP, S.REMOVALS, S.KG_NODES, S.KG_EDGES, S.WEIGHTS):
        assert table_spec(name).name == name


def test_graph_owned_schemas_are_imported_from_graph():
    from graph.kg import tables

    assert table_spec("kg_nodes").schema is tables.KG_NODES_SCHEMA
    assert table_spec("kg_edges").schema is tables.KG_EDGES_SCHEMA
    assert table_spec("weights").schema is tables.WEIGHTS_SCHEMA
    assert tables.WEIGHTS_SCHEMA.field("id").type == S.POOL_SCHEMA.field("id").type


def test_written_by_names_real_functions():
    for spec in CATALOG:
        dotted = spec.written_by.split()[0]
        module, fn = dotted.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), fn)), spec.written_by


def test_builders_satisfy_their_entries():
    from operators.registry import DEFAULT_PROFILE_OPERATORS, get_operator

    profiles = S.profile_schema(get_operator(n) for n in DEFAULT_PROFILE_OPERATORS)
    table_spec("profiles").check(profiles)
    table_spec("scores").check(S.scores_schema(["aesthetic", "clip_alignment"]))
    table_spec("dedup").check(S.dedup_schema(2))
    table_spec("manifests/lowres").check(S.manifest_schema(profiles))
    assert table_spec("profiles").builder is S.profile_schema


def test_check_names_table_and_column():
    pool = table_spec("pool")
    with pytest.raises(SchemaError, match=r"table 'pool': key column 'id' is missing"):
        pool.check(pa.schema([("uri", pa.string())]))
    with pytest.raises(SchemaError, match=r"table 'pool': column 'bytes_len' is int32, the catalogue declares int64"):
        pool.check(S.POOL_SCHEMA.set(S.POOL_SCHEMA.get_field_index("bytes_len"), pa.field("bytes_len", pa.int32())))
    with pytest.raises(SchemaError, match=r"'pool': column 'surprise' is not in its schema"):
        pool.check(S.POOL_SCHEMA.append(pa.field("surprise", pa.string())))
    with pytest.raises(SchemaError, match=r"table 'embeddings/clip': column 'vector' \(binary\) is missing"):
        table_spec("embeddings/clip").check(pa.schema([("id", pa.string()), ("encoder", pa.string())]), "embeddings/clip")
    with pytest.raises(SchemaError, match=r"'kg_edges': key column 'kind' is missing"):
        table_spec("kg_edges").check(pa.schema([("src", pa.int64()), ("dst", pa.int64())]))
    with pytest.raises(SchemaError, match=r"'scores': column 'score_producer'"):
        table_spec("scores").check(pa.schema([("id", pa.string()), ("error", pa.string()), ("aesthetic", pa.float32())]))
    with pytest.raises(SchemaError, match=r"'dedup': column 'keep' is string"):
        table_spec("dedup").check(S.dedup_schema(0).set(3, pa.field("keep", pa.string())))


def test_check_accepts_what_delta_hands_back():
    """large/view strings and lists, fixed-size lists read back as lists, all-null columns."""
    same = S.same_type
    assert same(pa.large_string(), pa.string()) and same(pa.large_binary(), pa.binary())
    assert same(pa.large_list(pa.large_string()), pa.list_(pa.string()))
    assert same(pa.list_(pa.float16()), pa.list_(pa.float16(), 4))
    assert same(pa.list_(pa.field("element", pa.int64())), pa.list_(pa.int64()))
    assert same(pa.map_(pa.large_string(), pa.string()), pa.map_(pa.string(), pa.string()))
    assert same(pa.null(), pa.int64()) and same(pa.dictionary(pa.int32(), pa.string()), pa.string())
    assert not same(pa.int32(), pa.int64()) and not same(pa.list_(pa.int32()), pa.list_(pa.int64()))
    assert not same(pa.string(), pa.binary()) and not same(pa.float32(), pa.float64())
    schema = pa.schema([(f.name, pa.large_string() if f.type == pa.string() else f.type) for f in S.REMOVALS_SCHEMA])
    table_spec("removals").check(schema)


def test_fixed_schemas_survive_a_delta_round_trip(tmp_path):
    deltalake = pytest.importorskip("deltalake")
    for spec in CATALOG:
        if spec.schema is None:
            continue
        path = str(tmp_path / spec.name.replace("/", "_").strip("<>"))
        deltalake.write_deltalake(path, spec.conform(spec.schema.empty_table()))
        back = deltalake.DeltaTable(path).to_pyarrow_table()
        spec.check(back.schema)
        assert back.schema.field(spec.key[0]).metadata == spec.schema.field(spec.key[0]).metadata


def test_conform_fixed_schema():
    spec = table_spec("removals")
    t = spec.conform(pa.table({"reason": ["takedown"], "id": ["a"], "similarity": pa.array([0.5], pa.float64())}))
    assert t.schema == S.REMOVALS_SCHEMA and t.schema.field("id").metadata[b"doc"]
    assert t.column_names == S.REMOVALS_SCHEMA.names and t["query"].null_count == 1
    assert t["similarity"].type == pa.float32()
    with pytest.raises(SchemaError, match=r"'removals': columns \['oops'\] are not in its schema"):
        spec.conform(pa.table({"id": ["a"], "oops": [1]}))
    with pytest.raises(SchemaError, match=r"'removals': key column 'id' has 1 null"):
        spec.conform(pa.table({"id": ["a", None]}))
    with pytest.raises(SchemaError, match=r"'removals': key column 'id' is missing"):
        spec.conform(pa.table({"reason": ["x"]}))
    with pytest.raises(SchemaError, match=r"column 'similarity' \(string\) does not cast to float"):
        spec.conform(pa.table({"id": ["a"], "similarity": ["high"]}))


def test_conform_configuration_dependent_tables():
    spec = table_spec("scores")
    raw = pa.table({"aesthetic": pa.array([1.0], pa.float64()), "id": ["a"], "score_producer": ["m"]})
    t = spec.conform(raw)  # required fields first, cast; other columns kept as they are
    assert t.column_names == ["id", "error", "score_producer", "aesthetic"] and t["aesthetic"].type == pa.float64()
    t = spec.conform(raw, S.scores_schema(["aesthetic"]))  # the builder's schema for this configuration
    assert t.schema == S.scores_schema(["aesthetic"])
    with pytest.raises(SchemaError, match="'scores': column 'score_producer' .* is missing"):
        spec.conform(raw, pa.schema([S.ID, S.ERROR]))


def test_embeddings_schema_records_dim():
    schema = S.embeddings_schema(512)
    vector = schema.field("vector")
    assert vector.type == pa.binary() and vector.metadata[b"dim"] == b"512"
    assert vector.metadata[b"dtype"] == b"float16" and vector.metadata[b"byteorder"] == b"little"
    table_spec("embeddings/x").check(schema)
    with pytest.raises(ValueError):
        S.embeddings_schema(0)
    assert np.dtype("<f2").itemsize == 2


def test_every_step_reads_and_writes_catalogued_tables():
    from curation.steps import registry

    for step in registry.steps():
        for name in (*step.reads, *step.writes):
            table_spec(name)  # raises SchemaError for a table the catalogue does not know
        for name in step.writes:  # the catalogue names the writer
            assert step.name.replace("-", "_") in table_spec(name).written_by, (step.name, name)
