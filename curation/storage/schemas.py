"""The lake's table catalogue: every table's name, key, Arrow schema and writer, in one place.

`CATALOG` lists one `TableSpec` per table (or per family of tables: `embeddings/<encoder>`,
`graph_edges/<encoder>`, `manifests/<stage>`); `table_spec(name)` resolves a concrete name.
The lake calls `TableSpec.conform` (pyarrow tables) or `TableSpec.check` (schemas of Ray
datasets) on every write, so a table never drifts from its declaration.

Tables whose columns depend on configuration have no fixed schema: their spec names the
`required` fields (keys and provenance) and a `builder` that makes the full schema for a
configuration (`profile_schema(operators)`, `scores_schema(columns)`, `dedup_schema(levels)`,
`manifest_schema(features)`). Feature columns are declared by the operators that write them
(`operators.*.writes`). Field metadata `doc` carries each column's meaning, unit and scale.

Adding a table is one `TableSpec` entry in `CATALOG` plus, if its name is used in code, one
name constant below. Schemas owned by `graph/` (which never imports `curation/`) are
imported from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from typing import Callable, Iterable

import pyarrow as pa

from graph.kg.tables import KG_EDGES_SCHEMA, KG_NODES_SCHEMA, TAG_STATS_SCHEMA, WEIGHTS_SCHEMA, conform
from graph.proximity import EDGE_SCHEMA
from operators.base import Operator, field

__all__ = [
    "CATALOG", "TableSpec", "SchemaError", "table_spec", "conform",
    "POOL", "PROFILES", "SCORES", "DEDUP", "REMOVALS", "KG_NODES", "KG_EDGES", "WEIGHTS", "TAG_STATS",
    "CAPTIONS", "CAPTIONS_SCHEMA", "OCR", "EDIT_PAIRS", "HARDCASES", "HARDCASES_SCHEMA", "REVIEWS", "REVIEWS_SCHEMA",
    "LABELS", "LABELS_SCHEMA", "RUNS", "RUNS_SCHEMA", "embeddings_table", "graph_edges_table", "manifest_table", "samples_table", "batches_table",
    "EDIT_PAIRS_SCHEMA", "SAMPLES_SCHEMA", "BATCHES_SCHEMA",
    "POOL_SCHEMA", "REMOVALS_SCHEMA", "KG_NODES_SCHEMA", "KG_EDGES_SCHEMA", "WEIGHTS_SCHEMA", "TAG_STATS_SCHEMA",
    "profile_schema", "scores_schema", "dedup_schema", "manifest_schema", "embeddings_schema",
]


class SchemaError(ValueError):
    """A table name the catalogue does not know, or data that does not fit the table's schema."""


# ---- table names -------------------------------------------------------------------------

POOL = "pool"
PROFILES = "profiles"
SCORES = "scores"
DEDUP = "dedup"
REMOVALS = "removals"
KG_NODES = "kg_nodes"
KG_EDGES = "kg_edges"
WEIGHTS = "weights"
TAG_STATS = "tag_stats"
EDIT_PAIRS = "edit_pairs"
CAPTIONS = "captions"
OCR = "ocr"
HARDCASES = "hardcases"
REVIEWS = "reviews"
LABELS = "labels"
RUNS = "runs"


def embeddings_table(encoder: str) -> str:
    """`embeddings/<encoder>`."""
    return table_spec("embeddings/<encoder>").instance(encoder)


def graph_edges_table(encoder: str) -> str:
    """`graph_edges/<encoder>`."""
    return table_spec("graph_edges/<encoder>").instance(encoder)


def manifest_table(stage: str) -> str:
    """`manifests/<stage>`."""
    return table_spec("manifests/<stage>").instance(stage)


# ---- fields and schemas ------------------------------------------------------------------

ID = field("id", pa.string(), "sha256 of the image bytes, lowercase hex (64 chars); for an item whose bytes could not be read, sha256 of b'unreadable:' + uri")
URI = field("uri", pa.string(), "where the bytes are: a path or pyarrow.fs URI; for a WebDataset member, '<shard uri>#<member name>'")
BYTE_OFFSET = field("byte_offset", pa.int64(), "offset of the bytes inside `uri`'s container file (WebDataset tar member), bytes; null for whole files")
BYTE_SIZE = field("byte_size", pa.int64(), "length of the bytes at byte_offset, bytes; null for whole files")
CAPTION = field("caption", pa.string(), "primary caption, UTF-8 (invalid bytes replaced with U+FFFD)")
# A list of {key, value} structs rather than an Arrow map: the same data, and every common reader
# maps it (Hugging Face `datasets` has no map type; Polars reads maps as this anyway).
CAPTION_FIELDS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
CAPTION_FIELDS = field("caption_fields", CAPTION_FIELDS_TYPE, "every caption field of the source by name (caption, caption_zh, ...), as a list of {key, value}; `caption_field_map` turns a row's value into a dict")


def caption_field_map(value) -> dict[str, str]:
    """A row's `caption_fields` (list of {key, value}, or None) as a dict."""
    return {f["key"]: f["value"] for f in value or []}
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
KIND = field("kind", pa.string(), "'t2i' (an image and its text) or 'i2i' (an edit pair: source image -> this image)")
PAIR_FIELDS = (
    field("source_id", pa.string(), "i2i: the edit pair's input image id; null for t2i"),
    field("source_uri", pa.string(), "i2i: where the input image's bytes are (as `uri`)"),
    field("source_byte_offset", pa.int64(), "i2i: offset of the input image inside source_uri's container, bytes"),
    field("source_byte_size", pa.int64(), "i2i: length of the input image's bytes, bytes"),
    field("instruction", pa.string(), "i2i: the edit instruction (source -> target)"),
    field("pair_kind", pa.string(), "i2i: how the pair was made (expert, inverse, mixed, video, render)"),
    field("source_bucket_height", pa.int32(), "i2i: the input image's own training bucket height, px (the pair "
                                              "trains at bucket_height x bucket_width, the target's)"),
    field("source_bucket_width", pa.int32(), "i2i: the input image's own training bucket width, px"),
)
SCORE_KEY_FIELDS = (ID, ERROR, field("score_producer", pa.string(), "encoders and heads (with weight files) that produced the row"))
DEDUP_KEY_FIELDS = (
    ID,
    field("group_id", pa.string(), "id of the group's keeper; equals id for items without duplicates"),
    field("group_size", pa.int32(), "items in the duplicate group (pHash and semantic relations merged)"),
    field("keep", pa.bool_(), "False: a duplicate of group_id, removed at export"),
    field("dup_kind", pa.string(), "null, 'phash', 'semantic' or 'semantic+phash': which relations formed the group ('phash': perceptual hashes, the pHash or the nearhash window hashes)"),
    field("exact_copies", pa.int32(), "uris with byte-identical content (collapsed into this id at ingest)"),
)


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
    fields = list(MANIFEST_KEY_FIELDS) + list(BUCKET_FIELDS) + [KIND, *PAIR_FIELDS]
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
    fields.append(SCORE_KEY_FIELDS[2])
    return pa.schema(fields)


def dedup_schema(levels: int) -> pa.Schema:
    """Schema of `dedup`: one decision per pool id, merging exact, pHash and semantic groups."""
    fields = list(DEDUP_KEY_FIELDS)
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

VECTOR_DOC = ("L2-normalised image embedding: `dim` float16 values, little-endian, packed (dim*2 bytes; "
              "`dim` is in this field's metadata); decode with curation.steps.vectors.embeddings")


def embeddings_schema(dim: int | None = None) -> pa.Schema:
    """Schema of `embeddings/<encoder>`: one L2-normalised float16 vector per id, stored as
    `binary` (Delta has no float16 and no fixed-size list). The field metadata records
    `dim`, `dtype` (float16) and `byteorder` (little)."""
    meta = {"doc": VECTOR_DOC, "dtype": "float16", "byteorder": "little"}
    if dim is not None:
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        meta["dim"] = str(int(dim))
    return pa.schema([ID, field("encoder", pa.string(), "encoder name (the <encoder> of the table name)"),
                      pa.field("vector", pa.binary(), nullable=True, metadata=meta)])


GRAPH_EDGES_SCHEMA = pa.schema([
    *(field(f.name, f.type, (f.metadata or {}).get(b"description", b"").decode()) for f in EDGE_SCHEMA),
    field("src_id", pa.string(), "pool id of the src row"),
    field("dst_id", pa.string(), "pool id of the dst row"),
])


EDIT_PAIRS_SCHEMA = pa.schema([
    field("pair_id", pa.string(), "128-bit hash of source id, target id and kind, 32 lowercase hex characters (curation.hashes.pair_hash)"),
    field("group_id", pa.string(), "the group the pair was built from (an original and its edits, a video shot)"),
    field("source_id", pa.string(), "pool id of the input image"),
    field("target_id", pa.string(), "pool id of the edited image"),
    field("kind", pa.string(), "expert, inverse, mixed, video or render"),
    field("instruction", pa.string(), "the edit instruction; null while pending"),
    field("instruction_source", pa.string(), "known, composed, vlm or pending"),
    field("similarity", pa.float32(), "cosine similarity of the two images' embeddings, [-1, 1]; null when the builder measured none (expert and render pairs)"),
    field("tasks", pa.list_(pa.string()), "the edit task(s) involved"),
    field("provenance_json", pa.string(), "generator version, source video and timestamps, render parameters (JSON)"),
    ERROR,
])

HARDCASES_SCHEMA = pa.schema([
    field("case_id", pa.string(), "'<run id>:<query id>' (query id: 16 hex of sha256 of kind and query)"),
    field("run_id", pa.string(), "the mining run (default: UTC date and time)"),
    field("kind", pa.string(), "'text' (a failure prompt) or 'image' (a failure image)"),
    field("query", pa.string(), "the prompt, or the image's uri"),
    field("tags", pa.list_(pa.string()), "the query's concepts: given with the query, else graph titles found in the prompt"),
    field("action", pa.string(), "report, prune, boost or fill (the decision taken for this query)"),
    field("reason", pa.string(), "why (given with the query), for removals and boosts"),
    field("hit_ids", pa.list_(pa.string()), "nearest pool items, most similar first"),
    field("hit_similarity", pa.list_(pa.float32()), "their cosine similarity to the query, [-1, 1]"),
    field("communities_json", pa.string(), "hit communities: [{community, level, size, hits, mean_similarity, sample_ids}]"),
    field("coverage_json", pa.string(), "per query concept: {tag, node, title, status: present | empty | absent, items}"),
    field("decision_json", pa.string(), "what the action recorded: removals written, boost node and factor, trending node, review requests"),
    field("decided_at", pa.string(), "UTC ISO-8601 time"),
])

REVIEWS_SCHEMA = pa.schema([
    field("review_id", pa.string(), "'<run id>:<item id>'"),
    ID,
    field("run_id", pa.string(), "the proposing run"),
    field("reason", pa.string(), "why the item is reviewed: hard_case, low_alignment, random_audit, balanced"),
    field("query", pa.string(), "for hard cases: the query that found the item"),
    field("proposed_long", pa.string(), "proposed long caption (the captioner's, else the source caption)"),
    field("proposed_medium", pa.string(), "proposed medium caption"),
    field("proposed_short", pa.string(), "proposed short caption"),
    field("proposed_tags", pa.list_(pa.string()), "proposed tags (the VLM's, else the source's)"),
    field("proposed_scores_json", pa.string(), "the current models' scores of the item: {name: value}"),
    field("proposal_models_json", pa.string(), "where each proposed value came from: captioner model and prompt version, score producer"),
    field("ai_verifier", pa.string(), "the AI verifier's name and threshold (e.g. 'alignment>=0.25')"),
    field("ai_score", pa.float32(), "the verifier's score of the proposal"),
    field("ai_pass", pa.bool_(), "the verifier's verdict"),
    field("human_verdict", pa.string(), "accepted, corrected or rejected; null until a human answered"),
    field("annotator", pa.string(), "who answered (the annotation tool's user)"),
    field("human_note", pa.string(), "the reviewer's note, e.g. why rejected"),
    field("corrected_long", pa.string(), "the human's long caption (null: the proposal stands)"),
    field("corrected_medium", pa.string(), "the human's medium caption"),
    field("corrected_short", pa.string(), "the human's short caption"),
    field("corrected_tags", pa.list_(pa.string()), "the human's tags"),
    field("state", pa.string(), "proposed -> ai_checked -> human_pending -> accepted | corrected | rejected"),
    field("export_file", pa.string(), "the annotation export (tasks file) the item went out in"),
    field("proposed_at", pa.string(), "UTC ISO-8601 time"),
    field("updated_at", pa.string(), "UTC ISO-8601 time of the latest state change"),
])

LABELS_SCHEMA = pa.schema([
    ID,
    field("long", pa.string(), "the human-approved long caption (accepted proposal or correction)"),
    field("medium", pa.string(), "the human-approved medium caption"),
    field("short", pa.string(), "the human-approved short caption"),
    field("tags", pa.list_(pa.string()), "the human-approved tags"),
    field("verdict", pa.string(), "accepted or corrected"),
    field("annotator", pa.string(), "who decided"),
    field("decided_at", pa.string(), "UTC ISO-8601 time of the human verdict"),
    field("review_id", pa.string(), "the review the label came from"),
    field("run_id", pa.string(), "the review run"),
])

RUNS_SCHEMA = pa.schema([
    field("run_id", pa.string(), "the night's id (default: the UTC date, e.g. 2026-12-02)"),
    field("state", pa.string(), "running, failed or finished"),
    field("started_at", pa.string(), "UTC ISO-8601 time the first attempt started"),
    field("ended_at", pa.string(), "UTC ISO-8601 time the latest attempt ended (null while running)"),
    field("attempts", pa.int32(), "attempts of this run id (a rerun of a failed or killed run is one more)"),
    field("steps_json", pa.string(), "per step, in order: {step, done, seconds, rows_in, rows_out, errors, versions, changes (ids whose recorded decision the step changed, by kind)}"),
    field("versions_json", pa.string(), "the table versions the run wrote: {table: version}"),
    field("error", pa.string(), "why the latest attempt failed (step and message); null otherwise"),
    field("host", pa.string(), "host and process id of the latest attempt"),
])

CAPTIONS_SCHEMA = pa.schema([
    ID,
    field("long", pa.string(), "long caption: every visible string verbatim, subjects, objects, background, setting"),
    field("medium", pa.string(), "medium caption: two or three sentences"),
    field("short", pa.string(), "short caption: one sentence"),
    field("tags", pa.list_(pa.string()), "the VLM's semantic tags (objects, people count, culture-specific concepts)"),
    field("prompt", pa.string(), "a simulated user prompt for the image (short, informal, possibly incomplete)"),
    field("nsfw", pa.float32(), "the VLM's probability that the image is not safe for work, 0..1"),
    field("language", pa.string(), "the language of the captions and tags (en, zh)"),
    field("model", pa.string(), "the served model name (http) or the weights directory (vllm)"),
    field("prompt_version", pa.string(), "the prompt text's version (curation.steps.captions.prompt)"),
    field("backend", pa.string(), "http or vllm"),
    field("caption_producer", pa.string(), "backend:model|prompt version|language: a change re-captions"),
    field("prompt_tokens", pa.int32(), "tokens in the request, as the server counted them"),
    field("completion_tokens", pa.int32(), "tokens generated"),
    ERROR,
])

SAMPLES_SCHEMA = pa.schema([
    ID,
    field("epoch", pa.int32(), "the epoch drawn"),
    field("seed", pa.int64(), "the seed drawn with (with stage and epoch it fixes every choice)"),
    field("source", pa.string(), "the stage source (mixture component) the item was drawn from"),
    KIND,
    field("weight", pa.float64(), "the item's balancing weight within its source (relative)"),
    field("key", pa.float64(), "the A-ES key ln(u)/weight that ranked it (larger: drawn earlier)"),
    field("concept", pa.int64(), "the knowledge-graph node the item represents in the concept marginal; null: none"),
    field("concept_title", pa.string(), "that node's title"),
    field("caption_level", pa.string(), "the text chosen: long, medium, short, tags, prompt, raw, field:<name>, "
                                        "instruction, source_tags or none"),
    field("caption", pa.string(), "the chosen text"),
    field("bucket_height", pa.int32(), "training height, px"),
    field("bucket_width", pa.int32(), "training width, px"),
    field("seq_len", pa.int32(), "tokens: ceil_m(image tokens) + ceil_m(caption tokens), m = pad_multiple"),
])

BATCHES_SCHEMA = pa.schema([
    field("batch", pa.int64(), "global batch index in consumption order (rank r of W takes r, r+W, ...)"),
    field("position", pa.int32(), "position inside the batch"),
    ID,
    KIND,
    field("caption", pa.string(), "the text to train on"),
    field("caption_level", pa.string(), "which text it is (see samples/<stage>)"),
    field("bucket_height", pa.int32(), "training height, px"),
    field("bucket_width", pa.int32(), "training width, px"),
    field("seq_len", pa.int32(), "tokens (image + caption, padded)"),
    field("epoch", pa.int32(), "the epoch planned"),
])


# ---- the catalogue -----------------------------------------------------------------------

# the <part> of a family member: what curation.config.spec.check_name accepts (no '/', no '..')
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _valid_part(part: str) -> bool:
    return bool(_PART.fullmatch(part or "")) and ".." not in part


def samples_table(stage: str) -> str:
    """`samples/<stage>`."""
    return table_spec("samples/<stage>").instance(stage)


def batches_table(stage: str) -> str:
    """`batches/<stage>`."""
    return table_spec("batches/<stage>").instance(stage)


@dataclass(frozen=True)
class TableSpec:
    """One lake table, or one family of tables named `<prefix>/<part>`.

    name: the table name ("pool"), or a family pattern ("embeddings/<encoder>").
    key: the key columns: present and never null in every write (upserts merge on them).
    schema: the complete schema when it is fixed; None when the columns depend on
        configuration (then `builder` makes the schema for one configuration).
    required: fields every version has with these types (for a fixed schema: all of them).
    doc: what the table holds.
    written_by: the step (function and CLI command) that writes it.
    builder: the schema function for configuration-dependent tables, or None.
    """

    name: str
    key: tuple[str, ...]
    schema: pa.Schema | None
    required: tuple[pa.Field, ...]
    doc: str
    written_by: str
    builder: Callable[..., pa.Schema] | None = dc_field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = {f.name for f in self.required}
        if self.schema is not None and names != set(self.schema.names):
            raise ValueError(f"table {self.name!r}: required fields must be the fixed schema's fields")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"table {self.name!r}: key columns {missing} are not among its required fields")

    # -- names --
    @property
    def prefix(self) -> str | None:
        """`"embeddings/"` for the family `embeddings/<encoder>`; None for a single table."""
        return self.name.split("<", 1)[0] if "<" in self.name else None

    def matches(self, table: str) -> bool:
        if self.prefix is None:
            return table == self.name
        return table.startswith(self.prefix) and _valid_part(table[len(self.prefix):])

    def instance(self, part: str) -> str:
        """The concrete table name of a family member (`embeddings/clip_b32` for "clip_b32")."""
        if self.prefix is None:
            raise SchemaError(f"table {self.name!r} is not a family of tables")
        if not _valid_part(part):
            raise SchemaError(f"{self.name}: {part!r} is not a valid name (letters, digits, '_', '.', '-')")
        return self.prefix + part

    def part(self, table: str) -> str:
        """The `<part>` of a family member's name (`clip_b32` for `embeddings/clip_b32`)."""
        if self.prefix is None or not self.matches(table):
            raise SchemaError(f"{table!r} is not a member of {self.name!r}")
        return table[len(self.prefix):]

    def members(self, tables: Iterable[str]) -> list[str]:
        """The parts of the family members among `tables` (e.g. `lake.tables()`), sorted."""
        return sorted(self.part(t) for t in tables if self.prefix is not None and self.matches(t))

    # -- schemas --
    def fields(self) -> dict[str, pa.Field]:
        return {f.name: f for f in (self.schema if self.schema is not None else self.required)}

    def check(self, schema: pa.Schema, table: str | None = None) -> None:
        """Raise `SchemaError` naming the table and the column if `schema` cannot be written to
        this table: a missing key or required column, a column whose type differs from the
        declared one, or (fixed schemas) a column the catalogue does not declare.

        Types are compared the way Delta stores them: string / large_string / string_view,
        binary / large_binary, list / large_list / fixed-size list (Delta reads it back as a
        list) and dictionary-encoded values are the same; an all-null column fits any type;
        child field names and nullability are ignored; int and float widths must match.
        """
        where = table or self.name
        have = {f.name: f for f in schema}
        for k in self.key:
            if k not in have:
                raise SchemaError(f"table {where!r}: key column {k!r} is missing (columns: {schema.names})")
        declared = self.fields()
        for f in self.required:
            if f.name not in have:
                raise SchemaError(f"table {where!r}: column {f.name!r} ({f.type}) is missing")
        for name, f in have.items():
            want = declared.get(name)
            if want is None:
                if self.schema is not None:
                    raise SchemaError(f"table {where!r}: column {name!r} is not in its schema "
                                      f"(declared: {self.schema.names}); add it to the catalogue")
                continue
            if not same_type(f.type, want.type):
                raise SchemaError(f"table {where!r}: column {name!r} is {f.type}, the catalogue declares {want.type}")

    def conform(self, table: pa.Table, schema: pa.Schema | None = None, name: str | None = None) -> pa.Table:
        """`table` in this table's schema, ready to write: columns cast to their declared
        types (with the catalogue's field docs), missing nullable columns added as nulls.

        Fixed schema: exactly the declared columns, in order; an undeclared column is an
        error. Otherwise: `schema` (the builder's schema for this configuration) when given,
        else the required fields first, then the table's other columns as they are.
        Raises `SchemaError` on a missing or null key, or a column that cannot be cast.
        """
        where = name or self.name
        target = self.schema if self.schema is not None else schema
        if target is not None:
            if self.schema is not None:
                extra = [c for c in table.column_names if c not in target.names]
                if extra:
                    raise SchemaError(f"table {where!r}: columns {extra} are not in its schema "
                                      f"(declared: {target.names}); add them to the catalogue")
            else:
                self.check(target, where)
        else:
            req = [f.name for f in self.required]
            target = pa.schema(list(self.required) + [table.schema.field(c) for c in table.column_names if c not in req])
        for k in self.key:
            if k not in table.column_names:
                raise SchemaError(f"table {where!r}: key column {k!r} is missing (columns: {table.column_names})")
        arrays = []
        for f in target:
            if f.name not in table.column_names:
                arrays.append(pa.nulls(table.num_rows, f.type))
                continue
            col = table.column(f.name)
            try:
                arrays.append(col if col.type == f.type else col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"table {where!r}: column {f.name!r} ({col.type}) does not cast to {f.type}: {exc}") from exc
        out = pa.Table.from_arrays(arrays, schema=target)
        for k in self.key:
            nulls = out.column(k).null_count
            if nulls:
                raise SchemaError(f"table {where!r}: key column {k!r} has {nulls} null value(s)")
        return out


def same_type(actual: pa.DataType, declared: pa.DataType) -> bool:
    """Equal as Delta stores them (see `TableSpec.check`)."""
    if pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    a, d = _base(actual), _base(declared)
    if a != d:
        return False
    if a == "list":
        return same_type(actual.value_type, declared.value_type)
    if a == "map":
        return same_type(actual.key_type, declared.key_type) and same_type(actual.item_type, declared.item_type)
    if a == "struct":
        af = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        df = {declared.field(i).name: declared.field(i).type for i in range(declared.num_fields)}
        return af.keys() == df.keys() and all(same_type(af[k], df[k]) for k in af)
    if a == "other":
        return actual == declared
    return True


def _base(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or getattr(pa.types, "is_binary_view", lambda _: False)(t):
        return "binary"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or getattr(pa.types, "is_list_view", lambda _: False)(t) or getattr(pa.types, "is_large_list_view", lambda _: False)(t)):
        return "list"
    if pa.types.is_map(t):
        return "map"
    if pa.types.is_struct(t):
        return "struct"
    return "other"


def _fixed(name: str, key: tuple[str, ...], schema: pa.Schema, doc: str, written_by: str) -> TableSpec:
    return TableSpec(name, key, schema, tuple(schema), doc, written_by)


CATALOG: tuple[TableSpec, ...] = (
    _fixed(POOL, ("id",), POOL_SCHEMA, "ingested items: one row per distinct image bytes (every uri that held them)",
           "curation.steps.ingest.pool.ingest (curate ingest); the images the edit-pair steps read or make "
           "(pairs_experts, pairs_video, pairs_render: curate pairs)"),
    TableSpec(PROFILES, ("id",), None, PROFILE_KEY_FIELDS,
              "per-item features: one row per pool row, one column set per operator (see operators.*.writes)",
              "curation.steps.profiling.profile.profile (curate profile)", builder=profile_schema),
    TableSpec(OCR, ("id",), None, PROFILE_KEY_FIELDS,
              "text read in each pool image (lines, boxes, area share, script): the OCR operator set, kept apart "
              "from `profiles` so that each set is incremental on its own (see operators.ocr)",
              "curation.steps.profiling.ocr.ocr (curate ocr)", builder=profile_schema),
    TableSpec(SCORES, ("id",), None, SCORE_KEY_FIELDS,
              "per-item model scores: one float32 column per head and per aligned caption field",
              "curation.steps.profiling.score.score (curate score)", builder=scores_schema),
    _fixed("embeddings/<encoder>", ("id",), embeddings_schema(),
           "one L2-normalised float16 image embedding per successfully scored id (binary-packed)",
           "curation.steps.profiling.score.score (curate score); read with curation.steps.vectors.embeddings"),
    TableSpec(DEDUP, ("id",), None, DEDUP_KEY_FIELDS,
              "one dedup decision per pool id (exact, pHash and semantic groups merged), "
              "plus community ids per Leiden level (community_l<i>, string)",
              "curation.steps.vectors.dedup.dedup (curate dedup)", builder=dedup_schema),
    _fixed("graph_edges/<encoder>", ("src", "dst"), GRAPH_EDGES_SCHEMA,
           "the symmetrised k-NN proximity graph (edges with similarity >= tau) of one embeddings table",
           "curation.steps.vectors.dedup.dedup (curate dedup)"),
    _fixed(REMOVALS, ("id",), REMOVALS_SCHEMA,
           "recorded removal decisions (takedown, failure pruning); applied at export, never deleted",
           "curation.steps.vectors.search.prune (curate prune); hardcases' prune decisions (curate hardcases); "
           "review_apply's rejected items (curate review apply)"),
    _fixed(KG_NODES, ("node",), KG_NODES_SCHEMA, "knowledge-graph concepts (articles, taxonomy parents, trending)",
           "curation.steps.kg.steps.kg_build / kg_augment (curate kg build / augment); hardcases' boost and fill "
           "decisions (curate hardcases)"),
    _fixed(KG_EDGES, ("src", "dst", "kind"), KG_EDGES_SCHEMA, "knowledge-graph links, parent edges and aliases",
           "curation.steps.kg.steps.kg_build / kg_augment (curate kg build / augment)"),
    _fixed(WEIGHTS, ("id",), WEIGHTS_SCHEMA, "per-item sampling weights from caption tags, the knowledge graph and BM25",
           "curation.steps.kg.steps.kg_weights (curate kg weights)"),
    _fixed(TAG_STATS, ("tag",), TAG_STATS_SCHEMA,
           "the pool's tag statistics behind `weights` (document frequency, occurrences, node per folded tag); "
           "the weights commit names the version and the totals (graph.kg.tagstats)",
           "curation.steps.kg.steps.kg_weights (curate kg weights; updated additively in incremental mode)"),
    TableSpec("manifests/<stage>", ("id",), None, MANIFEST_KEY_FIELDS + BUCKET_FIELDS,
              "what a trainer reads for one stage: kept items with captions, resolution bucket, sequence "
              "length and the profile / score / weight features (also written as a plain Parquet file)",
              "curation.steps.export.export.export (curate export)", builder=manifest_schema),
    _fixed(CAPTIONS, ("id",), CAPTIONS_SCHEMA,
           "VLM captions per pool item: five levels, tags, NSFW, with model and prompt version (error rows kept)",
           "curation.steps.captions.caption.caption (curate caption)"),
    _fixed(HARDCASES, ("case_id",), HARDCASES_SCHEMA,
           "failure queries mined against the pool: hit communities, concept coverage, the decision taken",
           "curation.steps.review.steps.hardcases (curate hardcases)"),
    _fixed(REVIEWS, ("review_id",), REVIEWS_SCHEMA,
           "the review queue: proposals, AI and human verdicts, corrections, state per item and run",
           "curation.steps.review.steps.review_propose (curate review propose); review_export, review_import "
           "(curate review export / import)"),
    _fixed(LABELS, ("id",), LABELS_SCHEMA,
           "human-approved captions and tags per item (latest human verdict wins); export, the sampler and "
           "kg augment read them over the pseudo-labels",
           "curation.steps.review.steps.review_apply (curate review apply)"),
    _fixed(RUNS, ("run_id",), RUNS_SCHEMA,
           "nightly runs: state, per-step counts and the table versions each run wrote",
           "curation.steps.nightly.night.nightly (curate nightly)"),
    _fixed(EDIT_PAIRS, ("pair_id",), EDIT_PAIRS_SCHEMA,
           "image-to-image training pairs (source image -> target image, instruction); both images are pool items",
           "curation.steps.pairs.steps.pairs_experts / pairs_video / pairs_render (curate pairs --from experts | "
           "video | render), via curation.steps.pairs.table.add_pairs"),
    _fixed("samples/<stage>", ("id",), SAMPLES_SCHEMA,
           "one epoch's draw of a stage: items, balancing weight, concept, chosen caption (overwritten per draw; "
           "the commit records the manifest, weights and graph versions)",
           "curation.steps.sampling.sample.sample (curate sample, curate export)"),
    _fixed("batches/<stage>", ("id",), BATCHES_SCHEMA,
           "the token-budget batch plan of a stage's sample, in consumption order",
           "curation.steps.sampling.sample.sample (curate sample, curate export)"),
)


def table_spec(name: str) -> TableSpec:
    """The catalogue entry of a table name ("pool", "embeddings/clip_b32") or of a family
    pattern ("embeddings/<encoder>"). An unknown name raises `SchemaError` listing the tables."""
    for spec in CATALOG:
        if name == spec.name or spec.matches(name):
            return spec
    raise SchemaError(f"unknown lake table {name!r}; the catalogue (curation.storage.schemas.CATALOG) has: "
                      f"{', '.join(s.name for s in CATALOG)}")
