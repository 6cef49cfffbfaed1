"""Human verdicts flow back: `labels` (the approved captions and tags per item), `removals` (the
rejected items, with the reviewer's reason), and the accepted set as a training set.

- An accepted review approves its proposal; a corrected one replaces the corrected fields and
  keeps the proposal's others. The newest human verdict per item wins, and a label changes
  only when a newer verdict arrives: re-running `caption` or `score` never touches `labels`,
  so a correction outlives every re-run of the models.
- Export, the sampler and `kg augment` read `labels` over the pseudo-labels
  (`overlay_labels`): the caption levels and tags, and `label_source` saying who decided,
  when and in which run.
- A rejected item becomes a recorded removal (`reason` 'review: rejected: <note>'), which
  export applies like any removal.

`apply` and `training_set` are idempotent: applying twice writes nothing new.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from curation.storage import schemas
from curation.storage.lake import Lake

__all__ = ["LEVELS", "apply", "label_rows", "overlay_labels", "training_set"]

LEVELS = ("long", "medium", "short")


def label_rows(reviews: pa.Table) -> pa.Table:
    """One `labels` row per item from its newest accepted / corrected review."""
    done = reviews.filter(pc.is_in(reviews["human_verdict"], value_set=pa.array(["accepted", "corrected"])))
    latest: dict[str, dict] = {}
    for r in done.to_pylist():
        key = (r["updated_at"] or "", r["review_id"])
        if r["id"] not in latest or key > (latest[r["id"]]["updated_at"] or "", latest[r["id"]]["review_id"]):
            latest[r["id"]] = r
    rows = []
    for r in latest.values():
        row = {level: r[f"corrected_{level}"] if r[f"corrected_{level}"] is not None else r[f"proposed_{level}"]
               for level in LEVELS}
        row.update(id=r["id"], tags=r["corrected_tags"] if r["corrected_tags"] is not None else r["proposed_tags"],
                   verdict=r["human_verdict"], annotator=r["annotator"], decided_at=r["updated_at"],
                   review_id=r["review_id"], run_id=r["run_id"])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schemas.LABELS_SCHEMA)


def apply(lake: Lake) -> dict:
    """Write `labels` for the newest human approvals and `removals` for rejections."""
    if not lake.exists(schemas.REVIEWS):
        raise ValueError("no review queue in this lake: run `curate review propose` first")
    reviews = lake.read(schemas.REVIEWS)
    labels = label_rows(reviews)
    changed = labels
    if lake.exists(schemas.LABELS) and labels.num_rows:
        known = {r["id"]: r["review_id"] for r in lake.read(schemas.LABELS, columns=["id", "review_id"]).to_pylist()}
        keep = [known.get(i) != rid for i, rid in zip(labels["id"].to_pylist(), labels["review_id"].to_pylist())]
        changed = labels.filter(pa.array(keep, pa.bool_()))
    if changed.num_rows:
        cols = [c for c in schemas.LABELS_SCHEMA.names if c != "id"]
        lake.transact(schemas.LABELS, lambda snap: changed, key="id", update_columns=cols,
                      producer={"step": "review apply", "labels": changed.num_rows})
    rejected = reviews.filter(pc.equal(reviews["human_verdict"], "rejected"))
    removed = 0
    if rejected.num_rows:
        rows = pa.table({
            "id": rejected["id"],
            "reason": pc.binary_join_element_wise("review: rejected: ", pc.fill_null(rejected["human_note"], "no note"), ""),
            "query": pc.binary_join_element_wise("review:", rejected["review_id"], ""),
            "community": pa.nulls(rejected.num_rows, pa.string()),
            "similarity": pa.nulls(rejected.num_rows, pa.float32()),
            "decided_at": rejected["updated_at"],
        }, schema=schemas.REMOVALS_SCHEMA)
        if lake.exists(schemas.REMOVALS):
            known_ids = lake.read(schemas.REMOVALS, columns=["id"])["id"]
            rows = rows.filter(pc.invert(pc.is_in(rows["id"], value_set=known_ids)))
        if rows.num_rows:
            lake.write(schemas.REMOVALS, rows, key="id", producer={"step": "review apply", "rejected": rows.num_rows})
            removed = rows.num_rows
    return {"labels_written": changed.num_rows, "labels_total": labels.num_rows, "removals_written": removed,
            "rejected_total": rejected.num_rows}


def overlay_labels(table: pa.Table, labels: pa.Table) -> pa.Table:
    """`table` (rows keyed by `id`, with `caption_<level>` / `tags` / `caption_tags` columns
    where present) with the human labels over them, and `label_source`: 'human:<verdict> by
    <annotator> at <time> (run <run id>)', null for rows without a label."""
    at = pc.index_in(table["id"], value_set=labels["id"])
    has = pc.is_valid(at)
    n = table.num_rows

    def put(name: str, values: pa.ChunkedArray | pa.Array, typ: pa.DataType) -> None:
        nonlocal table
        base = table[name] if name in table.column_names else pa.nulls(n, typ)
        merged = pc.if_else(pc.and_(has, pc.is_valid(values)), values, base)
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, merged)
        else:
            table = table.append_column(name, merged)

    for level in LEVELS:
        put(f"caption_{level}", labels[level].take(at), pa.string())
    label_tags = labels["tags"].take(at)
    if "tags" in table.column_names:
        put("tags", label_tags.cast(table.schema.field("tags").type), table.schema.field("tags").type)
    put("caption_tags", pc.binary_join(label_tags, ", "), pa.string())
    who = [None if v is None else f"human:{v['verdict']} by {v['annotator'] or 'unknown'} at {v['decided_at']} "
                                  f"(run {v['run_id']})" for v in _rows(labels, at)]
    return table.append_column("label_source", pa.array(who, pa.string()))


def _rows(labels: pa.Table, at: pa.Array) -> list[dict | None]:
    recs = labels.select(["verdict", "annotator", "decided_at", "run_id"]).to_pylist()
    return [None if i is None else recs[i] for i in at.to_pylist()]


def training_set(lake: Lake, out: str) -> dict:
    """The human-approved items as a Parquet training set for the captioner / reward model:
    `image` (struct<bytes, path>, the Hugging Face `Image` layout), id, the caption levels and
    tags, the current scores, and `label_source` per field (human verdict, or the model that
    proposed a field the human left as it was)."""
    import pyarrow.parquet as pq

    from curation.storage import io

    if not lake.exists(schemas.LABELS):
        raise ValueError("no labels in this lake: import annotations and run `curate review apply` first")
    labels = lake.read(schemas.LABELS)
    reviews = lake.read(schemas.REVIEWS)
    by_review = {r["review_id"]: r for r in reviews.to_pylist()}
    pool = lake.read(schemas.POOL, columns=["id", "uri", "byte_offset", "byte_size"])
    where = {r["id"]: r for r in pool.to_pylist()}
    rows = []
    for lab in labels.to_pylist():
        rev = by_review.get(lab["review_id"], {})
        models = json.loads(rev.get("proposal_models_json") or "{}")
        src = {}
        for f in (*LEVELS, "tags"):
            human = rev.get(f"corrected_{f}") is not None
            src[f] = f"human:{lab['verdict']}:{lab['annotator']}" if human or lab["verdict"] == "accepted" \
                else f"model:{models.get('captions', 'source')}"
        loc = where.get(lab["id"])
        data = io.read_bytes(loc["uri"], loc["byte_offset"], loc["byte_size"]) if loc else None
        rows.append({"image": {"bytes": data, "path": loc["uri"] if loc else None}, "id": lab["id"],
                     **{f: lab[f] for f in (*LEVELS, "tags")}, "scores_json": rev.get("proposed_scores_json"),
                     "label_source_json": json.dumps(src), "annotator": lab["annotator"],
                     "decided_at": lab["decided_at"], "run_id": lab["run_id"]})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("id", pa.string()),
        ("long", pa.string()), ("medium", pa.string()), ("short", pa.string()), ("tags", pa.list_(pa.string())),
        ("scores_json", pa.string()), ("label_source_json", pa.string()), ("annotator", pa.string()),
        ("decided_at", pa.string()), ("run_id", pa.string())]))
    fs, path = io.resolve(out)
    with fs.open_output_stream(path) as f:
        pq.write_table(table, f)
    return {"rows": table.num_rows, "out": out}
