"""Rules, dedup decisions and the Parquet manifest of one training stage.

`evaluate()` joins pool and profiles and gives every row its fate (`keep`, `reason`): the
first failing rule, then pHash near-duplicates among the survivors (one keeper per group by
the stage's quality key, never by input order). `export()` writes the kept rows (and, when a
stage source draws from `edit_pairs`, the pairs whose two images pass) with their training
size and sequence length to the Delta table `manifests/<stage>` (its commit records the
versions of every table it read), then draws the stage's sample and batch plan
(`curation.steps.sampling.sample`), and, for trainers that do not read Delta, writes
`manifest.parquet`, `samples-e<epoch>.parquet`, `batches-e<epoch>.parquet` and `_manifest.json`
(counts per rule, the stage spec, the balancing report, the producers) in `--out DIR`, or in
`<lake>/_exports/<stage>/v<version>/` without one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.storage import io, schemas
from curation.steps.export.buckets import BucketConfig, assign_buckets, make_buckets, map_resolution, seq_len
from curation.config.typed import to_dict
from curation.steps.export.pairs import pair_rows
from curation.steps.sampling.config import (
    BalanceConfig, BatchConfig, CaptionPolicy, ResolutionConfig, SampleConfig, SourceSpec,
)
from curation.storage.lake import Lake
from curation.steps.export.neardup import NearDupConfig, mark_near_duplicates, signal_columns
from curation.steps.export.rules import RulesConfig, apply_rules
from curation.steps.summary import StepSummary

EXPORTS_DIR = "_exports"  # plain-Parquet copies of manifests inside the lake (not a table)

POOL_COLUMNS = ["id", "uri", "uris", "byte_offset", "byte_size", "caption", "caption_fields", "tags", "sources"]
NEAR_DUPLICATE = "phash_near_duplicate"
DUPLICATE = "duplicate"  # the lake's dedup decision (semantic + pHash groups)
REMOVED = "removed"      # a recorded removal (takedown, query pruning)
DEDUP, REMOVALS = schemas.DEDUP, schemas.REMOVALS
NOT_PROFILED = "profile: not profiled yet (run `curate profile`)"


@dataclass
class StageConfig:
    """One training stage: what is eligible (rules, near-dup policy, lake decisions), at which
    training size (bucket set, or the resolution-mapping function when `resolution` is set),
    what is drawn each epoch (sources and their mixture weights, concept balancing, caption
    policy, sample size) and how it is batched (token budget). See
    `curation.steps.sampling.config` for the sampling sections.

    synthetic_factor: multiplies the mixture weight of sources marked `synthetic` (the editing
        stage down-weights rendered-text pairs), (0, 1].
    """

    rules: RulesConfig = field(default_factory=RulesConfig)
    neardup: NearDupConfig = field(default_factory=NearDupConfig)
    buckets: BucketConfig = field(default_factory=BucketConfig)
    resolution: ResolutionConfig | None = None
    apply_dedup: bool = True      # drop items the lake's `dedup` decision marks as duplicates
    apply_removals: bool = True   # drop items recorded in `removals` (takedowns, query pruning)
    sources: list[SourceSpec] = field(default_factory=list)
    synthetic_factor: float = field(default=1.0, metadata={"gt": 0, "max": 1})
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    captions: CaptionPolicy = field(default_factory=CaptionPolicy)
    sample: SampleConfig = field(default_factory=SampleConfig)
    batches: BatchConfig = field(default_factory=BatchConfig)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be distinct, got {names}")

    def training_size(self, height, width):
        """(height, width) px to train each image at: the nearest-aspect bucket, or the
        resolution-mapping function's size when `resolution` is set."""
        h = np.asarray(height, dtype=np.int64)
        w = np.asarray(width, dtype=np.int64)
        if self.resolution is not None:
            r = self.resolution
            return map_resolution(h, w, r.min_long, r.max_long, r.multiple or self.buckets.patch_px, r.max_aspect)
        return assign_buckets(h, w, make_buckets(self.buckets))


@dataclass
class Evaluation:
    """Every pool row with its profile columns, `keep`, `reason` and near-dup `dup_group`."""

    table: pa.Table
    removed_per_rule: dict[str, int]
    exact_duplicates_collapsed: int
    producers: dict[str, dict]


def evaluate(lake: Lake, stage: StageConfig, *, ids: pa.Array | None = None) -> Evaluation:
    """Every pool row (or only the pool rows whose id is in `ids`) joined with the lake's
    per-item tables, with its fate under the stage's rules. With `ids`, every table is read
    with that filter (an incremental step re-deciding a few rows); the rules are per row, but
    the stage's near-duplicate marking then sees only those rows."""
    if not lake.exists("pool"):
        raise ValueError(f"lake {lake.uri} has no pool: run `curate ingest` first")
    only = None if ids is None else pads.field("id").isin(ids)
    # every table is read at the version its producer entry names (what the export records)
    producers = {"pool": _producer(lake, "pool")}
    pool = lake.read("pool", columns=POOL_COLUMNS + ["extra_json"], version=producers["pool"]["table_version"],
                     filter=only)
    if lake.exists("profiles"):
        producers["profiles"] = _producer(lake, "profiles")
        profiles = lake.read("profiles", version=producers["profiles"]["table_version"], filter=only)
        table = _left_join(pool, profiles, "id")
        missing = pc.is_null(table["profile_producer"])
        table = table.set_column(table.schema.get_field_index("error"), "error",
                                 pc.if_else(missing, NOT_PROFILED, table["error"]))
    else:
        table = pool.append_column("error", pa.array([NOT_PROFILED] * pool.num_rows, pa.string()))
    if stage.apply_dedup and lake.exists(DEDUP):
        producers["dedup"] = _producer(lake, DEDUP)
        decisions = lake.read(DEDUP, version=producers["dedup"]["table_version"], filter=only)
        table = _left_join(table, decisions.rename_columns(
            {c: f"dedup_{c}" if c in ("keep", "group_id", "group_size") else c for c in decisions.column_names}), "id")
    if stage.apply_removals and lake.exists(REMOVALS):
        producers["removals"] = _producer(lake, REMOVALS)
        removals = lake.read(REMOVALS, columns=["id", "reason"], version=producers["removals"]["table_version"],
                             filter=only).group_by("id", use_threads=False).aggregate([("reason", "first")])
        table = _left_join(table, removals.rename_columns(["id", "removal_reason"]), "id")
    if lake.exists("scores"):
        producers["scores"] = _producer(lake, "scores")
        scores = lake.read("scores", version=producers["scores"]["table_version"], filter=only).rename_columns({"error": "score_error"})
        table = _left_join(table, scores.drop_columns(["score_producer"]), "id")
        table = table.set_column(table.schema.get_field_index("error"), "error",
                                 pc.coalesce(table["error"], table["score_error"])).drop_columns(["score_error"])
    if lake.exists("weights"):  # the knowledge graph's weight and concepts travel to the manifest
        producers["weights"] = _producer(lake, "weights")
        weights = lake.read("weights", columns=["id", "weight", "bm25", "nodes"],
                            version=producers["weights"]["table_version"], filter=only)
        table = _left_join(table, weights.rename_columns(["id", "weight", "bm25", "concepts"]), "id")

    if lake.exists(schemas.CAPTIONS):  # the captioner's levels feed the caption policy; its NSFW a rule
        producers[schemas.CAPTIONS] = _producer(lake, schemas.CAPTIONS)
        captions = lake.read(schemas.CAPTIONS, version=producers[schemas.CAPTIONS]["table_version"], filter=only)
        table = _left_join(table, _caption_levels(captions), "id")
    if lake.exists(schemas.LABELS):  # human-approved captions and tags win over the pseudo-labels
        from curation.steps.review.apply import overlay_labels

        producers[schemas.LABELS] = _producer(lake, schemas.LABELS)
        table = overlay_labels(table, lake.read(schemas.LABELS, version=producers[schemas.LABELS]["table_version"],
                                                 filter=only))
    table = _with_original_size(table).sort_by("id")  # decisions never depend on file or join order

    result = apply_rules(table, stage.rules)
    keep = np.asarray(result.keep, dtype=bool)
    reason = result.reason.to_pylist()
    removed = {k: v for k, v in result.removed_per_rule.items() if v}
    # Lake-level decisions come after the stage's rules: a row keeps the first reason it failed.
    for rule, mask in _decision_masks(table).items():
        hit = keep & mask
        if hit.any():
            keep[hit] = False
            for i in np.flatnonzero(hit):
                reason[i] = rule
            removed[rule] = int(hit.sum())
    dup_group = table["id"].to_pylist()
    if stage.neardup.enabled and set(signal_columns(stage.neardup)) & set(table.column_names) and keep.any():
        idx = np.flatnonzero(keep)
        marks = mark_near_duplicates(table.take(pa.array(idx)), stage.neardup)
        for i, group in zip(idx, marks["phash_group"].to_pylist()):
            dup_group[i] = group
        dropped = idx[~marks["phash_keep"].to_numpy(zero_copy_only=False)]
        keep[dropped] = False
        for i in dropped:
            reason[i] = NEAR_DUPLICATE
        if len(dropped):
            removed[NEAR_DUPLICATE] = int(len(dropped))
    uris = pc.list_value_length(table["uris"]).fill_null(1)
    collapsed = int(pc.sum(uris).as_py() or 0) - table.num_rows
    table = table.append_column("keep", pa.array(keep)).append_column("reason", pa.array(reason, pa.string()))
    table = table.append_column("dup_group", pa.array(dup_group, pa.string()))
    return Evaluation(table, removed, collapsed, producers)


def _caption_levels(captions: pa.Table) -> pa.Table:
    """`caption_<level>` text columns (tags joined by ', ') and `vlm_nsfw` from the captions
    table's successful rows."""
    ok = captions.filter(pc.is_null(captions["error"]))
    return pa.table({
        "id": ok["id"], "caption_long": ok["long"], "caption_medium": ok["medium"], "caption_short": ok["short"],
        "caption_tags": pc.binary_join(ok["tags"], ", "), "caption_prompt": ok["prompt"], "vlm_nsfw": ok["nsfw"],
    })


def _decision_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """rule name -> rows removed by the lake's recorded decisions (dedup, removals)."""
    masks = {}
    if "dedup_keep" in table.column_names:
        masks[DUPLICATE] = ~np.asarray(table["dedup_keep"].fill_null(True).to_numpy(zero_copy_only=False), bool)
    if "removal_reason" in table.column_names:
        masks[REMOVED] = np.asarray(pc.is_valid(table["removal_reason"]).to_numpy(zero_copy_only=False), bool)
    return masks


def _left_join(left: pa.Table, right: pa.Table, key: str) -> pa.Table:
    """left ⟕ right on a key unique in `right`, left's row order kept: each left row's right
    row by a hash lookup (`index_in`), payloads gathered with take() (Arrow's join refuses
    map/list payload columns; a null index gives a null row)."""
    keys = right[key].combine_chunks() if isinstance(right[key], pa.ChunkedArray) else right[key]
    at = pc.index_in(left[key], value_set=keys)
    out = left
    taken = right.drop_columns([key]).take(at)
    for name in taken.column_names:
        out = out.append_column(taken.schema.field(name), taken[name])
    return out


ORIGINAL_SIZE_FIELDS = (
    schemas.field("original_width", pa.int32(), "width at the source before any resize, px (img2dataset's "
                  "original_width when the source recorded it, else `width`): for size conditioning"),
    schemas.field("original_height", pa.int32(), "height at the source before any resize, px (img2dataset's "
                  "original_height when the source recorded it, else `height`)"),
)


def _with_original_size(table: pa.Table) -> pa.Table:
    """original_width / original_height: what the source says the image measured before it was
    resized for storage (img2dataset keeps them), else the stored image's own size."""
    n = table.num_rows
    recorded = {"original_width": [None] * n, "original_height": [None] * n}
    if "extra_json" in table.column_names:
        for i, text in enumerate(table["extra_json"].to_pylist()):
            if not text or "original_" not in text:
                continue
            try:
                extra = json.loads(text)
            except ValueError:
                continue
            for key in recorded:
                value = extra.get(key) if isinstance(extra, dict) else None
                if isinstance(value, (int, float)) and value > 0:
                    recorded[key][i] = int(value)
    for f, own in zip(ORIGINAL_SIZE_FIELDS, ("width", "height")):
        col = pa.array(recorded[f.name], pa.int32())
        if own in table.column_names:
            col = pc.coalesce(col, table[own].cast(pa.int32()))
        table = table.append_column(f, col)
    return table


def _producer(lake: Lake, table: str) -> dict:
    rec = lake.commit_record(table)
    return {"table_version": rec.version, "rows": rec.rows, **rec.producer}


def build_manifest(ev: Evaluation, stage: StageConfig, pairs: pa.Table | None = None) -> pa.Table:
    """Kept rows (kind t2i) and usable edit pairs (kind i2i, `pairs.pair_rows`) with training
    size (bucket_height, bucket_width) and image seq_len, in the manifest schema."""
    internal = {"keep", "reason", "dup_group", "uris", "dedup_keep", "dedup_group_size", "removal_reason", "extra_json"}
    profile_fields = [f for f in ev.table.schema if f.name not in internal]
    schema = schemas.manifest_schema(profile_fields)
    kept = ev.table.filter(ev.table["keep"])
    parts = [kept.append_column("kind", pa.array(["t2i"] * kept.num_rows, pa.string()))]
    if pairs is not None and pairs.num_rows:
        parts.append(pairs)
    out = []
    for part in parts:
        h = part["height"].to_numpy(zero_copy_only=False) if part.num_rows else np.zeros(0)
        w = part["width"].to_numpy(zero_copy_only=False) if part.num_rows else np.zeros(0)
        bh, bw = stage.training_size(h, w)
        part = part.append_column("bucket_height", pa.array(np.asarray(bh, dtype=np.int32)))
        part = part.append_column("bucket_width", pa.array(np.asarray(bw, dtype=np.int32)))
        part = part.append_column("seq_len", pa.array(np.asarray(seq_len(bh, bw, stage.buckets), dtype=np.int32)))
        if "source_height" in part.column_names:  # i2i rows: the input image's own bucket too
            sh, sw = stage.training_size(part["source_height"].to_numpy(zero_copy_only=False),
                                         part["source_width"].to_numpy(zero_copy_only=False))
            part = part.append_column("source_bucket_height", pa.array(np.asarray(sh, dtype=np.int32)))
            part = part.append_column("source_bucket_width", pa.array(np.asarray(sw, dtype=np.int32)))
        out.append(schemas.conform(part, schema))
    return pa.concat_tables(out)


def stage_pairs(lake: Lake, ev: Evaluation, stage: StageConfig, stage_name: str) -> tuple[pa.Table | None, dict]:
    """The stage's image-to-image rows when a source draws from `edit_pairs`, and notes
    (pairs left out by reason; optional sources skipped because the lake has no pairs)."""
    wanted = [s for s in stage.sources if s.table == schemas.EDIT_PAIRS]
    if not wanted:
        return None, {}
    if not lake.exists(schemas.EDIT_PAIRS):
        required = [s.name for s in wanted if not s.optional]
        if required:
            raise ValueError(f"stage {stage_name!r}: source(s) {', '.join(required)} draw from the table "
                             f"{schemas.EDIT_PAIRS!r}, which lake {lake.uri} does not have yet: build edit pairs "
                             "first (`curate pairs`), or mark the source `optional: true`")
        return None, {"skipped_sources": {s.name: f"lake has no {schemas.EDIT_PAIRS} table" for s in wanted}}
    ev.producers[schemas.EDIT_PAIRS] = _producer(lake, schemas.EDIT_PAIRS)
    pairs = lake.read(schemas.EDIT_PAIRS, version=ev.producers[schemas.EDIT_PAIRS]["table_version"])
    rows, left_out = pair_rows(ev.table, pairs)
    return rows, {"pairs": {"usable": rows.num_rows, "left_out": left_out}}


def input_versions(lake: Lake, stage: StageConfig) -> dict[str, int]:
    """The latest version of every table an export of `stage` reads (what `evaluate` and
    `stage_pairs` record as the manifest commit's `reads`)."""
    names = ["pool", "profiles", "scores", "weights", schemas.CAPTIONS, schemas.LABELS]
    names += [DEDUP] if stage.apply_dedup else []
    names += [REMOVALS] if stage.apply_removals else []
    names += [schemas.EDIT_PAIRS] if any(s.table == schemas.EDIT_PAIRS for s in stage.sources) else []
    return {name: lake.version(name) for name in names if lake.exists(name)}


def export_fingerprint(stage: StageConfig, out: str | None, epoch: int, size: int | None, seed: int | None) -> str:
    """A digest of everything besides the lake's tables that decides an export's result."""
    blob = json.dumps({"spec": to_dict(stage), "out": out, "epoch": epoch, "size": size, "seed": seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def current_export(lake: Lake, stage_name: str, stage: StageConfig, fingerprint: str, out: str | None,
                   epoch: int) -> str | None:
    """Why the stage's latest export is still what an export now would write (the same spec
    and draw parameters, every table it read still at the version it read, the sample and
    plan drawn from that manifest, its plain files in place), or None when it is not."""
    from curation.steps.sampling.sample import export_dir, plain_names

    table = schemas.manifest_table(stage_name)
    if not lake.exists(table):
        return None
    rec = lake.commit_record(table)
    if rec.producer.get("fingerprint") != fingerprint or rec.reads != input_versions(lake, stage):
        return None
    names = ["manifest.parquet", "_manifest.json"]
    if rec.stats.get("output_count"):
        samples, batches = schemas.samples_table(stage_name), schemas.batches_table(stage_name)
        if not (lake.exists(samples) and lake.exists(batches)):
            return None
        srec, brec = lake.commit_record(samples), lake.commit_record(batches)
        graph = {schemas.KG_NODES: lake.version(schemas.KG_NODES)} if lake.exists(schemas.KG_NODES) else {}
        if (srec.reads != {table: rec.version, **graph} or srec.producer.get("epoch") != epoch
                or brec.reads.get(samples) != srec.version):
            return None
        names += list(plain_names(epoch))
    fs, path = io.resolve(out or export_dir(lake, stage_name, rec.version))
    if any(fs.get_file_info(posixpath.join(path, n)).type != pafs.FileType.File for n in names):
        return None
    return (f"unchanged: manifest v{rec.version} already holds this stage's export (every table it reads is at "
            f"the version it read, same spec); nothing written")


def export(lake: Lake, stage_name: str, stage: StageConfig, out: str | None = None, *, epoch: int = 0,
           size: int | None = None, seed: int | None = None, skip_unchanged: bool = False) -> StepSummary:
    """Evaluate, write the manifest, draw the sample and plan (see the module docstring).
    skip_unchanged: write nothing when the latest export is still current (`current_export`;
    the nightly job sets it, so a night without new data leaves the exports as they are)."""
    from curation.steps.sampling.sample import batches_line, check_stage, draw_and_write

    t0 = time.perf_counter()
    fingerprint = export_fingerprint(stage, out, epoch, size, seed)
    if skip_unchanged:
        why = current_export(lake, stage_name, stage, fingerprint, out, epoch)
        if why:
            return StepSummary("export", 0, 0, time.perf_counter() - t0, notes={"stage": stage_name, "skipped": why})
    concepts = check_stage(lake, stage_name, stage)
    ev = evaluate(lake, stage)
    pairs, pair_notes = stage_pairs(lake, ev, stage, stage_name)
    manifest = build_manifest(ev, stage, pairs)
    table = schemas.manifest_table(stage_name)
    info = {
        "stage": stage_name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "input_count": ev.table.num_rows,
        "removed_per_rule": ev.removed_per_rule,
        "output_count": manifest.num_rows,
        "exact_duplicates_collapsed": ev.exact_duplicates_collapsed,
        "buckets": _bucket_histogram(manifest),
        **pair_notes,
        "spec": to_dict(stage),
        "producers": ev.producers,
    }
    # The commit records which versions it exported (vacuum keeps those), and the manifest's
    # counts; trainers that do not read Delta get the same rows as plain Parquet files.
    reads = {name: p["table_version"] for name, p in ev.producers.items()}
    commit = lake.write(table, manifest, mode="overwrite", reads=reads,
                        producer={"step": "export", "stage": stage_name, "fingerprint": fingerprint},
                        stats={"removed_per_rule": ev.removed_per_rule, "output_count": manifest.num_rows})
    info["lake_table"] = {"table": table, "version": commit.version}
    plain = out or posixpath.join(lake.uri.rstrip("/"), EXPORTS_DIR, stage_name, f"v{commit.version:08d}")
    fs, plain_path = io.resolve(plain)
    fs.create_dir(plain_path, recursive=True)
    meta = {b"curation.manifest_version": str(commit.version).encode(), b"curation.stage": stage_name.encode()}
    pq.write_table(manifest.replace_schema_metadata({**(manifest.schema.metadata or {}), **meta}),
                   posixpath.join(plain_path, "manifest.parquet"), filesystem=fs, compression="zstd")
    notes = {"stage": stage_name, "removed_per_rule": ev.removed_per_rule,
             "exact_duplicates_collapsed": ev.exact_duplicates_collapsed,
             "manifest": posixpath.join(plain, "manifest.parquet"), **pair_notes}
    if manifest.num_rows:
        drawn = draw_and_write(lake, stage_name, stage, commit.version, size=size, epoch=epoch, seed=seed, out=plain,
                               concepts=concepts)
        info["sample"] = drawn.report
        notes.update({"sample": f"{drawn.samples.num_rows} items (epoch {epoch})",
                      "balance": drawn.report["balance"]["line"], "batches": batches_line(drawn.report),
                      "plan": drawn.report["files"][1]})
    else:  # the empty manifest is still written: its counts say why every item went
        info["sample"] = notes["sample"] = "none: every item was filtered, nothing to sample"
    with fs.open_output_stream(posixpath.join(plain_path, "_manifest.json")) as f:
        f.write(json.dumps(info, indent=1, default=str).encode())
    return StepSummary("export", ev.table.num_rows, manifest.num_rows, time.perf_counter() - t0, notes=notes)


def _bucket_histogram(manifest: pa.Table) -> dict[str, int]:
    if manifest.num_rows == 0:
        return {}
    counts = manifest.group_by(["bucket_height", "bucket_width"]).aggregate([("id", "count")])
    rows = sorted(counts.to_pylist(), key=lambda r: -r["id_count"])
    return {f"{r['bucket_height']}x{r['bucket_width']}": r["id_count"] for r in rows}
