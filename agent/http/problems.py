"""RFC 9457 problem+json: the error classes the API adds to the `TagloopError` tree and the one
mapping from any error to a problem response (status, title, detail, and the fields at fault).
A database that cannot be reached, is shutting down, has no connection to spare or gave up a
statement that may succeed later is a 503 with Retry-After (`unavailable`); any other database error
(a value past a limit, an internal error) and an unexpected error are a 500 logged once with the
reason, by a middleware that answers it itself (the keep-alive connection stays usable): a client
would retry a 503 for ever."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolClosed, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagloop.tools.errors import DatabaseError, InvalidInput, TagloopError
from tagloop.tools.store.db import first_line

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_S = 5  # what a 503 "database unavailable" suggests
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
        if isinstance(exc, DatabaseError):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
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

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(PoolClosed)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not unavailable(exc):  # e.g. ProgramLimitExceeded: retrying cannot help
            log.error(
                "event=database_error error=%s sqlstate=%s detail=%s",
                type(exc).__name__,
                getattr(exc, "sqlstate", None),
                first_line(exc)[:200],
            )
            return problem(500, "internal error", "the server failed to handle the request")
        log.warning(
            "event=database_unavailable error=%s detail=%s", type(exc).__name__, first_line(exc)[:200]
        )
        return problem(
            503,
            "database unavailable",
            "the database cannot be reached or is overloaded; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    app.add_middleware(CatchAll)


# SQLSTATE classes of a database that is unavailable for now: 08 connection exception, 40 transaction
# rollback (deadlock, serialization: retried out), 53 insufficient resources (too many connections,
# out of memory, disk full), 57 operator intervention (admin or crash shutdown, cannot connect now, a
# cancelled statement); and 55P03, a lock not available in time
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57"})
_UNAVAILABLE_STATES = frozenset({"55P03"})


def unavailable(exc: Exception) -> bool:
    """Whether `exc` means "the database is unavailable, try again shortly": the server is down or
    unreachable, the connection broke (no SQLSTATE: the server never answered), no pooled
    connection came in time, or one of the SQLSTATEs above. Other errors (a program limit exceeded,
    an internal error) would fail again on retry."""
    if isinstance(exc, psycopg.InterfaceError | PoolTimeout | PoolClosed):
        return True
    state = getattr(exc, "sqlstate", None)
    return state is None or state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES


class CatchAll:
    """A 500 problem+json for an exception nothing else mapped, logged once with its traceback.
    (An `exception_handler(Exception)` runs in Starlette's ServerErrorMiddleware, which re-raises:
    the server then logs a second traceback and drops the keep-alive connection.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.error("event=unhandled_error error=%s", type(exc).__name__, exc_info=exc)
            if started:  # too late for a problem response: the server closes the connection
                return
            response = problem(500, "internal error", "the server failed to handle the request")
            await response(scope, receive, send)
