"""OpenAICompatibleLLM against a local fake OpenAI-compatible HTTP server (no mocks, no network)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from tagloop.tools.llm import LLMUnavailable, OpenAICompatibleLLM
from tests.fake_openai import FakeOpenAI, fake_openai

REPLIES: dict[str, str | None] = {
    "good": json.dumps({"tags": ["shoegaze", "dream pop"]}),
    "badjson": "{tags: [shoegaze",
    "wrongshape": json.dumps({"labels": "x"}),
    "empty": "",
    "slow": json.dumps({"tags": ["late"]}),
}


class Tags(BaseModel):
    tags: list[str]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai(lambda mode, body: REPLIES.get(mode)) as server:
        yield server


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI) -> str:
    return fake.url


def llm(server: str, mode: str, timeout: float = 5.0) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(f"{server}/{mode}/v1", "fake-model", "sk-test", timeout=timeout, max_retries=0)


def test_valid_reply_is_parsed_into_the_schema(server: str, fake: FakeOpenAI) -> None:
    out = llm(server, "good").structured("system", "tag this", Tags)
    assert out == Tags(tags=["shoegaze", "dream pop"])
    request = fake.seen[-1]
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
