"""The VLM as the review queue's AI verifier (`review.verifier.kind: vlm`): the captioner's
backend (`caption:` section) is asked, per proposal, to score the proposed labels against the
image (`prompt.judge_messages`, answer validated against `prompt.JUDGE_SCHEMA`). A proposal
passes when the verdict is 'pass' and the score reaches `verifier.threshold`. A failed request
or an invalid answer leaves `ai_pass` null with the reason in `ai_verifier`: the item still goes
to the humans, unjudged.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.review.config import VerifierConfig
from curation.storage import schemas
from curation.storage.lake import Lake

__all__ = ["verify_with_vlm"]


def _prepare(batch: pa.Table, cfg) -> pa.Table:
    from curation.steps.captions.caption import encode_image, message_table
    from curation.steps.captions.prompt import judge_messages
    from curation.storage.io import read_bytes

    def build(row: dict) -> list[dict]:
        url = encode_image(read_bytes(row["uri"], row["byte_offset"], row["byte_size"]), cfg.image_side,
                           cfg.jpeg_quality)
        return judge_messages(url, json.loads(row["proposal"]))

    return message_table(batch, "review_id", build, "judge")


def verify_with_vlm(lake: Lake, rows: list[dict], cfg: VerifierConfig, caption) -> None:
    """Judge each proposal row in place (ai_verifier, ai_score, ai_pass, state ai_checked)."""
    import ray
    import ray.data

    from curation.steps.captions.caption import processor
    from curation.steps.captions.prompt import JUDGE_PROMPT_VERSION, JUDGE_SCHEMA, parse_judge_answer
    from curation.steps.captions.config import captioner_configured

    if not captioner_configured(caption):
        raise ValueError("review.verifier.kind: 'vlm' needs a captioner: set caption.http.url (or the vllm backend)")
    name = f"vlm:{caption.model}|{JUDGE_PROMPT_VERSION}>={cfg.threshold:g}"
    for r in rows:
        r.update(ai_verifier=name, ai_score=None, ai_pass=None, state="ai_checked")
    if not rows:
        return
    pool = lake.read(schemas.POOL, columns=["id", "uri", "byte_offset", "byte_size"])
    at = {i: k for k, i in enumerate(pool["id"].to_pylist())}
    loc = pool.to_pylist()
    request = pa.Table.from_pylist([{
        "review_id": r["review_id"], **{k: loc[at[r["id"]]][k] for k in ("uri", "byte_offset", "byte_size")},
        "proposal": json.dumps({"long": r["proposed_long"], "medium": r["proposed_medium"], "short": r["proposed_short"],
                                "tags": r["proposed_tags"]}, ensure_ascii=False)} for r in rows])
    blocks = [request.slice(i, 32) for i in range(0, request.num_rows, 32)]
    prepared = pa.concat_tables(ray.get(ray.data.from_arrow(blocks).map_batches(
        _prepare, fn_kwargs={"cfg": caption}, batch_format="pyarrow", batch_size=None).to_arrow_refs()))
    by_id = {r["review_id"]: r for r in rows}

    def post(row: dict, text: str | None, error: str | None, usage: dict) -> dict:
        out = {"review_id": row["review_id"], "score": None, "verdict": None, "error": error}
        if error is None:
            try:
                out.update(parse_judge_answer(text))
            except ValueError as exc:
                out["error"] = f"judge: invalid answer: {exc}"
        return out

    answers = [{"review_id": r["review_id"], "score": None, "verdict": None, "error": r["prep_error"]}
               for r in prepared.to_pylist() if r["prep_error"]]
    ready = prepared.filter(pc.is_null(prepared["prep_error"])).select(["review_id", "messages"])
    if ready.num_rows:
        answers += processor(caption, post, JUDGE_SCHEMA, "judge")(ray.data.from_arrow(ready)).take_all()
    for a in answers:
        r = by_id[a["review_id"]]
        if a["error"]:
            r["ai_verifier"] = f"{name} (no verdict: {a['error'][:160]})"
            continue
        r.update(ai_score=a["score"], ai_pass=a["verdict"] == "pass" and a["score"] >= cfg.threshold)
