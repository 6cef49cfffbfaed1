"""URL-table ingest: the downloader against a real HTTP server on 127.0.0.1, lake shards, and an
end-to-end ingest -> profile of a CSV of URLs (issue 10, item 2). No other network."""

import csv
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.steps.ingest.download import DownloadConfig, download, download_batch, is_url
from curation.storage import io
from curation.storage.shards import ShardWriter, shard_dir, sniff_extension

# A local answer may be slow on a busy machine: every client timeout here is generous, except the
# one test of the timeout itself, whose request the server never answers until released.
GATE = 4  # /gate/<i>: answered only once GATE requests are in flight together


class _State:
    def __init__(self, images: list[bytes]):
        self.images = images
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.appeared = False  # /appears: 404 until a test sets this
        self.release = threading.Event()  # /hang: no answer until a test sets this
        self.gate = threading.Barrier(GATE, timeout=120)
        self.in_flight = self.max_in_flight = 0

    def hit(self, path: str) -> int:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            return self.hits[path]

    def gated(self, delta: int) -> None:
        """Count /gate requests in flight (delta +1 on arrival, -1 when answered)."""
        with self.lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, length: int | None = None):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            self._answer(self.path.split("?", 1)[0], state.hit(self.path))

        def _answer(self, path: str, n: int) -> None:
            if path.startswith("/img/"):
                i = int(path.rsplit("/", 1)[1].split(".")[0])
                self._send(200, state.images[i], {"Content-Type": "image/jpeg"})
            elif path == "/missing":
                self._send(404, b"not here")
            elif path == "/flaky":  # 500 on the first request of each distinct query, then the image
                if n == 1:
                    self._send(500, b"oops")
                else:
                    self._send(200, state.images[0], {"Content-Type": "image/jpeg"})
            elif path == "/throttled":  # 429 with Retry-After on the first request, then the image
                if n == 1:
                    self._send(429, b"slow down", {"Retry-After": "7"})
                else:
                    self._send(200, state.images[1], {"Content-Type": "image/jpeg"})
            elif path == "/unavailable":
                self._send(503, b"down", {"Retry-After": "0"})
            elif path == "/hang":
                state.release.wait(timeout=600)
                self._send(200, state.images[0])
            elif path.startswith("/gate/"):
                state.gated(+1)
                try:
                    state.gate.wait()
                except threading.BrokenBarrierError:
                    self._send(500, b"fewer requests in flight together than the gate needs")
                    return
                finally:
                    state.gated(-1)
                self._send(200, state.images[int(path.rsplit("/", 1)[1]) % 3], {"Content-Type": "image/jpeg"})
            elif path == "/redirect":
                self._send(302, b"", {"Location": "/img/1.jpg"})
            elif path == "/loop":
                self._send(302, b"", {"Location": "/loop2"})
            elif path == "/loop2":
                self._send(302, b"", {"Location": "/loop"})
            elif path == "/big":
                self._send(200, b"x" * 50_000)
            elif path == "/big-unsized":  # no Content-Length: the body ends when the connection closes
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"y" * 50_000)
            elif path == "/truncated":
                self._send(200, b"z" * 100, length=1000)
            elif path == "/appears":
                if state.appeared:
                    self._send(200, state.images[2], {"Content-Type": "image/jpeg"})
                else:
                    self._send(404, b"not yet")
            elif path == "/text":
                self._send(200, b"hello", {"Content-Type": "text/plain"})
            else:
                self._send(404, b"")

    return Handler


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from curation.demo import write_jpegs

    paths = write_jpegs(tmp_path_factory.mktemp("jpegs"), 3, megapixels=(0.01, 0.02))
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def server(images):
    state = _State(images)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


FAST = DownloadConfig(concurrency=GATE, timeout_s=60, retries=2, backoff_s=0.01, max_retry_after_s=0.05,
                      max_bytes=40_000, max_redirects=3)


def test_is_url():
    assert is_url("http://a/b") and is_url("HTTPS://a") and not is_url("s3://b/k") and not is_url(None)
    assert not is_url("/tmp/http://x")


def test_success_and_404_is_not_retried(server, images):
    base, state = server
    ok = download(f"{base}/img/0.jpg", FAST)
    assert ok.status == "success" and ok.data == images[0] and ok.http_status == 200 and ok.attempts == 1
    assert ok.content_type == "image/jpeg" and ok.error_message is None
    miss = download(f"{base}/missing?a", FAST)
    assert miss.status == "failed" and miss.data is None and miss.http_status == 404
    assert miss.error_message.startswith("HTTP Error 404") and miss.attempts == 1
    assert state.hits["/missing?a"] == 1


def test_500_then_success_is_retried_with_backoff(server, images):
    base, state = server
    waits = []
    res = download(f"{base}/flaky?unit", FAST, sleep=waits.append)
    assert res.status == "success" and res.data == images[0] and res.attempts == 2
    assert len(waits) == 1 and 0.005 <= waits[0] <= 0.015  # backoff_s * 2**0 * [0.5, 1.5)


def test_retry_after_is_honoured_up_to_the_cap(server, images):
    base, _ = server
    waits = []
    res = download(f"{base}/throttled?a", FAST, sleep=waits.append)
    assert res.status == "success" and res.data == images[1]
    assert waits == [0.05]  # Retry-After: 7, capped at max_retry_after_s
    cfg = DownloadConfig(**{**FAST.__dict__, "max_retry_after_s": 60.0})
    waits = []
    download(f"{base}/throttled?b", cfg, sleep=waits.append)
    assert waits == [7.0]


def test_persistent_503_fails_after_all_attempts(server):
    base, state = server
    waits = []
    res = download(f"{base}/unavailable", FAST, sleep=waits.append)
    assert res.status == "failed" and res.http_status == 503 and res.attempts == 3
    assert "HTTP Error 503" in res.error_message and "after 3 attempts" in res.error_message
    assert waits == [0.0, 0.0]  # Retry-After: 0
    assert state.hits["/unavailable"] == 3


def test_timeout_fails_the_row_without_retry(server):
    base, state = server
    res = download(f"{base}/hang?t", DownloadConfig(**{**FAST.__dict__, "timeout_s": 0.5}), sleep=lambda s: None)
    assert res.status == "failed" and "timed out" in res.error_message and res.attempts == 1
    assert state.hits["/hang?t"] == 1


def test_redirects_followed_and_bounded(server, images):
    base, _ = server
    res = download(f"{base}/redirect", FAST)
    assert res.status == "success" and res.data == images[1] and res.final_url.endswith("/img/1.jpg")
    loop = download(f"{base}/loop", FAST)
    assert loop.status == "failed" and loop.http_status == 302 and loop.attempts == 1
    none = download(f"{base}/redirect", DownloadConfig(**{**FAST.__dict__, "max_redirects": 0}))
    assert none.status == "failed" and "redirect" in none.error_message


def test_size_limit_by_header_and_while_reading(server):
    base, _ = server
    big = download(f"{base}/big", FAST)
    assert big.status == "failed" and "Content-Length 50000 > max_bytes 40000" in big.error_message
    unsized = download(f"{base}/big-unsized", FAST)
    assert unsized.status == "failed" and "more than max_bytes 40000" in unsized.error_message
    assert big.attempts == unsized.attempts == 1


def test_truncated_body_is_detected(server):
    base, _ = server
    res = download(f"{base}/truncated", FAST, sleep=lambda s: None)
    assert res.status == "failed" and "truncated body: 100 of 1000 bytes" in res.error_message


def test_connection_refused_and_bad_urls_are_rows(server):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    res = download(f"http://127.0.0.1:{port}/x", FAST, sleep=lambda s: None)
    assert res.status == "failed" and "connection error" in res.error_message and res.attempts == 3
    assert download("ftp://127.0.0.1/x", FAST).status == "failed"
    assert download("http://127.0.0.1:notaport/x", FAST).status == "failed"


def test_batch_keeps_order_and_bounds_concurrency(server, images):
    base, state = server
    # the gate answers only when `concurrency` requests are in flight together: the batch must
    # run that many at once (it would hang on a serial client), and never more
    urls = [f"{base}/gate/{i}" for i in range(2 * GATE)] + [f"{base}/missing?b", f"{base}/text"]
    state.max_in_flight = 0
    out = download_batch(urls, FAST)
    assert [r.url for r in out] == urls
    assert [r.data for r in out[:2 * GATE]] == [images[i % 3] for i in range(2 * GATE)]
    assert out[-2].status == "failed" and out[-1].status == "success" and out[-1].data == b"hello"
    assert state.max_in_flight == GATE
    assert download_batch([], FAST) == []


def test_shards_round_trip(tmp_path, images):
    items = [(f"{hashlib.sha256(b).hexdigest()}.{sniff_extension(b)}", b) for b in images]
    items.append((items[0][0], images[0]))  # a repeated name is stored once
    items.append(("long-" + "n" * 120 + ".bin", b"payload"))  # names past ustar's 100 chars
    with ShardWriter(str(tmp_path / "_shards" / "src" / "one.tar")) as writer:
        for name, data in items:
            writer.add(name, data)
    placed = writer.members
    assert len(placed) == 4 and {m.uri.split("#")[0] for m in placed.values()} == {str(tmp_path / "_shards/src/one.tar")}
    for name, data in items:
        m = placed[name]
        assert m.uri.endswith(".tar#" + name) and m.byte_size == len(data)
        assert io.read_bytes(m.uri, m.byte_offset, m.byte_size) == data
        assert io.read_bytes(m.uri) == data  # found by scanning the shard's headers
    assert sniff_extension(images[0]) == "jpg" and sniff_extension(b"\x89PNG\r\n\x1a\nxx") == "png"
    assert sniff_extension(b"RIFF0000WEBPVP8 ") == "webp" and sniff_extension(b"??", "image/png; q=1") == "png"
    assert sniff_extension(b"??") == "bin"
    assert shard_dir("/lake/_shards", "my source/..") == "/lake/_shards/my_source"


def test_url_table_ingest_profile_and_rerun(ray_session, server, images, tmp_path):
    from curation.steps.ingest.pool import IngestConfig, ingest
    from curation.steps.profiling.profile import ProfileConfig, profile
    from curation.storage.lake import Lake

    base, state = server
    table = tmp_path / "urls.csv"
    rows = [(f"{base}/img/0.jpg", "a red fox"), (f"{base}/img/1.jpg", "a cat"),
            (f"{base}/redirect", "the cat again"), (f"{base}/flaky?e2e", "flaky first"),
            (f"{base}/missing?e2e", "gone"), (f"{base}/img/2.jpg", "a bird")]
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption", "license"])
        for url, caption in rows:
            w.writerow([url, caption, "cc-by"])
    lake = Lake(str(tmp_path / "lake"))
    cfg = IngestConfig(source=str(table), name="web", batch_size=3,
                       download=DownloadConfig(concurrency=4, timeout_s=60, retries=2, backoff_s=0.01))
    s1 = ingest(lake, cfg)
    pool = lake.read("pool").to_pylist()
    by_url = {json.loads(r["extra_json"])["url"]: r for r in pool}
    ids = {hashlib.sha256(b).hexdigest() for b in images}
    ok = [r for r in pool if r["error"] is None]
    assert {r["id"] for r in ok} == ids  # img/1 and the redirect to it collapse; flaky -> img/0
    for r in ok:
        assert "/_shards/web/" in r["uri"] and ".tar#" in r["uri"] and r["byte_size"] == r["bytes_len"]
        assert hashlib.sha256(io.read_bytes(r["uri"], r["byte_offset"], r["byte_size"])).hexdigest() == r["id"]
    failed = by_url[f"{base}/missing?e2e"]
    assert failed["error"].startswith("ingest: download failed: HTTP Error 404") and failed["caption"] == "gone"
    assert failed["uri"] == f"{base}/missing?e2e"
    assert by_url[f"{base}/img/2.jpg"]["caption"] == "a bird" and by_url[f"{base}/img/2.jpg"]["sources"] == ["web"]
    assert json.loads(by_url[f"{base}/img/2.jpg"]["extra_json"])["license"] == "cc-by"
    assert s1.notes["urls"] == 6 and s1.notes["urls_failed"] == 1 and s1.notes["urls_downloaded"] == 5
    assert s1.rows_in == 6 and s1.rows_out == 4

    p = profile(lake, ProfileConfig(batch_size=4))
    prof = {r["id"]: r for r in lake.read("profiles").to_pylist()}
    for i in ids:
        assert prof[i]["error"] is None and prof[i]["width"] > 0
    assert p.rows_out >= 3

    hits_before = dict(state.hits)
    s2 = ingest(lake, cfg)
    assert s2.rows_out == 0 and s2.notes["urls_already_in_pool"] == 5
    # only the failed URL is tried again; nothing else is downloaded
    new_hits = {k: v - hits_before.get(k, 0) for k, v in state.hits.items() if v != hits_before.get(k, 0)}
    assert new_hits == {"/missing?e2e": 1}
    assert lake.read("pool").num_rows == len(pool)
    # one image at two URLs in one run: the id's row lists both, so the rerun skipped both
    img0 = next(r for r in pool if r["id"] == hashlib.sha256(images[0]).hexdigest())
    assert set(json.loads(img0["extra_json"])["urls"]) == {f"{base}/img/0.jpg", f"{base}/flaky?e2e"}

    # a later table with a new URL for an image the pool already holds: the URL joins that
    # row's uris (one more copy), and the run after that fetches nothing
    table2 = tmp_path / "more.csv"
    table2.write_text(f"url,caption\n{base}/img/2.jpg?copy,copy of the bird\n")
    cfg2 = IngestConfig(source=str(table2), name="web2", batch_size=3, download=cfg.download)
    s3 = ingest(lake, cfg2)
    assert s3.rows_out == 0 and s3.notes["urls_same_image_as_pool"] == 1 and s3.notes["existing_ids_updated"] == 1
    bird = next(r for r in lake.read("pool").to_pylist() if r["id"] == hashlib.sha256(images[2]).hexdigest())
    assert bird["uris"][-1] == f"{base}/img/2.jpg?copy" and bird["sources"] == ["web", "web2"]
    assert bird["uri"] != bird["uris"][-1]  # still read from the lake's shard
    hits_before = dict(state.hits)
    s4 = ingest(lake, cfg2)
    assert s4.rows_out == 0 and s4.notes["urls_already_in_pool"] == 1 and state.hits == hits_before
    assert lake.read("pool").num_rows == len(pool)


def test_url_that_failed_then_succeeds_replaces_its_error_row(ray_session, server, images, tmp_path):
    """A rerun ends where an uninterrupted run would: the error row of a URL that failed is
    deleted when a later ingest downloads it."""
    from curation.steps.ingest.pool import IngestConfig, ingest
    from curation.storage.lake import Lake

    base, state = server
    table = tmp_path / "urls.csv"
    table.write_text(f"url,caption\n{base}/appears?t,a bird at last\n{base}/img/0.jpg,a fox\n")
    lake = Lake(str(tmp_path / "lake"))
    cfg = IngestConfig(source=str(table), name="web", download=FAST)
    first = ingest(lake, cfg)
    assert first.rows_out == 2 and sum(first.errors.values()) == 1
    state.appeared = True
    try:
        second = ingest(lake, cfg)
    finally:
        state.appeared = False
    assert second.rows_out == 1 and second.notes["error_rows_superseded"] == 1
    pool = lake.read("pool").to_pylist()
    assert len(pool) == 2 and not any(r["error"] for r in pool)
    bird = next(r for r in pool if r["caption"] == "a bird at last")
    assert bird["id"] == hashlib.sha256(images[2]).hexdigest()
    assert ingest(lake, cfg).rows_out == 0 and lake.read("pool").num_rows == 2
