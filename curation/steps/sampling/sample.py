"""`curate sample`: one epoch of a stage — the balanced, mixed draw, its captions and its batch plan.

Input: the stage's manifest (`manifests/<stage>`, written by `curate export`: every item that
passed the stage's rules and dedup, with bucket, concepts and features). For each source of the
stage's mixture, the rows it selects are balanced (`balance`), the sample size is split over
the sources by their weights, and each source's quota is drawn without replacement on Ray Data
(`draw`: A-ES keys hashed from (stage, epoch, seed, id)). Every drawn item gets the concept it
represents, a caption by the stage's caption policy and a seq_len; the batch plan (`plan`)
groups them under the token budget.

Output: `samples/<stage>` and `batches/<stage>` (overwritten per draw; their commits record the
manifest version, and the manifest's own reads name the weights and graph versions), plus plain
Parquet copies `samples-e<epoch>.parquet` / `batches-e<epoch>.parquet` in the export directory
for trainers that read no Delta (`curation.feed` reads them), and the balancing report.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.storage import io, schemas
from curation.storage.lake import Lake
from curation.steps.sampling.balance import Concepts, assign_concepts, balance_weights, marginal_report
from curation.steps.sampling.captions import choose_captions
from curation.steps.sampling.config import SourceSpec
from curation.steps.sampling.draw import draw, item_uniforms, salt_seed
from curation.steps.sampling.plan import padding_stats, plan_batches
from curation.steps.sampling.tokens import sequence_lengths
from curation.steps.summary import StepSummary

__all__ = ["ConceptInfo", "StageDraw", "batches_line", "check_stage", "draw_and_write", "draw_stage", "export_dir", "plain_names",
           "sample", "write_plain"]

DEFAULT_SOURCE = SourceSpec(name="images", table="pool")
META_PREFIX = b"curation."


@dataclass
class ConceptInfo:
    """What the knowledge graph says about concepts: titles and boosts by node id, the nodes a
    stage wants even without items (trending, boosted: the gaps), and the `kg_nodes` version."""

    titles: dict[int, str] = field(default_factory=dict)
    boosts: dict[int, float] = field(default_factory=dict)
    wanted: set[int] = field(default_factory=set)
    version: int | None = None

    @classmethod
    def from_lake(cls, lake: Lake) -> "ConceptInfo":
        if not lake.exists(schemas.KG_NODES):
            return cls()
        version = lake.version(schemas.KG_NODES)
        nodes = lake.read(schemas.KG_NODES, columns=["node", "title", "kind", "kept", "boost"], version=version)
        node = nodes["node"].to_numpy(zero_copy_only=False)
        boost = np.nan_to_num(nodes["boost"].to_numpy(zero_copy_only=False).astype(np.float64), nan=1.0)
        kept = nodes["kept"].fill_null(False).to_numpy(zero_copy_only=False)
        trending = pc.equal(nodes["kind"], "trending").fill_null(False).to_numpy(zero_copy_only=False)
        wanted = node[kept & ((boost != 1.0) | trending)]
        return cls(dict(zip(node.tolist(), nodes["title"].to_pylist())), dict(zip(node.tolist(), boost.tolist())),
                   set(wanted.tolist()), version)

    def resolve_prior(self, path: str | None, where: str) -> dict[int, float]:
        """Node id -> relative prior from a prior file (`concept` as title or node id, `prior`)."""
        if not path:
            return {}
        from graph.kg.tablefile import read_table_file

        try:
            table = read_table_file(path)
        except FileNotFoundError:
            raise ValueError(f"{where}: prior file not found: {path}") from None
        for col in ("concept", "prior"):
            if col not in table.column_names:
                raise ValueError(f"{where}: prior file {path} needs columns `concept` and `prior` "
                                 f"(it has {table.column_names})")
        by_title = {t.casefold(): n for n, t in self.titles.items() if t}
        out, unknown = {}, []
        for concept, prior in zip(table["concept"].to_pylist(), table["prior"].to_pylist()):
            node = None
            text = str(concept).strip()
            if text.lstrip("-").isdigit() and int(text) in self.titles:
                node = int(text)
            else:
                node = by_title.get(text.casefold())
            if node is None:
                unknown.append(text)
                continue
            if prior is None or not float(prior) > 0:
                raise ValueError(f"{where}: prior of {text!r} must be > 0, got {prior!r}")
            out[node] = float(prior)
        if unknown:
            raise ValueError(f"{where}: {len(unknown)} concept(s) of {path} are not in the knowledge graph "
                             f"(kg_nodes v{self.version}): {', '.join(map(repr, unknown[:5]))}")
        return out


@dataclass
class StageDraw:
    samples: pa.Table    # SAMPLES_SCHEMA, drawn order
    batches: pa.Table    # BATCHES_SCHEMA, (batch, position) order
    report: dict


def _source_masks(manifest: pa.Table, sources: list[SourceSpec], where: str) -> np.ndarray:
    """int32 per row: the first source selecting it, -1 none."""
    which = np.full(manifest.num_rows, -1, dtype=np.int32)
    kind = (manifest["kind"].fill_null("t2i") if "kind" in manifest.column_names
            else pa.array(["t2i"] * manifest.num_rows))
    for i, src in enumerate(sources):
        mask = pc.equal(kind, src.kind).to_numpy(zero_copy_only=False)
        for column, cond in src.where.items():
            if column not in manifest.column_names:
                raise ValueError(f"{where}.sources[{i}].where.{column}: the manifest has no column {column!r} "
                                 f"(columns: {', '.join(manifest.column_names)})")
            mask &= _condition(manifest[column], cond)
        which[(which < 0) & mask] = i
    return which


def _condition(col: pa.ChunkedArray, cond) -> np.ndarray:
    col = col.combine_chunks()
    if isinstance(cond, dict):
        m = pc.and_kleene(pc.greater_equal(col, cond["min"]) if "min" in cond else pc.is_valid(col),
                          pc.less_equal(col, cond["max"]) if "max" in cond else pc.is_valid(col))
        return m.fill_null(False).to_numpy(zero_copy_only=False)
    values = cond if isinstance(cond, list) else [cond]
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        flat = pc.list_flatten(col)
        hit = pc.is_in(flat, value_set=pa.array(values, flat.type)).fill_null(False).to_numpy(zero_copy_only=False)
        out = np.zeros(len(col), dtype=bool)
        out[pc.list_parent_indices(col).to_numpy(zero_copy_only=False)[hit]] = True
        return out
    return pc.is_in(col, value_set=pa.array(values, col.type)).fill_null(False).to_numpy(zero_copy_only=False)


def _quotas(shares: np.ndarray, available: np.ndarray, size: int | None) -> tuple[int, np.ndarray]:
    """Sample size and per-source quotas: largest-remainder split of the size by share, each
    capped at what the source has. Without a size: the largest the mixture allows without
    repeating an item (min over sources of available / share)."""
    active = shares > 0
    if size is None:
        size = int(np.floor(np.min(available[active] / shares[active]))) if active.any() else 0
    exact = size * shares
    k = np.floor(exact).astype(np.int64)
    rest = size - int(k.sum())
    if rest > 0:
        k[np.argsort(-(exact - k), kind="stable")[:rest]] += 1
    return size, np.minimum(k, np.floor(available).astype(np.int64))


def draw_stage(manifest: pa.Table, stage_name: str, stage, *, size: int | None = None, epoch: int = 0,
               seed: int | None = None, concepts: ConceptInfo | None = None, use_ray: bool = True,
               where: str | None = None) -> StageDraw:
    """Draw one epoch of `stage` (an export StageConfig) from its manifest rows (pure: no lake I/O)."""
    where = where or f"stages.{stage_name}"
    info = concepts or ConceptInfo()
    seed = stage.sample.seed if seed is None else seed
    size = stage.sample.size if size is None else size
    salt = f"{stage_name}/e{epoch}/s{seed}"
    sources = stage.sources or [DEFAULT_SOURCE]
    bal = stage.balance
    if bal.mode != "none" and "concepts" not in manifest.column_names:
        raise ValueError(f"{where}.balance.mode {bal.mode!r} balances by knowledge-graph concepts, but the manifest "
                         "has none: run `curate kg weights` and export the stage again")
    if bal.quality and bal.quality not in manifest.column_names:
        raise ValueError(f"{where}.balance.quality: the manifest has no column {bal.quality!r}")
    which = _source_masks(manifest, sources, where)
    prior_map = info.resolve_prior(bal.prior, f"{where}.balance.prior") if bal.mode == "uniform" else {}

    weight = np.zeros(manifest.num_rows)
    per_source = {}
    shares = np.array([s.weight * (stage.synthetic_factor if s.synthetic else 1.0) for s in sources])
    available = np.zeros(len(sources))
    concept_col = manifest["concepts"] if "concepts" in manifest.column_names else None
    for i in range(len(sources)):
        rows = np.flatnonzero(which == i)
        sub = (Concepts.from_arrow(concept_col.take(pa.array(rows))) if concept_col is not None
               else Concepts.from_arrow(pa.array([None] * len(rows), pa.list_(pa.int64()))))
        prior = None
        if bal.mode == "uniform" and (prior_map or bal.prior_from_boosts):
            prior = np.array([prior_map.get(int(c), 1.0) * (info.boosts.get(int(c), 1.0) if bal.prior_from_boosts else 1.0)
                              for c in sub.ids])
        res = balance_weights(
            sub, bal, prior=prior,
            kg_weight=_column(manifest, "weight", rows), rarity=_column(manifest, "bm25", rows),
            quality=_column(manifest, bal.quality, rows) if bal.quality else None)
        weight[rows] = res.weight
        per_source[i] = (rows, sub, res)
        available[i] = res.expected_size if res.expected_size is not None else float((res.weight > 0).sum())
    empty = [i for i in range(len(sources)) if available[i] == 0]
    required = [sources[i].name for i in empty if not sources[i].optional]
    if required and len(empty) < len(sources):
        raise ValueError(f"{where}.sources: {', '.join(required)} select(s) no item of the manifest with a positive "
                         "weight; fix the source's `where`, or mark it `optional: true` to go on without it")
    shares[empty] = 0.0  # optional sources with nothing to give (edit pairs not built yet) drop out
    shares = shares / shares.sum() if shares.sum() > 0 else shares
    n, quotas = _quotas(shares, available, size)
    if n == 0 or quotas.sum() == 0:
        raise ValueError(f"{where}: the sample is empty: no item of the manifest ({manifest.num_rows} rows) is "
                         f"selected by the stage's sources ({', '.join(s.name for s in sources)}) with a positive weight")

    table = pa.table({"id": manifest["id"], "source": pa.array(which), "weight": pa.array(weight),
                      "row": pa.array(np.arange(manifest.num_rows, dtype=np.int64))})
    drawn = draw(table, {i: int(k) for i, k in enumerate(quotas)}, salt, use_ray=use_ray)
    rows = drawn["row"].to_numpy()
    src = drawn["source"].to_numpy()
    picked = manifest.take(pa.array(rows))

    # the concept each drawn item represents
    concept = np.full(len(rows), -1, dtype=np.int64)
    u_concept = item_uniforms(drawn["id"], salt + "/concept")
    drawn_local = {}
    for i, (src_rows, sub, res) in per_source.items():
        sel = np.flatnonzero(src == i)
        drawn_local[i] = local = np.searchsorted(src_rows, rows[sel])
        if len(sel):
            concept[sel] = assign_concepts(sub, res.term, local, u_concept[sel])

    chosen = choose_captions(picked, stage.captions, item_uniforms(drawn["id"], salt + "/caption"),
                             item_uniforms(drawn["id"], salt + "/instruction"))
    bh = picked["bucket_height"].to_numpy(zero_copy_only=False)
    bw = picked["bucket_width"].to_numpy(zero_copy_only=False)
    seq = sequence_lengths(bh, bw, chosen.text, stage.buckets.patch_px, stage.batches)
    kind = picked["kind"] if "kind" in picked.column_names else pa.array(["t2i"] * picked.num_rows)
    samples = pa.table({
        "id": drawn["id"], "epoch": pa.array(np.full(len(rows), epoch, np.int32)),
        "seed": pa.array(np.full(len(rows), seed, np.int64)),
        "source": pa.array(np.asarray([x.name for x in sources], dtype=object)[src], pa.string()), "kind": kind,
        "weight": drawn["weight"], "key": drawn["key"],
        "concept": pa.array(np.where(concept >= 0, concept, 0), mask=concept < 0),
        "concept_title": _titles(concept, info.titles),
        "caption_level": pa.array(chosen.level, pa.string()), "caption": pa.array(chosen.text, pa.string()),
        "bucket_height": pa.array(bh.astype(np.int32)), "bucket_width": pa.array(bw.astype(np.int32)),
        "seq_len": pa.array(seq.astype(np.int32)),
    })
    samples = schemas.table_spec("samples/<stage>").conform(samples)

    plan = plan_batches(seq, bh, bw, stage.batches, seed=salt_seed(salt + "/plan"))
    order = np.lexsort((plan.position, plan.batch))
    batches = pa.table({
        "batch": pa.array(plan.batch[order]), "position": pa.array(plan.position[order]),
        "id": samples["id"].take(pa.array(order)), "kind": samples["kind"].take(pa.array(order)),
        "caption": samples["caption"].take(pa.array(order)),
        "caption_level": samples["caption_level"].take(pa.array(order)),
        "bucket_height": samples["bucket_height"].take(pa.array(order)),
        "bucket_width": samples["bucket_width"].take(pa.array(order)),
        "seq_len": samples["seq_len"].take(pa.array(order)),
        "epoch": samples["epoch"].take(pa.array(order)),
    })
    batches = schemas.table_spec("batches/<stage>").conform(batches)

    report = {
        "stage": stage_name, "epoch": epoch, "seed": seed, "size": int(len(rows)), "requested_size": size,
        "sources": [{"name": s.name, "table": s.table, "share": round(float(shares[i]), 4),
                     "eligible": int((which == i).sum()), "available": round(float(available[i]), 1),
                     "quota": int(quotas[i]), "drawn": int((src == i).sum()),
                     "short_by": max(0, int(round(n * shares[i])) - int(quotas[i]))}
                    for i, s in enumerate(sources)],
        "unselected_rows": int((which < 0).sum()),
        "balance": _balance_report(bal, per_source, drawn_local, concept, info, prior_map),
        "captions": {"levels": _counts(chosen.level), "fallbacks": chosen.fallbacks, "no_text": chosen.no_text},
        "batches": {**padding_stats(seq, plan.batch, stage.batches.token_budget),
                    "token_budget": stage.batches.token_budget, "same_shape": stage.batches.same_shape},
    }
    return StageDraw(samples, batches, report)


def _titles(concept: np.ndarray, titles: dict[int, str]) -> pa.Array:
    """Title per concept id (null for -1 or an id the graph does not name), one lookup per id."""
    ids, inverse = np.unique(concept, return_inverse=True)
    names = np.asarray([titles.get(int(c)) if c >= 0 else None for c in ids.tolist()], dtype=object)
    return pa.array(names[inverse.reshape(-1)] if len(concept) else [], pa.string())


def _column(table: pa.Table, name: str | None, rows: np.ndarray) -> np.ndarray | None:
    if not name or name not in table.column_names:
        return None
    col = table[name].take(pa.array(rows)).cast(pa.float64())
    return col.to_numpy(zero_copy_only=False)


def _counts(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _balance_report(bal, per_source: dict, drawn_local: dict, drawn_concept: np.ndarray, info: ConceptInfo,
                    prior_map: dict[int, float]) -> dict:
    """The concept marginal before (eligible items, each item's mass split evenly over its
    concepts) and after: in `uniform` mode, which draws by concept, the histogram of the concepts
    the items were drawn for; in the other modes, which draw items, the same even split over the
    drawn items. Over the universe of concepts with items, named by the prior, or wanted by the
    graph (trending, boosted)."""
    before: dict[int, float] = {}
    after: dict[int, float] = {}
    untagged_before = 0
    for i, (rows, sub, res) in per_source.items():
        mask = np.zeros(sub.n_items, dtype=bool)
        mask[drawn_local[i]] = True
        for target, counts in ((before, sub.fractional_counts()), (after, sub.fractional_counts(mask))):
            for c, v in zip(sub.ids.tolist(), counts.tolist()):
                target[c] = target.get(c, 0.0) + v
        untagged_before += int((sub.lengths() == 0).sum())
    if bal.mode == "uniform":
        ids, counts = np.unique(drawn_concept[drawn_concept >= 0], return_counts=True)
        after = dict(zip(ids.tolist(), counts.astype(np.float64).tolist()))
    universe = set(before) | set(prior_map) | info.wanted
    after_ids = [c for c, v in after.items() if v > 0]
    gaps = sorted(universe - set(before))
    rep_before = marginal_report(np.array(list(before.values())), len(universe), bal.top_k)
    rep_after = marginal_report(np.array(list(after.values())), len(universe), bal.top_k)
    rep_before["items_without_concept"] = untagged_before
    rep_after["items_without_concept"] = int((drawn_concept < 0).sum())
    line = (f"concepts [{bal.mode}]: normalised entropy {rep_before['normalised_entropy']:.3f} -> "
            f"{rep_after['normalised_entropy']:.3f}, top-{bal.top_k} share {rep_before['top_k_share']:.3f} -> "
            f"{rep_after['top_k_share']:.3f}, concepts covered {rep_before['concepts_covered']} -> "
            f"{rep_after['concepts_covered']} of {len(universe)} ({len(gaps)} with no items)")
    return {"mode": bal.mode, "universe": len(universe), "before": rep_before, "after": rep_after,
            "gaps": [info.titles.get(c, str(c)) for c in gaps[:50]], "gap_count": len(gaps),
            "drawn_concepts": int(len(after_ids)), "line": line}


# --------------------------------------------------------------------------- lake step


def export_dir(lake: Lake, stage_name: str, manifest_version: int) -> str:
    """The default plain-Parquet directory of one manifest version of a stage."""
    from curation.steps.export.export import EXPORTS_DIR

    return posixpath.join(lake.uri.rstrip("/"), EXPORTS_DIR, stage_name, f"v{manifest_version:08d}")


def plain_names(epoch: int) -> tuple[str, str]:
    """File names of one epoch's sample and plan in an export directory."""
    return f"samples-e{epoch:05d}.parquet", f"batches-e{epoch:05d}.parquet"


def write_plain(directory: str, result: StageDraw, stage_name: str, manifest_version: int, stage) -> list[str]:
    """Write the sample and the plan as plain Parquet (schema metadata: manifest version, stage,
    epoch, token budget, same_shape) into `directory` (any pyarrow.fs URI)."""
    fs, path = io.resolve(directory)
    fs.create_dir(path, recursive=True)
    meta = {b"curation.manifest_version": str(manifest_version).encode(), b"curation.stage": stage_name.encode(),
            b"curation.epoch": str(result.report["epoch"]).encode(),
            b"curation.token_budget": str(stage.batches.token_budget).encode(),
            b"curation.same_shape": b"true" if stage.batches.same_shape else b"false"}
    written = []
    for name, table in zip(plain_names(result.report["epoch"]), (result.samples, result.batches)):
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        pq.write_table(table, posixpath.join(path, name), filesystem=fs, compression="zstd")
        written.append(posixpath.join(directory, name))
    return written


def check_stage(lake: Lake, stage_name: str, stage) -> ConceptInfo:
    """Checks of a stage against the lake, before anything is read at scale or written: the
    prior's concepts exist in the graph, the tokenizer loads. Returns the graph's concept info."""
    info = ConceptInfo.from_lake(lake)
    where = f"stages.{stage_name}"
    if stage.balance.mode == "uniform" and stage.balance.prior:
        info.resolve_prior(stage.balance.prior, f"{where}.balance.prior")
    if stage.batches.text_tokens.mode == "tokenizer":
        from curation.steps.sampling.tokens import text_tokens

        text_tokens(["check"], stage.batches.text_tokens)
    return info


def draw_and_write(lake: Lake, stage_name: str, stage, manifest_version: int, *, size: int | None = None,
                   epoch: int = 0, seed: int | None = None, out: str | None = None,
                   concepts: ConceptInfo | None = None) -> StageDraw:
    """Draw from `manifests/<stage>` at `manifest_version`, write `samples/<stage>`,
    `batches/<stage>`, their plain copies and `_samples-e<epoch>.json` (the report) into `out`
    (default: the manifest's export directory). The report gains `tables` and `files`."""
    name = schemas.manifest_table(stage_name)
    manifest = lake.read(name, version=manifest_version)
    info = concepts if concepts is not None else ConceptInfo.from_lake(lake)
    result = draw_stage(manifest, stage_name, stage, size=size, epoch=epoch, seed=seed, concepts=info)
    reads = {name: manifest_version, **({schemas.KG_NODES: info.version} if info.version is not None else {})}
    upstream = lake.commit_record(name, manifest_version).reads  # the weights / graph / pool versions behind it
    producer = {"step": "sample", "stage": stage_name, "epoch": epoch, "seed": result.report["seed"]}
    stats = {"balance": result.report["balance"]["line"], "size": result.report["size"], "upstream": upstream}
    sv = lake.write(schemas.samples_table(stage_name), result.samples, mode="overwrite", reads=reads,
                    producer=producer, stats=stats).version
    bv = lake.write(schemas.batches_table(stage_name), result.batches, mode="overwrite",
                    reads={**reads, schemas.samples_table(stage_name): sv}, producer=producer,
                    stats={"batches": result.report["batches"]}).version
    result.report["tables"] = {"manifest": manifest_version, "samples": sv, "batches": bv, "upstream": upstream}
    directory = out or export_dir(lake, stage_name, manifest_version)
    files = write_plain(directory, result, stage_name, manifest_version, stage)
    fs, path = io.resolve(directory)
    report_file = f"_samples-e{epoch:05d}.json"
    with fs.open_output_stream(posixpath.join(path, report_file)) as f:
        f.write(json.dumps(result.report, indent=1, default=str).encode())
    result.report["files"] = files + [posixpath.join(directory, report_file)]
    return result


def batches_line(report: dict) -> str:
    b = report["batches"]
    return (f"{b['batches']} batches, mean size {b['mean_batch_size']}, padding waste {100 * b['padding_waste']:.2f}%, "
            f"token budget used {100 * b.get('budget_used', 0):.1f}%")


def sample(lake: Lake, stage_name: str, stage, *, size: int | None = None, epoch: int = 0,
           seed: int | None = None, out: str | None = None) -> StepSummary:
    """Draw epoch `epoch` of the stage from its latest manifest; write `samples/<stage>`,
    `batches/<stage>` and their plain copies (in `out`, default the manifest's export directory)."""
    t0 = time.perf_counter()
    name = schemas.manifest_table(stage_name)
    if not lake.exists(name):
        raise ValueError(f"lake {lake.uri} has no manifest for stage {stage_name!r}: "
                         f"run `curate export {lake.uri} --stage {stage_name}` first")
    info = check_stage(lake, stage_name, stage)
    mver = lake.version(name)
    result = draw_and_write(lake, stage_name, stage, mver, size=size, epoch=epoch, seed=seed, out=out, concepts=info)
    rows = lake.commit_record(name, mver).rows
    return StepSummary("sample", rows, result.samples.num_rows, time.perf_counter() - t0, notes={
        "stage": stage_name, "epoch": epoch, "balance": result.report["balance"]["line"],
        "batches": batches_line(result.report), "plan": result.report["files"][1],
        "report": result.report["files"][2]})
