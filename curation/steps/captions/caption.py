"""`curate caption`: multi-level captions, tags and an NSFW score per image from a VLM, on Ray Data.

Pipeline (Ray Data, `ray.data.llm.build_processor`):

1. pending pool items (incremental like `score`: an item is redone when the model, prompt
   version, backend or language changes; `caption.limit` caps a run);
2. `prepare` (map_batches): read the bytes, decode once, downscale to `image_side`, re-encode
   as JPEG, base64 data URL; the prompt with the item's OCR strings and meta information;
   an unreadable image becomes an error row here and sends no request;
3. the processor: `HttpRequestProcessorConfig` (with `GuardedSession`: retries, timeouts and
   failures come back as rows, never as exceptions carrying the payload) or
   `vLLMEngineProcessorConfig` (GPU, in-cluster);
4. `postprocess`: the answer validated against the JSON schema (`prompt.parse_answer`); a
   malformed answer, an HTTP error body, a timeout or exhausted retries is the row's `error`.

Output: the `captions` table, one row per pool item (keyed append; overwrite when the producer
changes). Summary: rows/s, tokens used, errors by kind, and `ocr_verbatim`: the share of OCR
strings found verbatim in the long captions (the recipe's text-rendering requirement).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time

import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.captions.config import CaptionConfig
from curation.steps.captions.prompt import ANSWER_SCHEMA, PROMPT_VERSION, caption_messages, parse_answer
from curation.steps.summary import StepSummary, error_kinds
from curation.storage import schemas
from curation.storage.lake import Lake

__all__ = ["caption", "encode_image", "ocr_strings", "processor", "verbatim_share"]

log = logging.getLogger(__name__)
POOL_COLUMNS = ["id", "uri", "byte_offset", "byte_size", "caption", "error"]


def encode_image(data: bytes, side: int, quality: int) -> str:
    """A data: URL of the image, EXIF-oriented, RGB, longer side ≤ side px, JPEG at quality."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale when it covers the target
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def ocr_strings(lake: Lake) -> dict[str, list[str]]:
    """id -> the OCR operator's strings (reading order), from the table holding `ocr_texts`."""
    for table in ("ocr", schemas.PROFILES):
        if lake.exists(table) and "ocr_texts" in lake.dataset(table).schema.names:
            t = lake.read(table, columns=["id", "ocr_texts"])
            return {i: [x["text"] for x in (v or []) if x and x.get("text")]
                    for i, v in zip(t["id"].to_pylist(), t["ocr_texts"].to_pylist()) if v}
    return {}


def _entities(lake: Lake) -> dict[str, list[str]]:
    """id -> titles of the knowledge-graph nodes its tags matched (`weights.nodes`)."""
    if not (lake.exists(schemas.WEIGHTS) and lake.exists(schemas.KG_NODES)):
        return {}
    nodes = lake.read(schemas.KG_NODES, columns=["node", "title"])
    title = dict(zip(nodes["node"].to_pylist(), nodes["title"].to_pylist()))
    w = lake.read(schemas.WEIGHTS, columns=["id", "nodes"])
    return {i: [title[n] for n in ns if title.get(n)] for i, ns in zip(w["id"].to_pylist(), w["nodes"].to_pylist())
            if ns}


def verbatim_share(ocr: list[list[str]], long_captions: list[str | None]) -> tuple[int, int]:
    """(OCR strings found verbatim in their item's long caption, OCR strings), whitespace-folded."""
    found = total = 0
    for strings, text in zip(ocr, long_captions):
        folded = " ".join((text or "").split())
        for s in strings:
            total += 1
            found += " ".join(s.split()) in folded
    return found, total


def message_table(batch: pa.Table, key: str, build, what: str) -> pa.Table:
    """(key, messages as JSON text, prep_error) per row: `build(row)` returns the chat messages;
    anything it raises (an unreadable image, a pool row with an error) is that row's
    `prep_error`, prefixed with `what` ('caption', 'diff', 'judge')."""
    messages, errors = [], []
    for row in batch.to_pylist():
        try:
            messages.append(json.dumps(build(row), ensure_ascii=False))
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - one unreadable image is that row's error
            messages.append(None)
            errors.append(f"{what}: cannot prepare the image: {type(exc).__name__}: {str(exc)[:160]}")
    return pa.table({key: batch[key], "messages": pa.array(messages, pa.string()),
                     "prep_error": pa.array(errors, pa.string())})


def _prepare(batch: pa.Table, cfg: CaptionConfig) -> pa.Table:
    """Ray map_batches: pool rows -> (id, messages as JSON text, prep_error)."""
    from curation.storage.io import read_bytes

    def build(row: dict) -> list[dict]:
        if row["error"]:
            raise ValueError(f"the pool row has an error ({row['error'].split(';')[0][:120]})")
        data = read_bytes(row["uri"], row["byte_offset"], row["byte_size"])
        url = encode_image(data, cfg.image_side, cfg.jpeg_quality)
        return caption_messages(url, cfg.language, row["ocr"] or [], row["caption"] if cfg.use_meta else None,
                                (row["entities"] or []) if cfg.use_meta else [])

    return message_table(batch, "id", build, "caption")


def processor(cfg: CaptionConfig, postprocess, schema: dict | None = None, name: str = "caption"):
    """The `ray.data.llm` processor for the configured backend: rows with `messages` (JSON
    text) in, `postprocess(row, answer_text | None, error | None, usage)` rows out. `schema`:
    the answer's JSON schema, sent as `response_format` when the backend takes it."""
    from ray.data.llm import build_processor

    if cfg.backend == "http":
        from ray.data.llm import HttpRequestProcessorConfig

        from curation.steps.captions.http import SessionOptions

        h = cfg.http
        key = os.environ.get(h.api_key_env) if h.api_key_env else None
        config = HttpRequestProcessorConfig(
            url=h.url, headers={"Authorization": f"Bearer {key}"} if key else None, qps=h.qps,
            max_retries=0,  # GuardedSession retries, and never raises with the payload
            batch_size=h.batch_size, concurrency=h.actors,
            session_factory=SessionOptions(h.timeout_s, h.retries, h.backoff_s, h.concurrency))

        def pre(row: dict) -> dict:
            body = {"model": h.model, "messages": json.loads(row.pop("messages")), "max_tokens": cfg.max_tokens,
                    "temperature": cfg.temperature}
            if h.structured_output and schema:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
            return {**row, "payload": body}

        def post(row: dict) -> dict:
            resp = row.pop("http_response", None) or {}
            row.pop("payload", None)
            if "error" in resp:
                e = resp["error"]
                msg = e.get("message") if isinstance(e, dict) else str(e)
                return postprocess(row, None, f"{name}: request failed: {str(msg)[:200]}", {})
            try:
                text = resp["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                return postprocess(row, None, f"{name}: the answer has no choices[0].message.content", {})
            return postprocess(row, text, None, resp.get("usage") or {})

        return build_processor(config, preprocess=pre, postprocess=post)

    from ray.data.llm import vLLMEngineProcessorConfig

    v = cfg.vllm
    config = vLLMEngineProcessorConfig(
        model_source=v.model_source, engine_kwargs=v.engine_kwargs, batch_size=v.batch_size,
        concurrency=v.concurrency, accelerator_type=v.accelerator_type, should_continue_on_error=True,
        prepare_multimodal_stage={"enabled": True})

    def pre_v(row: dict) -> dict:
        return {**row, "messages": json.loads(row["messages"]),
                "sampling_params": {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}}

    def post_v(row: dict) -> dict:
        err = row.pop("__inference_error__", None)
        usage = {"prompt_tokens": row.get("num_input_tokens"), "completion_tokens": row.get("num_generated_tokens")}
        if err:
            return postprocess(row, None, f"{name}: vLLM failed: {str(err)[:200]}", {})
        return postprocess(row, row.get("generated_text"), None, usage)

    return build_processor(config, preprocess=pre_v, postprocess=post_v)


def _answer_row(cfg: CaptionConfig):
    producer = cfg.producer()

    def post(row: dict, text: str | None, error: str | None, usage: dict) -> dict:
        out = {"id": row["id"], "long": None, "medium": None, "short": None, "tags": None, "prompt": None,
               "nsfw": None, "language": cfg.language, "model": cfg.model, "prompt_version": PROMPT_VERSION,
               "backend": cfg.backend, "caption_producer": producer,
               "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
               "error": error}
        if error is None:
            try:
                out.update(parse_answer(text))
            except ValueError as exc:
                out["error"] = f"caption: invalid answer: {exc}"
        return out

    return post


def caption(lake: Lake, cfg: CaptionConfig) -> StepSummary:
    import ray
    import ray.data

    t0 = time.perf_counter()
    producer = cfg.producer()
    todo, mode = lake.pending(schemas.POOL, POOL_COLUMNS, schemas.CAPTIONS, "caption_producer", producer)
    if cfg.limit is not None and todo.num_rows > cfg.limit:
        todo = todo.sort_by("id").slice(0, cfg.limit)
    if todo.num_rows == 0:
        return StepSummary("caption", 0, 0, time.perf_counter() - t0, notes={"up_to_date": producer})
    ocr = ocr_strings(lake) if cfg.use_ocr else {}
    entities = _entities(lake) if cfg.use_meta else {}
    ids = todo["id"].to_pylist()
    todo = todo.append_column("ocr", pa.array([ocr.get(i, []) for i in ids], pa.list_(pa.string())))
    todo = todo.append_column("entities", pa.array([entities.get(i, []) for i in ids], pa.list_(pa.string())))

    post = _answer_row(cfg)
    blocks = [todo.slice(i, 64) for i in range(0, todo.num_rows, 64)]
    prepared = pa.concat_tables(ray.get(ray.data.from_arrow(blocks).map_batches(
        _prepare, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=None).to_arrow_refs()))
    bad = pc.is_valid(prepared["prep_error"])
    rows = [post(r, None, r["prep_error"], {}) for r in prepared.filter(bad).to_pylist()]
    ready = prepared.filter(pc.invert(bad)).select(["id", "messages"])
    if ready.num_rows:
        rows += processor(cfg, post, ANSWER_SCHEMA)(ray.data.from_arrow(ready)).take_all()
    spec = schemas.table_spec(schemas.CAPTIONS)
    table = spec.conform(pa.Table.from_pylist(rows, schema=schemas.CAPTIONS_SCHEMA))
    lake.write(schemas.CAPTIONS, table, mode=mode, key="id" if mode == "append" else None,
               producer={"step": "caption", "producer": producer})

    ok = table.filter(pc.is_null(table["error"]))
    found, total = verbatim_share([ocr.get(i, []) for i in ok["id"].to_pylist()], ok["long"].to_pylist())
    tokens = sum(int(x or 0) for x in table["prompt_tokens"].to_pylist() + table["completion_tokens"].to_pylist())
    return StepSummary("caption", todo.num_rows, ok.num_rows, time.perf_counter() - t0,
                       errors=error_kinds(table["error"]), notes={
                           "producer": producer, "mode": mode, "tokens": tokens,
                           "ocr_verbatim": f"{found}/{total} OCR strings verbatim in the long caption"
                                           + (f" ({100 * found / total:.1f}%)" if total else "")})
