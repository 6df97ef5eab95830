"""RFC 9457 problem+json: the error classes the API adds to the `TagloopError` tree and the one
mapping from any error to a problem response (status, title, detail, and the fields at fault)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tagloop.tools.errors import InvalidInput, TagloopError

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("tagloop.http")


class FieldErrors(InvalidInput):
    """Invalid input naming each field at fault, e.g. `[3].ts` for the fourth event of a batch."""

    def __init__(self, errors: Sequence[tuple[str, str]], *, read: bool = False) -> None:
        """`read`: the request only reads (no "nothing was stored" in the detail)."""
        self.errors = list(errors)
        shown = "; ".join(f"{f}: {r}" for f, r in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        effect = "" if read else "; nothing was stored"
        super().__init__(f"{len(self.errors)} invalid field(s){effect}: {shown}{more}")


class Unauthorized(TagloopError):
    status = 401
    title = "unauthorized"


class PayloadTooLarge(TagloopError):
    status = 413
    title = "payload too large"


class RateLimited(TagloopError):
    status = 429
    title = "too many requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def problem(
    status: int,
    title: str,
    detail: str,
    errors: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = [{"field": f, "reason": r} for f, r in errors]
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field_of(loc: Sequence[Any]) -> str:
    parts = list(loc[1:]) if loc and loc[0] in {"body", "query", "path", "header"} else list(loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def install(app: FastAPI) -> None:
    """Map every error once: TagloopError subclasses, request validation, HTTP errors, the rest."""

    @app.exception_handler(TagloopError)
    async def _tagloop(request: Request, exc: TagloopError) -> JSONResponse:
        errors = exc.errors if isinstance(exc, FieldErrors) else []
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="tagloop"'}
        return problem(exc.status, exc.title, str(exc), errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [(_field_of(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]
        return problem(422, "invalid input", "; ".join(f"{f}: {r}" for f, r in errors[:5]), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(psycopg.DataError)
    async def _data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # values the database cannot hold (NUL in text, out-of-range numbers or dates)
        log.warning("event=data_error error=%s", type(exc).__name__)
        return problem(422, "invalid input", "a value cannot be stored: " + str(exc).splitlines()[0][:200])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("event=unhandled_error error=%s", type(exc).__name__, exc_info=exc)
        return problem(500, "internal error", "the server failed to handle the request")
