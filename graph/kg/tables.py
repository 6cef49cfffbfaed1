"""Arrow schemas of the tables the knowledge graph produces: `kg_nodes`, `kg_edges`, `weights`.

They live here, with the code that fills them (`graph.kg.model`, `graph.kg.weights`), because
`graph/` never imports `curation/`; the lake's table catalogue (`curation.storage.schemas`)
imports them from here. Field metadata `doc` carries each column's meaning, unit and scale.
"""

from __future__ import annotations

import pyarrow as pa


def field(name: str, type_: pa.DataType, doc: str) -> pa.Field:
    """A nullable Arrow field whose metadata `doc` says what it is, its unit and scale."""
    return pa.field(name, type_, nullable=True, metadata={"doc": doc})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table`'s columns to `schema`, adding missing columns as nulls."""
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


KG_NODES_SCHEMA = pa.schema([
    field("node", pa.int64(), "node id: the Wikipedia page id for articles; 2**40 + k for nodes this project adds"),
    field("title", pa.string(), "concept name (Wikipedia title with spaces, or the taxonomy / trending name)"),
    field("kind", pa.string(), "'article' (Wikipedia), 'taxonomy' (a parent learned from caption tags) or 'trending'"),
    field("source", pa.string(), "provenance: the dump file, 'taxonomy:<tags table>' or 'trending:<file>'"),
    field("kept", pa.bool_(), "False: pruned (see drop_reason); pruned nodes stay in the table"),
    field("drop_reason", pa.string(), "null if kept; else 'pagerank<...' or '<judge>: <why>'"),
    field("pagerank", pa.float64(), "PageRank over article links (damping 0.85), sums to 1 over articles; null for added nodes"),
    field("in_degree", pa.int32(), "article links into the node"),
    field("out_degree", pa.int32(), "article links out of the node"),
    field("level", pa.int32(), "taxonomy level: 0 for articles and tags' leaf concepts, 1.. for learned parents"),
    field("tag_count", pa.int64(), "caption tags (occurrences over the pool) mapped to this node"),
    field("prompt_count", pa.int64(), "user prompts in the prompt log mentioning this node"),
    field("boost", pa.float64(), "multiplicative sampling boost from prompts and trending lists; 1 = neutral"),
    field("boost_source", pa.string(), "null, or where the boost came from: 'prompts:<file>', 'trending:<file>' ('; '-joined)"),
    field("ancestors", pa.int32(), "nodes reachable upward through parent edges"),
    field("descendants", pa.int32(), "nodes reachable downward through parent edges"),
])

KG_EDGES_SCHEMA = pa.schema([
    field("src", pa.int64(), "link: source article; parent: the child; alias: the redirect page id"),
    field("dst", pa.int64(), "link: target article; parent: the parent; alias: the node the alias names"),
    field("kind", pa.string(), "'link', 'parent' or 'alias'"),
    field("alias", pa.string(), "the alias title (redirect), for kind 'alias'; else null"),
])

WEIGHTS_SCHEMA = pa.schema([
    field("id", pa.string(), "pool item id (sha256 of the image bytes, lowercase hex)"),
    field("weight", pa.float64(), "sampling weight; mean 1 over samples with tags, 1 for samples without; "
                                  "see graph.kg.weights for the formula"),
    field("bm25", pa.float64(), "sum over the sample's tags of BM25(tag, sample) (Lucene idf)"),
    field("hierarchy", pa.float64(), "BM25-weighted mean hierarchy factor of the matched nodes; 1 = neutral"),
    field("boost", pa.float64(), "BM25-weighted mean node boost (prompts, trending); 1 = neutral"),
    field("tags_total", pa.int32(), "tags of the sample"),
    field("tags_matched", pa.int32(), "tags mapped to a kept knowledge-graph node"),
    field("nodes", pa.list_(pa.int64()), "matched node ids, in tag order"),
    field("weight_producer", pa.string(), "knowledge-graph version and weight parameters"),
    field("terms", pa.list_(pa.string()), "the sample's folded tags, sorted, repeats kept: what its BM25 was computed "
                                          "from (an incremental run compares it to find retagged samples)"),
])

TAG_STATS_SCHEMA = pa.schema([
    field("tag", pa.string(), "folded tag (graph.kg.textnorm.fold)"),
    field("df", pa.int64(), "pool samples whose tags contain the tag (BM25 document frequency)"),
    field("occurrences", pa.int64(), "occurrences of the tag over all samples (summed per node: the concept count)"),
    field("node", pa.int64(), "knowledge-graph node the tag maps to; null when none"),
])
