"""A local OpenAI-compatible chat-completions server standing in for a VLM (tests, benchmarks).

It answers `POST /v1/chat/completions` with a schema-valid caption JSON built from the request:
the OCR strings given in the prompt are quoted in the long caption (so the OCR-verbatim metric
has something to find), the tags come from the known entities, and the image's data URL is
checked to decode. Markers in the request text make it misbehave, to test error handling:

    [[malformed]]   content that is not JSON
    [[badschema]]   JSON missing `long`
    [[429]]         429 with Retry-After: 0 on the first request of that item, then an answer
    [[500]]         an HTML 500 page, always
    [[400]]         a JSON 400 error body
    [[timeout]]     no answer until the stub closes (a client's timeout always runs out first)
    [[reject]]      a judge request (review verifier) answered with verdict 'fail'

`latency_s` delays every answer (the benchmark's simulated model time); `GET /stats` returns the
requests seen and the first and latest arrival times (`/stats?reset=1` also starts counting
afresh). Nothing leaves 127.0.0.1.

    python -m curation.demo.vlm_stub [--latency 0.05]     # serve until killed; prints the URL
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["VlmStub"]

_QUOTED = re.compile(r'^- (".*")$', re.M)


class VlmStub:
    """with VlmStub(latency_s=0.05) as stub: stub.url -> 'http://127.0.0.1:<port>/v1/chat/completions'."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self._closing = threading.Event()
        self.requests = 0
        self.first = self.last = None  # time.time() of the first and the latest request
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:  # quiet
                return

            def do_GET(self) -> None:  # noqa: N802 - /stats: requests seen, first and latest arrival
                data = json.dumps({"requests": stub.requests, "first": stub.first, "last": stub.last}).encode()
                if self.path.endswith("?reset=1"):
                    with stub._lock:
                        stub.requests, stub.first, stub.last = 0, None, None
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload, headers = stub.answer(body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, bytes) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): as a real server, carry on

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/chat/completions"

    def __enter__(self) -> "VlmStub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()  # lets [[timeout]] requests end
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict) -> tuple[int, dict | bytes, dict]:
        with self._lock:
            self.requests += 1
            self.last = time.time()
            self.first = self.first or self.last
        text, images = "", []
        for message in body.get("messages", []):
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            for part in parts:
                if part.get("type") == "text":
                    text += part["text"] + "\n"
                elif part.get("type") == "image_url":
                    images.append(part["image_url"]["url"])
        time.sleep(self.latency_s)
        key = str(hash(text))
        if "[[timeout]]" in text:
            self._closing.wait()
        if "[[500]]" in text:
            return 500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", {}
        if "[[400]]" in text:
            return 400, {"error": {"message": "image too large", "type": "invalid_request_error"}}, {}
        if "[[429]]" in text:
            with self._lock:
                first = key not in self._seen
                self._seen.add(key)
            if first:
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
        try:
            from PIL import Image

            for url in images:
                Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
        except Exception as exc:  # noqa: BLE001 - a bad image is a 400, as a real server would say
            return 400, {"error": {"message": f"cannot decode image: {exc}"}}, {}
        strings = [json.loads(q) for q in _QUOTED.findall(text)]
        if "Judge these proposed labels" in text:  # the review queue's AI verifier
            bad = "[[reject]]" in text
            judge = {"score": 0.1 if bad else 0.9, "verdict": "fail" if bad else "pass",
                     "reason": "the labels describe another image" if bad else "the labels match the image"}
            return 200, {"choices": [{"message": {"role": "assistant", "content": json.dumps(judge)}}], "usage": {}}, {}
        if "source_caption" in text:  # a difference-caption request (two images)
            diff = {"source_caption": "A picture.", "target_caption": "A picture, edited.",
                    "differences": [{"type": "recolor", "description": "the colours changed"}],
                    "instruction": "Change the colours" + "".join(f' and write "{s}"' for s in strings) + "."}
            content = "{oops" if "[[malformed]]" in text else json.dumps(diff, ensure_ascii=False)
            return 200, {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {}}, {}
        entities = re.findall(r"known entities possibly shown: (.*)", text)
        tags = [t.strip() for t in entities[0].split(",")] if entities else ["image"]
        answer = {"long": "A picture" + "".join(f' showing the text "{s}"' for s in strings) + ".",
                  "medium": "A picture with some text.", "short": "A picture.", "tags": tags,
                  "prompt": "a picture", "nsfw": 0.01}
        if "[[badschema]]" in text:
            answer.pop("long")
        content = "Sure! Here it is: {not json" if "[[malformed]]" in text else json.dumps(answer, ensure_ascii=False)
        return 200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4}}, {}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="a local OpenAI-compatible stand-in for a VLM")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    args = ap.parse_args()
    with VlmStub(latency_s=args.latency) as stub:
        print(stub.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
