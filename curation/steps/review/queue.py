"""The review queue (`reviews`): propose, verify, export for annotation, import the verdicts.

Each step is separate, idempotent and never waits on a human: the queue is data.

    propose  -> rows in state ai_checked (proposal + the AI verifier's verdict), one per
                (run id, item); proposing the same run again adds nothing
    export   -> the run's ai_checked rows become human_pending, written as Label Studio tasks
                (re-exporting rewrites the same tasks, states unchanged)
    import   -> Label Studio's export moves each known item to accepted / corrected / rejected
                (importing the same file twice changes nothing); unknown, conflicting, empty or
                unannotated answers are counted, never applied

`curation.steps.review.apply` turns the verdicts into `labels` and `removals`.

Which items a run proposes (`ProposeConfig`): hard-case review requests first (the `fill`
decisions of `curate hardcases`), then the lowest image-text alignment, then a uniform random
audit, and the rest a concept-balanced draw with the sampler's balancing modes over the
knowledge-graph weights. Every draw is a hash of (seed, run id, item id), so the same run
proposes the same items. Items already waiting for a human (in any run) are not proposed again.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.review.config import ProposeConfig, ReviewConfig, VerifierConfig
from curation.steps.sampling.draw import item_uniforms
from curation.storage import schemas
from curation.storage.lake import Lake

__all__ = ["OPEN_STATES", "candidates", "propose_rows", "verify_alignment"]

OPEN_STATES = ("proposed", "ai_checked", "human_pending")
DONE_STATES = ("accepted", "corrected", "rejected")
SCORE_SKIP = ("id", "error", "score_producer")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def candidates(lake: Lake) -> pa.Table:
    """Pool items that may be proposed: readable (no pool or profile error), not waiting for a
    human in any run. Columns: id, caption, tags, and when present the scores, the kg weight,
    bm25 and concepts, and the captioner's levels."""
    pool = lake.read(schemas.POOL, columns=["id", "caption", "tags", "error"])
    pool = pool.filter(pc.is_null(pool["error"])).drop_columns(["error"])
    if lake.exists(schemas.PROFILES):
        prof = lake.read(schemas.PROFILES, columns=["id", "error"])
        pool = pool.filter(pc.invert(pc.is_in(pool["id"], value_set=prof.filter(pc.is_valid(prof["error"]))["id"])))
    if lake.exists(schemas.REVIEWS):
        rev = lake.read(schemas.REVIEWS, columns=["id", "state"])
        waiting = rev.filter(pc.is_in(rev["state"], value_set=pa.array(OPEN_STATES)))["id"]
        pool = pool.filter(pc.invert(pc.is_in(pool["id"], value_set=waiting)))
    pool = pool.sort_by("id")
    if lake.exists(schemas.SCORES):
        scores = lake.read(schemas.SCORES)
        scores = scores.filter(pc.is_null(scores["error"]))
        pool = _join(pool, scores.select([c for c in scores.column_names if c not in ("error",)]))
    if lake.exists(schemas.WEIGHTS):
        pool = _join(pool, lake.read(schemas.WEIGHTS, columns=["id", "weight", "bm25", "nodes"]))
    if lake.exists(schemas.CAPTIONS):
        cap = lake.read(schemas.CAPTIONS, columns=["id", "long", "medium", "short", "tags", "caption_producer", "error"])
        cap = cap.filter(pc.is_null(cap["error"])).drop_columns(["error"])
        pool = _join(pool, cap.rename_columns({c: f"vlm_{c}" for c in cap.column_names if c != "id"}))
    return pool


def _join(left: pa.Table, right: pa.Table) -> pa.Table:
    """left ⟕ right on a unique id, payload gathered with take (lists and structs survive)."""
    at = pc.index_in(left["id"], value_set=right["id"])
    for name in right.column_names:
        if name != "id":
            left = left.append_column(name, right[name].take(at))
    return left


def _pick(ids: pa.Array, pool_mask: np.ndarray, weight: np.ndarray | None, n: int, salt: str) -> np.ndarray:
    """Indices of n items among `pool_mask`, without replacement: uniform, or ∝ weight (A-ES
    keys ln(u)/w with u a hash of the id and `salt`)."""
    idx = np.flatnonzero(pool_mask)
    if n <= 0 or len(idx) == 0:
        return np.zeros(0, np.int64)
    u = item_uniforms(ids.take(pa.array(idx)), salt)
    w = np.ones(len(idx)) if weight is None else np.asarray(weight, np.float64)[idx]
    with np.errstate(divide="ignore"):
        keys = np.where(w > 0, np.log(u) / np.where(w > 0, w, 1.0), -np.inf)
    order = np.argsort(-keys, kind="stable")[:n]
    return idx[order[np.isfinite(keys[order])]]


def _balanced_weight(table: pa.Table, mode: str) -> np.ndarray | None:
    """Per-item weights of the sampler's balancing `mode` over the kg concepts (None: uniform)."""
    from curation.steps.sampling.balance import Concepts, balance_weights
    from curation.steps.sampling.config import BalanceConfig

    if mode == "none" or "nodes" not in table.column_names:
        return None
    concepts = Concepts.from_arrow(table["nodes"])
    cfg = BalanceConfig(mode=mode, untagged_share=0.2 if mode == "uniform" else 0.0)
    kg = table["weight"].to_numpy(zero_copy_only=False) if "weight" in table.column_names else None
    bm25 = table["bm25"].to_numpy(zero_copy_only=False) if "bm25" in table.column_names else None
    return balance_weights(concepts, cfg, kg_weight=kg, rarity=bm25).weight


def hard_case_requests(lake: Lake) -> list[tuple[str, str]]:
    """(item id, query) of every review request the `fill` decisions of `curate hardcases`
    recorded, oldest run first."""
    if not lake.exists(schemas.HARDCASES):
        return []
    cases = lake.read(schemas.HARDCASES, columns=["run_id", "query", "decision_json", "decided_at"])
    out = []
    for row in sorted(cases.to_pylist(), key=lambda r: (r["decided_at"] or "", r["run_id"])):
        decision = json.loads(row["decision_json"] or "{}")
        out += [(i, row["query"]) for i in decision.get("review_requests", [])]
    return out


def select(lake: Lake, table: pa.Table, cfg: ProposeConfig, run_id: str) -> tuple[np.ndarray, list[str], list]:
    """(row indices into `table`, reason per row, query per row) for one run's proposal."""
    n = table.num_rows
    taken = np.zeros(n, bool)
    rows, reasons, queries = [], [], []

    def take(idx, reason, query=None):
        for i in idx:
            if not taken[i] and len(rows) < cfg.size:
                taken[i] = True
                rows.append(int(i))
                reasons.append(reason)
                queries.append(query)

    ids = table["id"].combine_chunks()
    position = {v: i for i, v in enumerate(ids.to_pylist())}
    hard = [(position[i], q) for i, q in hard_case_requests(lake) if i in position]
    limit = int(round(cfg.hard_case_share * cfg.size))
    for i, q in hard[:limit]:
        take([i], "hard_case", q)
    if "clip_alignment" in table.column_names and cfg.low_alignment_share > 0:
        align = table["clip_alignment"].to_numpy(zero_copy_only=False).astype(float)
        order = [i for i in np.argsort(np.where(np.isnan(align), np.inf, align), kind="stable")
                 if not np.isnan(align[i]) and not taken[i]]
        take(order[:int(round(cfg.low_alignment_share * cfg.size))], "low_alignment")
    salt = f"review|{cfg.seed}|{run_id}"
    take(_pick(ids, ~taken, None, int(round(cfg.random_audit_share * cfg.size)), salt + "|audit"), "random_audit")
    rest = cfg.size - len(rows)
    take(_pick(ids, ~taken, _balanced_weight(table, cfg.balance), rest, salt + "|balanced"), "balanced")
    return np.asarray(rows, np.int64), reasons, queries


def propose_rows(table: pa.Table, idx: np.ndarray, reasons: list[str], queries: list, run_id: str) -> list[dict]:
    """Review rows (state proposed) for the chosen items: the captioner's levels and tags when
    it captioned the item, else the source's caption and tags; the scores with their producer."""
    score_cols = [c for c in table.column_names if c not in SCORE_SKIP and table.schema.field(c).type == pa.float32()
                  and c not in ("weight", "bm25")]
    stamp = now()
    out = []
    picked = table.take(pa.array(idx, pa.int64())).to_pylist()
    for row, reason, query in zip(picked, reasons, queries):
        vlm = row.get("vlm_long") is not None
        models = {"captions": row["vlm_caption_producer"] if vlm else "source",
                  "scores": row.get("score_producer")}
        scores = {c: row[c] for c in score_cols if row.get(c) is not None}
        out.append({
            "review_id": f"{run_id}:{row['id']}", "id": row["id"], "run_id": run_id, "reason": reason, "query": query,
            "proposed_long": row["vlm_long"] if vlm else row.get("caption"),
            "proposed_medium": row.get("vlm_medium") if vlm else None,
            "proposed_short": row.get("vlm_short") if vlm else None,
            "proposed_tags": (row.get("vlm_tags") if vlm else row.get("tags")) or [],
            "proposed_scores_json": json.dumps(scores), "proposal_models_json": json.dumps(models),
            "state": "proposed", "proposed_at": stamp, "updated_at": stamp,
        })
    return out


def verify_alignment(rows: list[dict], cfg: VerifierConfig) -> None:
    """The default AI verifier: the stored image-text alignment (`clip_alignment`, image vs
    primary caption, [-1, 1]) passes at >= threshold; no score, no pass."""
    name = f"alignment>={cfg.threshold:g}"
    for r in rows:
        score = json.loads(r["proposed_scores_json"]).get("clip_alignment")
        r.update(ai_verifier=name, ai_score=score, ai_pass=None if score is None else bool(score >= cfg.threshold),
                 state="ai_checked")


def run_id_default() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")


def write_new(lake: Lake, rows: list[dict], producer: dict[str, Any]) -> int:
    """Append review rows whose review_id the table lacks; returns how many were new."""
    if not rows:
        return 0
    table = pa.Table.from_pylist(rows, schema=schemas.REVIEWS_SCHEMA)
    if lake.exists(schemas.REVIEWS):
        known = lake.read(schemas.REVIEWS, columns=["review_id"])["review_id"]
        table = table.filter(pc.invert(pc.is_in(table["review_id"], value_set=known)))
    if table.num_rows:
        lake.write(schemas.REVIEWS, table, key="review_id", producer=producer)
    return table.num_rows


def update(lake: Lake, changed: list[dict], producer: dict[str, Any]) -> int:
    """Replace whole review rows (keyed MERGE); returns the rows written."""
    if not changed:
        return 0
    table = pa.Table.from_pylist(changed, schema=schemas.REVIEWS_SCHEMA)
    cols = [c for c in schemas.REVIEWS_SCHEMA.names if c != "review_id"]
    lake.transact(schemas.REVIEWS, lambda snap: table, key="review_id", update_columns=cols, producer=producer)
    return table.num_rows


def propose(lake: Lake, cfg: ReviewConfig, run_id: str, caption=None) -> dict:
    """Fill the queue for `run_id` (see the module); returns summary notes."""
    if not lake.exists(schemas.POOL):
        raise ValueError(f"lake {lake.uri} has no pool: run `curate ingest` first")
    table = candidates(lake)
    if lake.exists(schemas.REVIEWS):  # the run's own earlier proposal stands: a rerun adds nothing
        mine = lake.read(schemas.REVIEWS, columns=["run_id"])
        if pc.any(pc.equal(mine["run_id"], run_id)).as_py():
            return {"run_id": run_id, "proposed": 0, "note": f"run {run_id} already proposed"}
    idx, reasons, queries = select(lake, table, cfg.propose, run_id)
    rows = propose_rows(table, idx, reasons, queries, run_id)
    if cfg.verifier.kind == "vlm":
        from curation.steps.review.judge import verify_with_vlm

        verify_with_vlm(lake, rows, cfg.verifier, caption)
    else:
        verify_alignment(rows, cfg.verifier)
    added = write_new(lake, rows, {"step": "review propose", "run_id": run_id, "verifier": cfg.verifier.kind})
    passed = sum(1 for r in rows if r.get("ai_pass"))
    by_reason: dict[str, int] = {}
    for r in reasons:
        by_reason[r] = by_reason.get(r, 0) + 1
    return {"run_id": run_id, "candidates": table.num_rows, "proposed": added, "by_reason": by_reason,
            "ai_pass": f"{passed}/{len(rows)}", "verifier": rows[0]["ai_verifier"] if rows else cfg.verifier.kind}
