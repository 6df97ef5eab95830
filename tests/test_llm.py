"""OpenAICompatibleLLM against a local fake OpenAI-compatible HTTP server (no mocks, no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from tagloop.tools.llm import LLMBreaker, LLMUnavailable, OpenAICompatibleLLM
from tests.fake_openai import FakeOpenAI, fake_openai

REPLIES: dict[str, str | None] = {
    "good": json.dumps({"tags": ["shoegaze", "dream pop"]}),
    "badjson": "{tags: [shoegaze",
    "wrongshape": json.dumps({"labels": "x"}),
    "empty": "",
    "slow": json.dumps({"tags": ["late"]}),
    "gzip": json.dumps({"tags": ["zipped"]}),
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


# --- bounded replies and classified failures -----------------------------------------------------


def test_request_caps_the_completion_tokens(server: str, fake: FakeOpenAI) -> None:
    OpenAICompatibleLLM(f"{server}/good/v1", "m", "k", max_retries=0, max_tokens=321).structured(
        "s", "u", Tags
    )
    assert fake.seen[-1]["body"]["max_tokens"] == 321
    assert fake.seen[-1]["body"]["messages"][1]["content"] == "u"


@pytest.mark.parametrize("mode", ["huge", "hugelen"])
def test_a_huge_reply_is_cut_off_at_the_byte_limit_without_being_read(
    server: str, fake: FakeOpenAI, mode: str
) -> None:
    """50 MB answered (streamed without a length, or announced): the client stops at 256 KiB, fails
    as `too_large` without a retry, and never holds the body in memory."""
    client = OpenAICompatibleLLM(
        f"{server}/{mode}/v1", "m", "k", timeout=5.0, max_retries=1, max_response_bytes=256 << 10
    )
    before = fake.requests(mode)
    tracemalloc.start()
    try:
        with pytest.raises(LLMUnavailable, match="larger than") as caught:
            client.structured("s", "u", Tags)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.kind == "too_large" and caught.value.reason == "too large"
    assert peak < 8 << 20, f"peak {peak} bytes while refusing a 50 MB reply"
    assert fake.requests(mode) - before == 1  # not retried
    time.sleep(0.2)
    assert fake.sent.get(mode, 0) < 40 << 20  # the server could not write it all: the client hung up


def test_a_reply_within_the_limit_is_read_in_full(server: str) -> None:
    out = OpenAICompatibleLLM(f"{server}/good/v1", "m", "k", max_retries=0, max_response_bytes=4096)
    assert out.structured("s", "u", Tags).tags == ["shoegaze", "dream pop"]


def test_a_compressed_reply_is_refused_as_unbounded(server: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        llm(server, "gzip").structured("s", "u", Tags)
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize(
    ("mode", "kind", "reason"),
    [
        ("badjson", "invalid_json", "invalid json"),
        ("wrongshape", "schema", "schema violation (tags)"),
        ("empty", "empty", "empty"),
        ("error500", "http_status", "http 500"),
        ("html", "not_completion", "not completion"),
    ],
)
def test_failures_name_their_class(server: str, mode: str, kind: str, reason: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        llm(server, mode).structured("system", "tag this", Tags)
    assert (caught.value.kind, caught.value.reason) == (kind, reason)


def test_timeout_and_connection_failures_name_their_class(server: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        llm(server, "slow", timeout=0.3).structured("s", "u", Tags)
    assert caught.value.kind == "timeout"
    with pytest.raises(LLMUnavailable) as caught:
        OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m", "k", timeout=0.5, max_retries=0).structured(
            "s", "u", Tags
        )
    assert caught.value.kind == "connection"


def test_async_calls_are_bounded_too(server: str) -> None:
    client = OpenAICompatibleLLM(f"{server}/huge/v1", "m", "k", max_retries=0, max_response_bytes=64 << 10)
    with pytest.raises(LLMUnavailable) as caught:
        asyncio.run(client.async_structured("s", "u", Tags))
    assert caught.value.kind == "too_large"
    good = OpenAICompatibleLLM(f"{server}/good/v1", "m", "k", max_retries=0)
    assert asyncio.run(good.async_structured("s", "u", Tags)).tags == ["shoegaze", "dream pop"]


def test_breaker_opens_after_failures_in_a_row_and_on_the_time_budget() -> None:
    breaker = LLMBreaker(max_failures=2, budget_seconds=10.0)
    breaker.record(1.0, ok=False)
    breaker.record(1.0, ok=True)  # a success resets the streak
    breaker.record(1.0, ok=False)
    assert breaker.blocked() is None
    breaker.record(1.0, ok=False)
    assert breaker.blocked() == "circuit open"
    spent = LLMBreaker(budget_seconds=2.0)
    spent.record(2.5, ok=True)
    assert spent.blocked() == "time budget spent" and spent.skipped == 1


def test_a_call_ends_by_its_deadline_whatever_the_server_does(server: str, fake: FakeOpenAI) -> None:
    """timeout × (1 + retries) bounds a call: a 429 asking for 40 s is not waited for, and headers
    trickling in a byte at a time (each read within the timeout) do not hold the caller."""
    before = fake.requests("ratelimit")
    start = time.monotonic()
    with pytest.raises(LLMUnavailable) as err:
        OpenAICompatibleLLM(f"{server}/ratelimit/v1", "m", "k", timeout=1.0, max_retries=1).structured(
            "s", "u", Tags
        )
    assert time.monotonic() - start < 2.5 and err.value.kind == "http_status"
    assert fake.requests("ratelimit") - before == 1  # a Retry-After past the deadline: no retry
    start = time.monotonic()
    with pytest.raises(LLMUnavailable) as err:
        OpenAICompatibleLLM(f"{server}/trickle/v1", "m", "k", timeout=1.0, max_retries=0).structured(
            "s", "u", Tags
        )
    assert time.monotonic() - start < 2.0 and err.value.kind == "timeout"
    before = fake.requests("error500")
    with pytest.raises(LLMUnavailable):
        OpenAICompatibleLLM(f"{server}/error500/v1", "m", "k", timeout=2.0, max_retries=1).structured(
            "s", "u", Tags
        )
    assert fake.requests("error500") - before == 2  # a 5xx is still retried within the deadline


def test_credentials_in_the_base_url_never_reach_logs_or_reprs(
    server: str, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    host = server.removeprefix("http://")
    client = OpenAICompatibleLLM(f"http://proxyuser:proxy-pass@{host}/good/v1", "m", "k", max_retries=0)
    with caplog.at_level(logging.DEBUG):
        assert client.structured("s", "u", Tags).tags
    assert "proxy-pass" not in caplog.text and "proxy-pass" not in repr(client)
    assert fake.seen[-1]["auth"] == "Basic " + base64.b64encode(b"proxyuser:proxy-pass").decode()


def test_service_logs_do_not_show_the_llm_url_with_its_token(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """openai sends through httpx2, which logs each request's full URL at INFO: an endpoint whose
    path carries a token (`/deployments/TOKEN/v1`) put it in serve's and the worker's logs."""
    from tagloop.agent.cli import _log_to_stderr

    caplog.set_level(logging.DEBUG)
    _log_to_stderr()
    client = OpenAICompatibleLLM(f"{server}/good/deployments/SECRETTOKEN42/v1", "m", "sk-test", max_retries=0)
    assert client.structured("system", "tag this", Tags) == Tags(tags=["shoegaze", "dream pop"])
    assert "SECRETTOKEN42" not in caplog.text + "".join(r.getMessage() for r in caplog.records)
