"""The one LLM seam of tagloop: structured (pydantic-validated) completions, or a clean failure.

- `LLM` is the `typing.Protocol` callers depend on: `structured(system, user, schema)` returns an
  instance of the pydantic model `schema`, or raises `LLMUnavailable` (a `TagloopError`).
- `OpenAICompatibleLLM` implements it with the `openai` client against any OpenAI-compatible
  `/v1/chat/completions` endpoint (`base_url`, `model`, `api_key` passed in, never read from
  globals here), asking for JSON that follows the schema, with a timeout and a small retry count.
  Timeouts, HTTP errors, empty replies, invalid JSON and schema violations all become
  `LLMUnavailable`, so every caller can fall back to its deterministic path; its `kind` names the
  class of failure (`timeout`, `http_status`, `connection`, `too_large`, `not_completion`, `empty`,
  `invalid_json`, `schema`) for logs and decision records.
- Replies are bounded: `max_tokens` on the request, and the client reads at most
  `max_response_bytes` of a response body (a response hook reads the body itself, counting, before
  the client parses it; an uncompressed body is asked for, since a compressed one cannot be bounded
  before it is inflated), and at most `timeout` seconds of body after the headers: past either the
  call fails as `too_large` / `timeout` without a retry.
- One deadline per call, `timeout` × (1 + `max_retries`): the retries are tagloop's (the client's
  own are off), with a short backoff and a server's `Retry-After` honoured only when it fits before
  the deadline; each attempt runs on a worker thread the caller stops waiting for at the deadline,
  so neither a long `Retry-After` nor headers trickling in a byte at a time hold a decision.
- Credentials in `base_url` (`https://user:pass@proxy/v1`) go to the server as Basic auth, as
  before, but are taken out of the URL, so the HTTP client's request log lines never show them.
- `async_structured` is the same call for async callers (the agent graph).
- `LLMBreaker` is a run's guard around its LLM calls (kept on `RunContext`, never global): after
  `max_failures` failed calls in a row, or once the calls together took `budget_seconds`, it tells
  the caller to stop asking for the rest of the run.
Secrets: the api key is handed to the client only; it never appears in messages or reprs.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import openai
from pydantic import BaseModel, ValidationError

from tagloop.tools.errors import TagloopError

T = TypeVar("T", bound=BaseModel)

MAX_TOKENS = 4096  # a tagging batch of 20 items needs ~2,000; message copy ~400
MAX_RESPONSE_BYTES = 1 << 20  # a 4,096-token completion is ~20 KB of JSON


class LLMUnavailable(TagloopError):
    """The LLM timed out, failed, or answered with something that does not fit the schema.

    `kind` is the class of failure (no content of the request or reply): `timeout`, `http_status`
    (with `http_status`), `connection`, `too_large`, `not_completion`, `empty`, `invalid_json`,
    `schema` (with `field`, the first field that failed), or `unavailable`."""

    status = 503
    title = "LLM unavailable"

    def __init__(
        self,
        message: str,
        kind: str = "unavailable",
        *,
        http_status: int | None = None,
        field: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.field = field
        self.retryable = retryable  # worth another attempt (timeouts, connections, 408/409/429/5xx)
        self.retry_after = retry_after  # the server's Retry-After, in seconds

    @property
    def reason(self) -> str:
        """A short, data-free reason: 'timeout', 'http 500', 'schema violation (title)', …"""
        if self.kind == "http_status":
            return f"http {self.http_status}"
        if self.kind == "schema":
            return f"schema violation ({self.field})" if self.field else "schema violation"
        return self.kind.replace("_", " ")


class LLM(Protocol):
    def structured(self, system: str, user: str, schema: type[T]) -> T:
        """One completion parsed into `schema`; raises `LLMUnavailable` on any failure."""
        ...


@dataclass
class LLMBreaker:
    """A run's guard around its LLM calls: `blocked()` says why the run should not call the LLM
    any more ('circuit open' after `max_failures` failed calls in a row, 'time budget spent' once
    the calls took `budget_seconds` together), None while it may; `record` is told how each call
    went. A call already under way finishes (at most its deadline, timeout × (1 + retries), past
    the budget)."""

    max_failures: int = 2
    budget_seconds: float = 60.0
    failures_in_a_row: int = 0
    spent_seconds: float = 0.0
    calls: int = 0
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def blocked(self) -> str | None:
        with self._lock:
            reason = None
            if self.failures_in_a_row >= self.max_failures:
                reason = "circuit open"
            elif self.spent_seconds >= self.budget_seconds:
                reason = "time budget spent"
            self.skipped += reason is not None
            return reason

    def record(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self.calls += 1
            self.spent_seconds += seconds
            self.failures_in_a_row = 0 if ok else self.failures_in_a_row + 1


def _request(
    model: str, system: str, user: str, schema: type[BaseModel], max_tokens: int
) -> dict[str, object]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        },
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def _content(reply: object) -> str | None:
    """The first choice's text; anything that is not a chat completion is an LLM failure."""
    try:
        choices = reply.choices  # type: ignore[attr-defined]
        return choices[0].message.content if choices else None
    except (AttributeError, IndexError, TypeError) as err:
        raise LLMUnavailable("the LLM endpoint did not return a chat completion", "not_completion") from err


def _parse(content: str | None, schema: type[T]) -> T:
    if not content:
        raise LLMUnavailable("the LLM returned an empty reply", "empty")
    try:
        return schema.model_validate_json(content)
    except ValidationError as err:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            raise LLMUnavailable(
                f"the LLM reply does not fit {schema.__name__}: not JSON", "invalid_json"
            ) from err
        loc = first.get("loc", ())
        # a field of the schema, never a name the reply made up (it may carry anything)
        where = str(loc[0]) if loc and loc[0] in schema.model_fields else "extra field" if loc else "reply"
        raise LLMUnavailable(
            f"the LLM reply does not fit {schema.__name__}: {where}: {first['msg']}", "schema", field=where
        ) from err


class ResponseTooLarge(openai.OpenAIError):
    """A response body past the client's byte limit (an `OpenAIError`: not retried)."""


class _BodyTimeout(openai.OpenAIError):
    """A response body still arriving after the timeout (an `OpenAIError`: not retried)."""


def _http_module(response: Any) -> Any:
    """httpx or httpx2, whichever the openai client uses (`ByteStream` to put a read body back)."""
    return sys.modules[type(response).__module__.partition(".")[0]]


def _check_headers(response: Any, max_bytes: int) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ResponseTooLarge(f"a {encoding}-compressed LLM response cannot be bounded before inflating")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ResponseTooLarge(f"the LLM response is larger than {max_bytes} bytes")


def _limit_hooks(
    max_bytes: int, seconds: float
) -> tuple[Callable[[Any], None], Callable[[Any], Awaitable[None]]]:
    """Response hooks (sync, async) that read the body with a byte and time limit and put it back."""

    def keep(response: Any, chunks: list[bytes], total: int, chunk: bytes, deadline: float) -> int:
        total += len(chunk)
        if total > max_bytes:
            raise ResponseTooLarge(f"the LLM response is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise _BodyTimeout(f"the LLM response body took more than {seconds} s")
        chunks.append(chunk)
        return total

    def hook(response: Any) -> None:
        _check_headers(response, max_bytes)
        chunks: list[bytes] = []
        total, deadline = 0, time.monotonic() + seconds
        for chunk in response.stream:
            total = keep(response, chunks, total, chunk, deadline)
        response.stream.close()
        response.stream = _http_module(response).ByteStream(b"".join(chunks))

    async def async_hook(response: Any) -> None:
        _check_headers(response, max_bytes)
        chunks: list[bytes] = []
        total, deadline = 0, time.monotonic() + seconds
        async for chunk in response.stream:
            total = keep(response, chunks, total, chunk, deadline)
        await response.stream.aclose()
        response.stream = _http_module(response).ByteStream(b"".join(chunks))

    return hook, async_hook


def _failure(err: Exception, timeout: object) -> LLMUnavailable:
    """The `LLMUnavailable` for an error of the openai client (looking through the
    `APIConnectionError` older clients wrap a hook's exception in)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ResponseTooLarge):
            return LLMUnavailable(str(cause), "too_large")
        if isinstance(cause, _BodyTimeout):
            return LLMUnavailable(f"the LLM did not answer within {timeout} s", "timeout")
        if isinstance(cause, openai.APITimeoutError):
            return LLMUnavailable(f"the LLM did not answer within {timeout} s", "timeout", retryable=True)
        cause = cause.__cause__
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        return LLMUnavailable(
            f"the LLM call failed: HTTP {code}",
            "http_status",
            http_status=code,
            retryable=code in (408, 409, 429) or code >= 500,
            retry_after=_retry_after(err.response.headers.get("retry-after")),
        )
    if isinstance(err, openai.APIConnectionError):
        return LLMUnavailable("the LLM call failed: no connection", "connection", retryable=True)
    if isinstance(err, ValueError):  # a body that is not JSON
        return LLMUnavailable(f"the LLM call failed: {type(err).__name__}", "not_completion")
    return LLMUnavailable(f"the LLM call failed: {type(err).__name__}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date counts as 'later than we wait')."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return math.inf


def _backoff(attempt: int, failure: LLMUnavailable) -> float:
    """Seconds before attempt `attempt + 1`: the server's Retry-After, else 0.5 s doubling to 8 s."""
    return failure.retry_after if failure.retry_after is not None else min(0.5 * 2**attempt, 8.0)


def _without_userinfo(base_url: str) -> tuple[str, tuple[str, str] | None]:
    """`base_url` without `user:password@`, and the (user, password) it held, percent-decoded."""
    parts = urlsplit(base_url)
    if parts.username is None and parts.password is None:
        return base_url, None
    host = parts.netloc.rpartition("@")[2]
    credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=host)), credentials


class OpenAICompatibleLLM:
    """`LLM` over an OpenAI-compatible HTTP API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        timeout: float = 30.0,
        max_retries: int = 1,
        *,
        max_tokens: int = MAX_TOKENS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if not timeout > 0 or max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout, self.max_retries = timeout, max_retries
        self.deadline = timeout * (1 + max_retries)
        url, credentials = _without_userinfo(base_url)
        hook, async_hook = _limit_hooks(max_response_bytes, timeout)
        common: dict[str, Any] = {
            "base_url": url,
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": 0,  # ours, within the call's deadline (`structured`)
            "default_headers": {"Accept-Encoding": "identity"},
        }
        auth: dict[str, Any] = {"auth": credentials} if credentials else {}
        self._client = openai.OpenAI(
            **common, http_client=openai.DefaultHttpxClient(event_hooks={"response": [hook]}, **auth)
        )
        self._async = openai.AsyncOpenAI(
            **common,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [async_hook]}, **auth),
        )
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llm-call")

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={str(self._client.base_url)!r}, model={self.model!r})"

    def structured(self, system: str, user: str, schema: type[T]) -> T:
        request = _request(self.model, system, user, schema, self.max_tokens)
        deadline = time.monotonic() + self.deadline
        for attempt in range(self.max_retries + 1):
            create: Any = self._client.chat.completions.create
            call = self._threads.submit(create, **request)
            try:
                reply = call.result(timeout=max(deadline - time.monotonic(), 0.0))
            except FutureTimeout:  # the attempt goes on on its thread; nobody waits for it
                raise LLMUnavailable(
                    f"the LLM did not answer within {self.deadline:g} s", "timeout"
                ) from None
            except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
                time.sleep(self._wait_to_retry(attempt, err, deadline))
                continue
            return _parse(_content(reply), schema)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait_to_retry(self, attempt: int, err: Exception, deadline: float) -> float:
        """Seconds to wait before the next attempt after `err`; raises its `LLMUnavailable` when
        there is none (the last attempt, a failure not worth retrying, or a wait past the deadline)."""
        failure = _failure(err, self.timeout)
        wait = _backoff(attempt, failure)
        if attempt == self.max_retries or not failure.retryable or time.monotonic() + wait >= deadline:
            raise failure from err
        return wait

    async def async_structured(self, system: str, user: str, schema: type[T]) -> T:
        request = _request(self.model, system, user, schema, self.max_tokens)
        deadline = time.monotonic() + self.deadline
        for attempt in range(self.max_retries + 1):
            create = self._async.chat.completions.create(**request)  # type: ignore[call-overload]
            try:
                reply = await asyncio.wait_for(create, max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise LLMUnavailable(
                    f"the LLM did not answer within {self.deadline:g} s", "timeout"
                ) from None
            except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
                await asyncio.sleep(self._wait_to_retry(attempt, err, deadline))
                continue
            return _parse(_content(reply), schema)
        raise AssertionError("unreachable: the last attempt returns or raises")
