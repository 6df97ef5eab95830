"""A local fake OpenAI-compatible chat-completions server for tests (no mocks, no network).

The first path segment picks the behaviour, so one server serves every case:
`{url}/{mode}/v1` → `slow` sleeps `slow_seconds` first, `error500` answers 500, `html` answers a
non-JSON body; anything else answers a completion whose content is `reply(mode, request_body)`.
Every request body is kept in `seen` (with its path and Authorization header)."""

from __future__ import annotations

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

    def base_url(self, mode: str) -> str:
        return f"{self.url}/{mode}/v1"


def _completion(model: str, content: str | None) -> bytes:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    return json.dumps(
        {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": model, "choices": [choice]}
    ).encode()


@contextmanager
def fake_openai(reply: Reply, *, slow_seconds: float = 1.5) -> Iterator[FakeOpenAI]:
    state = FakeOpenAI(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with suppress(BrokenPipeError):
                self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            mode = self.path.strip("/").split("/")[0]
            if mode == "slow":
                time.sleep(slow_seconds)
            if mode == "error500":
                self._send(500, b"{}")
            elif mode == "html":
                self._send(200, b"<html>gateway says hi</html>")
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
