"""A local fake OpenAI-compatible chat-completions server for tests (no mocks, no network).

The first path segment picks the behaviour, so one server serves every case:
`{url}/{mode}/v1` → `slow` sleeps `slow_seconds` first, `error500` answers 500, `ratelimit` 429 with
`Retry-After: 40`, `trickle` sends its headers a byte every 0.2 s, `html` answers a
non-JSON body, `huge` streams a completion of `huge_bytes` bytes without a Content-Length (until
the client hangs up), `hugelen` announces and sends one with a Content-Length, `gzip` answers a
gzip-compressed completion; anything else answers a completion whose content is
`reply(mode, request_body)`. Every request body is kept in `seen` (with its path and Authorization
header); `sent` counts the body bytes written per mode."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[str, dict[str, Any]], str | None]


@dataclass
class FakeOpenAI:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)

    def requests(self, mode: str) -> int:
        return sum(1 for s in self.seen if s["path"].strip("/").split("/")[0] == mode)

    def base_url(self, mode: str) -> str:
        return f"{self.url}/{mode}/v1"


def _completion(model: str, content: str | None) -> bytes:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    return json.dumps(
        {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": model, "choices": [choice]}
    ).encode()


@contextmanager
def fake_openai(
    reply: Reply, *, slow_seconds: float = 1.5, huge_bytes: int = 50 << 20
) -> Iterator[FakeOpenAI]:
    state = FakeOpenAI(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def _huge(self, mode: str, with_length: bool) -> None:
            head, tail = _completion("m", "\x00").split(b"\\u0000")  # content: the x-blocks
            block = b"x" * (64 << 10)
            blocks = max(huge_bytes // len(block), 1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if with_length:
                self.send_header("Content-Length", str(len(head) + blocks * len(block) + len(tail)))
            self.end_headers()
            state.sent[mode] = 0
            with suppress(BrokenPipeError, ConnectionResetError):
                for part in [head, *([block] * blocks), tail]:
                    self.wfile.write(part)
                    state.sent[mode] += len(part)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            mode = self.path.strip("/").split("/")[0]
            if mode == "slow":
                time.sleep(slow_seconds)
            if mode == "error500":
                self._send(500, b"{}")
            elif mode == "ratelimit":  # asks the client to come back in 40 s
                self.send_response(429)
                self.send_header("Retry-After", "40")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            elif mode == "trickle":  # headers a byte at a time, each well within a read timeout
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for ch in b"X-Slow: " + b"a" * 40:
                        self.wfile.write(bytes([ch]))
                        self.wfile.flush()
                        time.sleep(0.2)
            elif mode == "html":
                self._send(200, b"<html>gateway says hi</html>")
            elif mode in ("huge", "hugelen"):
                self._huge(mode, with_length=mode == "hugelen")
            elif mode == "gzip":
                data = gzip.compress(_completion(body["model"], reply(mode, body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._send(200, _completion(body["model"], reply(mode, body)))

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
