"""OpenAICompatibleLLM against a local fake OpenAI-compatible HTTP server (no mocks, no network)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from pydantic import BaseModel
from tagloop.tools.llm import LLMUnavailable, OpenAICompatibleLLM

REPLIES: dict[str, str | None] = {
    "good": json.dumps({"tags": ["shoegaze", "dream pop"]}),
    "badjson": "{tags: [shoegaze",
    "wrongshape": json.dumps({"labels": "x"}),
    "empty": "",
    "slow": json.dumps({"tags": ["late"]}),
}


class Tags(BaseModel):
    tags: list[str]


class FakeOpenAI(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, object]]] = []

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        mode = self.path.strip("/").split("/")[0]
        if mode == "slow":
            time.sleep(1.5)
        if mode == "html":
            data = b"<html>gateway says hi</html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if mode == "error500":
            self.send_response(500)
            self.end_headers()
            return
        reply = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": REPLIES.get(mode)},
                }
            ],
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with suppress(BrokenPipeError):
            self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def llm(server: str, mode: str, timeout: float = 5.0) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(f"{server}/{mode}/v1", "fake-model", "sk-test", timeout=timeout, max_retries=0)


def test_valid_reply_is_parsed_into_the_schema(server: str) -> None:
    out = llm(server, "good").structured("system", "tag this", Tags)
    assert out == Tags(tags=["shoegaze", "dream pop"])
    request = FakeOpenAI.seen[-1]
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert isinstance(body, dict) and body["model"] == "fake-model"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["tags"]["type"] == "array"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("badjson", "does not fit Tags"),
        ("wrongshape", "does not fit Tags: tags"),
        ("empty", "empty reply"),
        ("error500", "call failed"),
        ("html", "LLM"),
    ],
)
def test_bad_replies_raise_llm_unavailable(server: str, mode: str, message: str) -> None:
    with pytest.raises(LLMUnavailable, match=message):
        llm(server, mode).structured("system", "tag this", Tags)


def test_timeout_raises_llm_unavailable_quickly(server: str) -> None:
    start = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="did not answer"):
        llm(server, "slow", timeout=0.3).structured("system", "tag this", Tags)
    assert time.perf_counter() - start < 1.4


def test_unreachable_server_raises_llm_unavailable() -> None:
    with pytest.raises(LLMUnavailable):
        OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m", "k", timeout=0.5, max_retries=0).structured(
            "s", "u", Tags
        )


def test_repr_does_not_leak_the_api_key(server: str) -> None:
    assert "sk-test" not in repr(llm(server, "good"))
