"""Download a batch of http(s) URLs: bounded concurrency, timeouts, retries, size limits.

Used by URL-table ingest (`curation.steps.ingest.urls`) inside Ray tasks; plain Python, no Ray.
Every URL yields one `DownloadResult`, `status` "success" (with the bytes) or "failed" (with an
`error_message` in img2dataset's style, e.g. "HTTP Error 404: Not Found"): a failure is a
result, never an exception out of `download_batch`.

Retries (with exponential backoff and jitter) happen on HTTP 429, on 5xx, and on connection
errors (refused, reset, DNS, a body cut short before its Content-Length); never on other 4xx,
on a timeout (a server that is too slow once is slow again: retrying would multiply the worst
case per row), or on a body over `max_bytes`. A `Retry-After` header (seconds or an HTTP date)
replaces the backoff of that attempt, capped at `max_retry_after_s`.

Stdlib only (`urllib.request`): redirects are followed up to `max_redirects` hops, to http(s)
targets only; proxies come from the environment (`http_proxy`, `no_proxy`, ...) as urllib reads
them.
"""

from __future__ import annotations

import email.utils
import http.client
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Iterator

__all__ = ["DownloadConfig", "DownloadResult", "download", "download_batch", "download_iter", "is_url"]

_CHUNK = 64 << 10


@dataclass
class DownloadConfig:
    """How URL-table sources are fetched (ingest.download).

    concurrency: simultaneous requests per worker task (threads).
    timeout_s: seconds; the limit for connecting and for each socket read, and for the whole
        body of one attempt (a trickling server is cut off when the attempt passes it).
    retries: extra attempts after the first, on HTTP 429 / 5xx / connection errors only.
    backoff_s: seconds before the first retry; doubled each retry, times a random factor in
        [0.5, 1.5) (jitter).
    max_retry_after_s: seconds; a server's `Retry-After` is honoured up to this cap.
    max_bytes: bytes; a larger body fails the row (checked against Content-Length before
        reading, and while reading).
    max_redirects: redirect hops followed per request (0: a redirect fails the row).
    user_agent: the User-Agent header sent.
    batch_size: URLs per Ray task, and so per lake shard (the ingest's `batch_size` is for
        hashing); larger batches leave fewer idle threads at each task's tail and fewer,
        larger shards (on 2 CPUs x 16 threads and a 20 ms server, 1,000 ran ~1.5x faster
        than 256).
    """

    concurrency: int = field(default=16, metadata={"min": 1})
    timeout_s: float = field(default=10.0, metadata={"gt": 0})
    retries: int = field(default=2, metadata={"min": 0})
    backoff_s: float = field(default=0.5, metadata={"min": 0})
    max_retry_after_s: float = field(default=30.0, metadata={"min": 0})
    max_bytes: int = field(default=32 << 20, metadata={"min": 1})
    max_redirects: int = field(default=5, metadata={"min": 0})
    user_agent: str = "curation-ingest/1 (+img2dataset-compatible)"
    batch_size: int = field(default=1000, metadata={"min": 1})


@dataclass
class DownloadResult:
    """One URL's outcome. `data` is set only on success; `http_status` is the last response's
    code (None when no response came); `final_url` the URL after redirects."""

    url: str
    status: str  # "success" | "failed"
    data: bytes | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    attempts: int = 0
    seconds: float = 0.0


def is_url(uri: str | None) -> bool:
    """True for an http:// or https:// URL (any case of the scheme)."""
    return isinstance(uri, str) and uri[:8].lower().startswith(("http://", "https://"))


class _Failure(Exception):
    def __init__(self, message: str, retry: bool, http_status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retry, self.http_status, self.retry_after = retry, http_status, retry_after


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, max_redirects: int):
        super().__init__()
        self.max_redirections = max_redirects
        self.max_repeats = max(1, min(4, max_redirects))

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_url(newurl):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http(s) URL refused: {newurl}",
                                         headers, fp)
        if self.max_redirections == 0:
            raise urllib.error.HTTPError(req.full_url, code, "redirect not followed (max_redirects=0)",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(cfg: DownloadConfig) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_Redirects(cfg.max_redirects))


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def _attempt(opener: urllib.request.OpenerDirector, url: str, cfg: DownloadConfig) -> tuple[bytes, int, str, str | None]:
    """(body, status, final url, content type) or _Failure."""
    deadline = time.monotonic() + cfg.timeout_s
    req = urllib.request.Request(url, headers={"User-Agent": cfg.user_agent, "Accept": "*/*"})
    try:
        resp = opener.open(req, timeout=cfg.timeout_s)
    except urllib.error.HTTPError as exc:
        code = exc.code
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, cfg.max_retry_after_s)
        exc.close()
        reason = exc.reason if isinstance(exc.reason, str) else str(exc.reason)
        return_retry = code == 429 or 500 <= code <= 599
        raise _Failure(f"HTTP Error {code}: {reason}", return_retry, code, retry_after) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Failure(f"timed out after {cfg.timeout_s:g} s (connect)", False) from None
        raise _Failure(f"connection error: {reason}", True) from None
    except (socket.timeout, TimeoutError):
        raise _Failure(f"timed out after {cfg.timeout_s:g} s", False) from None
    except (http.client.HTTPException, ConnectionError, OSError) as exc:
        raise _Failure(f"connection error: {type(exc).__name__}: {exc}", True) from None
    with resp:
        status = resp.status
        ctype = resp.headers.get("Content-Type")
        final_url = resp.geturl()
        length_header = resp.headers.get("Content-Length")
        expected = None
        if length_header is not None:
            try:
                expected = int(length_header)
            except ValueError:
                expected = None
        if expected is not None and expected > cfg.max_bytes:
            raise _Failure(f"too large: Content-Length {expected} > max_bytes {cfg.max_bytes}", False, status)
        chunks, total = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _Failure(f"timed out after {cfg.timeout_s:g} s (reading the body)", False, status)
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > cfg.max_bytes:
                    raise _Failure(f"too large: more than max_bytes {cfg.max_bytes} bytes", False, status)
                chunks.append(chunk)
        except http.client.IncompleteRead as exc:
            total += len(exc.partial)
            raise _Failure(f"truncated body: {total} of {expected} bytes", True, status) from None
        except (socket.timeout, TimeoutError):
            raise _Failure(f"timed out after {cfg.timeout_s:g} s (reading the body)", False, status) from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Failure(f"connection error while reading: {type(exc).__name__}: {exc}", True, status) from None
    if expected is not None and total != expected:
        raise _Failure(f"truncated body: {total} of {expected} bytes", True, status)
    return b"".join(chunks), status, final_url, ctype


def download(url: str, cfg: DownloadConfig | None = None, *, opener: urllib.request.OpenerDirector | None = None,
             sleep=time.sleep, rng: random.Random | None = None) -> DownloadResult:
    """Fetch one URL with retries; never raises for a network or HTTP problem."""
    cfg = cfg or DownloadConfig()
    opener = opener or _opener(cfg)
    rng = rng or random.Random()
    t0 = time.monotonic()
    if not is_url(url):
        return DownloadResult(url, "failed", error_message=f"not an http(s) URL: {url!r}")
    last: _Failure | None = None
    attempts = 0
    for attempt in range(cfg.retries + 1):
        attempts = attempt + 1
        try:
            data, status, final_url, ctype = _attempt(opener, url, cfg)
            return DownloadResult(url, "success", data=data, http_status=status, final_url=final_url,
                                  content_type=ctype, attempts=attempts, seconds=time.monotonic() - t0)
        except _Failure as failure:
            last = failure
        except Exception as exc:  # a bad URL (no host, bad port) or an unforeseen library error
            last = _Failure(f"{type(exc).__name__}: {exc}", False)
        if not last.retry or attempt == cfg.retries:
            break
        wait = cfg.backoff_s * (2 ** attempt) * rng.uniform(0.5, 1.5)
        if last.retry_after is not None:
            wait = last.retry_after
        sleep(wait)
    message = str(last)
    if attempts > 1:
        message += f" (after {attempts} attempts)"
    return DownloadResult(url, "failed", error_message=message, http_status=last.http_status,
                          attempts=attempts, seconds=time.monotonic() - t0)


def download_batch(urls: list[str], cfg: DownloadConfig | None = None) -> list[DownloadResult]:
    """One result per url, in order; at most `cfg.concurrency` requests at a time."""
    results: list[DownloadResult | None] = [None] * len(urls)
    for i, res in download_iter(urls, cfg):
        results[i] = res
    return results  # type: ignore[return-value]


def download_iter(urls: list[str], cfg: DownloadConfig | None = None) -> Iterator[tuple[int, DownloadResult]]:
    """(index in `urls`, result) as each download finishes; at most `cfg.concurrency` requests
    at a time. A caller that consumes each body as it comes (writes it out, drops it) holds
    about `concurrency` bodies in memory, not the whole batch."""
    cfg = cfg or DownloadConfig()
    if not urls:
        return
    opener = _opener(cfg)
    with ThreadPoolExecutor(max_workers=min(cfg.concurrency, len(urls)), thread_name_prefix="download") as pool:
        futures = {pool.submit(download, u, cfg, opener=opener): i for i, u in enumerate(urls)}
        for future in as_completed(futures):
            yield futures.pop(future), future.result()
