"""A guarded HTTP session for Ray Data's LLM HTTP stage: retries, timeouts and errors as rows.

`ray.data.llm.HttpRequestProcessorConfig` posts each row's `payload` and yields the JSON answer
as `http_response`. Left alone it has four failure modes a curation job cannot accept: a body
that is not JSON (an HTML 500 page) raises inside the actor; retries that run out raise a
RuntimeError whose message holds the whole payload (base64 images, megabytes per log line);
a 4xx answer comes back as if it were an answer; and it awaits a batch's requests one after
the other, so lazily started requests go out one at a time. `GuardedSession`, given to it as
`session_factory`, starts every request as soon as the stage creates it, bounds the requests
in flight per actor, does the retrying itself (429, 408, 5xx, timeouts, connection errors;
exponential backoff, `Retry-After` honoured), and always hands the stage a JSON object: the
server's answer, or {"error": {...}} saying what failed (kind, status, a short excerpt of the
body). Ray's own retries are therefore set to 0.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["GuardedSession", "SessionOptions"]

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

# One limit per actor: Ray runs several batches of an async stage at once, each with its own
# session, so the semaphore is shared by every session of the actor's event loop.
_SLOTS: dict[tuple[int, int], asyncio.Semaphore] = {}


def _slots(concurrency: int) -> asyncio.Semaphore:
    key = (id(asyncio.get_running_loop()), concurrency)
    if key not in _SLOTS:
        _SLOTS[key] = asyncio.Semaphore(concurrency)
    return _SLOTS[key]


@dataclass(frozen=True)
class SessionOptions:
    """timeout_s: per request, seconds; retries: extra attempts after the first; backoff_s:
    first wait, doubled per retry (a Retry-After header wins when it is longer, up to 60 s);
    concurrency: requests in flight per actor."""

    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 16

    def __call__(self) -> "GuardedSession":  # the session_factory Ray calls once per batch
        return GuardedSession(self)


class _Reply:
    """What Ray's HTTP stage reads from a response: `status`, `reason`, `await json()`, and
    use as an async context manager."""

    status = 200
    reason = "OK"

    def __init__(self, body: dict) -> None:
        self._body = body

    async def json(self) -> dict:
        return self._body

    async def __aenter__(self) -> "_Reply":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


def _error(kind: str, message: str, status: int | None = None) -> dict:
    return {"error": {"kind": kind, "status": status, "message": message[:300]}}


class GuardedSession:
    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self._session = None

    async def __aenter__(self) -> "GuardedSession":
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.options.timeout_s))
        self._slots = _slots(self.options.concurrency)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._session.close()

    def post(self, url: str, headers: dict | None = None, data: Any = None) -> "asyncio.Task[_Reply]":
        # Started now, not when awaited: Ray's stage creates a batch's requests first and awaits
        # them one by one, which with a lazy coroutine would send one request at a time.
        return asyncio.ensure_future(self._post(url, headers, data))

    async def _post(self, url: str, headers: dict | None, data: Any) -> _Reply:
        import aiohttp

        opts = self.options
        last: dict = _error("unknown", "no attempt made")
        for attempt in range(opts.retries + 1):
            wait = opts.backoff_s * 2 ** attempt
            try:
                async with self._slots:
                    async with self._session.post(url, headers=headers, data=data) as resp:
                        status, text = resp.status, await resp.text(errors="replace")
                        retry_after = resp.headers.get("Retry-After")
            except asyncio.TimeoutError:
                last = _error("timeout", f"no answer within {opts.timeout_s:g} s")
            except aiohttp.ClientError as exc:
                last = _error("connection", f"{type(exc).__name__}: {exc}")
            else:
                body = _json(text)
                if status < 400 and body is not None:
                    return _Reply(body)
                message = _message(body, text)
                last = _error("http" if body is not None or status >= 400 else "invalid_json",
                              f"HTTP {status}: {message}" if status >= 400 else f"answer is not JSON: {message}",
                              status)
                if status not in RETRY_STATUS:
                    return _Reply(last)
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(max(wait, float(retry_after)), 60.0)
            if attempt < opts.retries:
                await asyncio.sleep(wait)
        last["error"]["message"] += f" (after {opts.retries + 1} attempts)"
        return _Reply(last)


def _json(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _message(body: dict | None, text: str) -> str:
    if body and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])[:200]
    if body and "error" in body:
        return str(body["error"])[:200]
    return " ".join(text.split())[:120]
