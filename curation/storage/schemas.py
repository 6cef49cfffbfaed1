"""Arrow schemas of every lake table: the single source of truth.

Feature columns are declared by the operators that write them (`operators.*.writes`); this
module composes them with the key and provenance columns into the table schemas. Field
metadata `doc` carries each column's meaning, unit and scale.
"""

from __future__ import annotations

from typing import Iterable

import pyarrow as pa

from operators.base import Operator, field

ID = field("id", pa.string(), "sha256 of the image bytes, lowercase hex (64 chars); for an item whose bytes could not be read, sha256 of b'unreadable:' + uri")
URI = field("uri", pa.string(), "where the bytes are: a path or pyarrow.fs URI; for a WebDataset member, '<shard uri>#<member name>'")
BYTE_OFFSET = field("byte_offset", pa.int64(), "offset of the bytes inside `uri`'s container file (WebDataset tar member), bytes; null for whole files")
BYTE_SIZE = field("byte_size", pa.int64(), "length of the bytes at byte_offset, bytes; null for whole files")
CAPTION = field("caption", pa.string(), "primary caption, UTF-8 (invalid bytes replaced with U+FFFD)")
CAPTION_FIELDS = field("caption_fields", pa.map_(pa.string(), pa.string()), "every caption field of the source by name (caption, caption_zh, ...)")
TAGS = field("tags", pa.list_(pa.string()), "tags from the source (sidecar JSON or a tags column)")
ERROR = field("error", pa.string(), "null if fine; else '<step or operator>: <message>' per failure, joined with '; '")

POOL_SCHEMA = pa.schema([
    ID, URI, BYTE_OFFSET, BYTE_SIZE,
    field("uris", pa.list_(pa.string()), "every uri whose bytes hash to this id, first seen first"),
    field("sources", pa.list_(pa.string()), "every ingest source name that supplied this id"),
    CAPTION, CAPTION_FIELDS, TAGS,
    field("caption_issue", pa.string(), "null, or why the caption is suspect: empty, invalid_utf8, truncated, missing"),
    field("extra_json", pa.string(), "extra source columns kept as a JSON object"),
    field("bytes_len", pa.int64(), "image file size, bytes"),
    field("ingest_batch", pa.string(), "the ingest run that first added this id"),
    ERROR,
])

PROFILE_KEY_FIELDS = (ID, ERROR, field("profile_producer", pa.string(), "operator identities (name@version) that produced the row, comma-separated"))

BUCKET_FIELDS = (
    field("bucket_height", pa.int32(), "training resolution bucket height, px"),
    field("bucket_width", pa.int32(), "training resolution bucket width, px"),
    field("seq_len", pa.int32(), "image tokens at the bucket size: (H/(vae·patch))·(W/(vae·patch))"),
)
MANIFEST_KEY_FIELDS = (ID, URI, BYTE_OFFSET, BYTE_SIZE, CAPTION, CAPTION_FIELDS, TAGS)


def profile_schema(operators: Iterable[type[Operator]]) -> pa.Schema:
    """Schema of the `profiles` table for a set of operators (keys, then each operator's columns)."""
    fields = list(PROFILE_KEY_FIELDS)
    seen = {f.name for f in fields}
    for op in operators:
        for f in op.writes:
            if f.name in seen:
                raise ValueError(f"column {f.name!r} written by {op.name} is already declared")
            seen.add(f.name)
            fields.append(f)
    return pa.schema(fields)


def manifest_schema(feature_fields: Iterable[pa.Field]) -> pa.Schema:
    """Schema of `manifests/<stage>`: keys, caption, bucket and sequence length, then features."""
    fields = list(MANIFEST_KEY_FIELDS) + list(BUCKET_FIELDS)
    seen = {f.name for f in fields}
    fields += [f for f in feature_fields if f.name not in seen and f.name not in ("error", "profile_producer")]
    return pa.schema(fields)


def scores_schema(score_columns: Iterable[str]) -> pa.Schema:
    """Schema of `scores`: id, error, one float32 per head / alignment column, producer."""
    fields = [ID, ERROR]
    for name in score_columns:
        doc = ("cosine similarity of L2-normalised image and caption embeddings under the alignment "
               "encoder, in [-1, 1]; scales differ between models: threshold by pool percentile"
               if name.startswith("clip_alignment") else "head output on the encoder's image embedding (see the head's docs)")
        fields.append(field(name, pa.float32(), doc))
    fields.append(field("score_producer", pa.string(), "encoders and heads (with weight files) that produced the row"))
    return pa.schema(fields)


def dedup_schema(levels: int) -> pa.Schema:
    """Schema of `dedup`: one decision per pool id, merging exact, pHash and semantic groups."""
    fields = [
        ID,
        field("group_id", pa.string(), "id of the group's keeper; equals id for items without duplicates"),
        field("group_size", pa.int32(), "items in the duplicate group (pHash and semantic relations merged)"),
        field("keep", pa.bool_(), "False: a duplicate of group_id, removed at export"),
        field("dup_kind", pa.string(), "null, 'phash', 'semantic' or 'semantic+phash': which relations formed the group"),
        field("exact_copies", pa.int32(), "uris with byte-identical content (collapsed into this id at ingest)"),
    ]
    fields += [field(f"community_l{i}", pa.string(), f"semantic community at Leiden level {i} (id of its smallest member); null without an embedding")
               for i in range(levels)]
    return pa.schema(fields)


REMOVALS_SCHEMA = pa.schema([
    ID,
    field("reason", pa.string(), "why the item is removed (takedown, failure pruning, ...); export reports rule 'removed'"),
    field("query", pa.string(), "the query that selected it ('text:...' / 'image:<path>'), or null"),
    field("community", pa.string(), "the community that was pruned, or null"),
    field("similarity", pa.float32(), "similarity of the hit that selected the community"),
    field("decided_at", pa.string(), "UTC ISO-8601 time of the decision"),
])


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
    ID,
    field("weight", pa.float64(), "sampling weight; mean 1 over samples with tags, 1 for samples without; "
                                  "see graph.kg.weights for the formula"),
    field("bm25", pa.float64(), "sum over the sample's tags of BM25(tag, sample) (Lucene idf)"),
    field("hierarchy", pa.float64(), "BM25-weighted mean hierarchy factor of the matched nodes; 1 = neutral"),
    field("boost", pa.float64(), "BM25-weighted mean node boost (prompts, trending); 1 = neutral"),
    field("tags_total", pa.int32(), "tags of the sample"),
    field("tags_matched", pa.int32(), "tags mapped to a kept knowledge-graph node"),
    field("nodes", pa.list_(pa.int64()), "matched node ids, in tag order"),
    field("weight_producer", pa.string(), "knowledge-graph version and weight parameters"),
])


def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of `embeddings/<encoder>`: one L2-normalised float16 vector per id."""
    return pa.schema([ID, field("encoder", pa.string(), "encoder name"),
                      field("vector", pa.list_(pa.float16(), dim), f"L2-normalised image embedding, float16, {dim} dims")])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table`'s columns to `schema`, adding missing columns as nulls."""
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
