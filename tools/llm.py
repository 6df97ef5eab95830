"""The one LLM seam of tagloop: structured (pydantic-validated) completions, or a clean failure.

- `LLM` is the `typing.Protocol` callers depend on: `structured(system, user, schema)` returns an
  instance of the pydantic model `schema`, or raises `LLMUnavailable` (a `TagloopError`).
- `OpenAICompatibleLLM` implements it with the `openai` client against any OpenAI-compatible
  `/v1/chat/completions` endpoint (`base_url`, `model`, `api_key` passed in, never read from
  globals here), asking for JSON that follows the schema, with a timeout and a small retry count.
  Timeouts, HTTP errors, empty replies, invalid JSON and schema violations all become
  `LLMUnavailable`, so every caller can fall back to its deterministic path.
- `async_structured` is the same call for async callers (the agent graph).
Secrets: the api key is handed to the client only; it never appears in messages or reprs.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from tagloop.tools.errors import TagloopError

T = TypeVar("T", bound=BaseModel)


class LLMUnavailable(TagloopError):
    """The LLM timed out, failed, or answered with something that does not fit the schema."""

    status = 503
    title = "LLM unavailable"


class LLM(Protocol):
    def structured(self, system: str, user: str, schema: type[T]) -> T:
        """One completion parsed into `schema`; raises `LLMUnavailable` on any failure."""
        ...


def _request(model: str, system: str, user: str, schema: type[BaseModel]) -> dict[str, object]:
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
    }


def _content(reply: object) -> str | None:
    """The first choice's text; anything that is not a chat completion is an LLM failure."""
    try:
        choices = reply.choices  # type: ignore[attr-defined]
        return choices[0].message.content if choices else None
    except (AttributeError, IndexError, TypeError) as err:
        raise LLMUnavailable("the LLM endpoint did not return a chat completion") from err


def _parse(content: str | None, schema: type[T]) -> T:
    if not content:
        raise LLMUnavailable("the LLM returned an empty reply")
    try:
        return schema.model_validate_json(content)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "reply"
        raise LLMUnavailable(
            f"the LLM reply does not fit {schema.__name__}: {where}: {first['msg']}"
        ) from err


class OpenAICompatibleLLM:
    """`LLM` over an OpenAI-compatible HTTP API."""

    def __init__(
        self, base_url: str, model: str, api_key: str, timeout: float = 30.0, max_retries: int = 1
    ) -> None:
        self.model = model
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )
        self._async = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={str(self._client.base_url)!r}, model={self.model!r})"

    def structured(self, system: str, user: str, schema: type[T]) -> T:
        try:
            reply = self._client.chat.completions.create(**_request(self.model, system, user, schema))  # type: ignore[call-overload]
        except openai.APITimeoutError as err:
            raise LLMUnavailable(f"the LLM did not answer within {self._client.timeout} s") from err
        except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
            raise LLMUnavailable(f"the LLM call failed: {type(err).__name__}") from err
        return _parse(_content(reply), schema)

    async def async_structured(self, system: str, user: str, schema: type[T]) -> T:
        try:
            reply = await self._async.chat.completions.create(**_request(self.model, system, user, schema))  # type: ignore[call-overload]
        except openai.APITimeoutError as err:
            raise LLMUnavailable(f"the LLM did not answer within {self._async.timeout} s") from err
        except (openai.OpenAIError, ValueError) as err:  # ValueError: a body that is not JSON
            raise LLMUnavailable(f"the LLM call failed: {type(err).__name__}") from err
        return _parse(_content(reply), schema)
