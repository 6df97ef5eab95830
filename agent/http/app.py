"""The FastAPI app factory: `create_app(settings)` wires settings, auth, rate limit, metrics and
problem+json; its lifespan migrates the schema, opens the psycopg pool and waits for it, so a bad
database URL fails at start rather than at the first request."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tagloop.agent.database import database_url
from tagloop.agent.http import problems, schemas, unsubscribe
from tagloop.agent.http.auth import Auth, RateLimiter
from tagloop.agent.http.metrics import Metrics, TimingMiddleware
from tagloop.agent.http.routes import Authorized, router
from tagloop.agent.http.state import AppState, ingest_options
from tagloop.agent.runner import check_run_settings
from tagloop.agent.settings import Settings, load_settings, unsubscribe_links
from tagloop.tools.logsafe import use_key_of
from tagloop.tools.profile_folder import FoldOptions
from tagloop.tools.store import db

log = logging.getLogger("tagloop.http")


def create_app(settings: Settings | None = None, *, pool_size: int = 8, pool_timeout: float = 5.0) -> FastAPI:
    """A tagloop API app. Settings are read now when not given (e.g. `uvicorn --factory`).
    `pool_timeout`: how long a request waits for a database connection before its 503 (a stopped
    database answers in that time, not the pool's default 30 s)."""
    settings = settings or load_settings()
    metrics = Metrics()
    links = unsubscribe_links(settings)  # a misconfiguration fails here, not at the first click
    check_run_settings(settings)  # channels, policy file, candidate sources: not at the first run

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _nodelay_listeners()
        use_key_of(settings.log_key.get_secret_value() if settings.log_key else None, settings.home)
        url = database_url(settings)
        db.connect(url).close()  # applies pending migrations
        pool = db.make_pool(url, min_size=2, max_size=pool_size, timeout=pool_timeout)
        limiter = RateLimiter(settings.rate_limit_per_minute)
        options = ingest_options(settings)
        app.state.tagloop = AppState(
            settings,
            pool,
            Auth(settings),
            limiter,
            metrics,
            options,
            FoldOptions.from_settings(settings),
            unsubscribe=links,
        )
        if not settings.api_keys and not settings.webhook_secrets:
            log.warning("event=no_credentials_configured detail=every request but /healthz will get 401")
        log.info("event=started pool_size=%d", pool_size)
        # What is alive now lives as long as the app: out of the cyclic collector's way, a full
        # collection (every few dozen requests of 100 events) takes microseconds, not ~50-100 ms
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            pool.close()

    public = settings.public_docs  # else the schema needs a key and there is no docs page
    app = FastAPI(
        title="tagloop",
        version="0.1.0",
        lifespan=lifespan,
        description="Events in, decisions out: tagloop's HTTP API (SPEC §4).",
        openapi_url="/openapi.json" if public else None,
        docs_url="/docs" if public else None,
        redoc_url=None,
    )
    problems.install(app)
    app.include_router(router)
    app.include_router(unsubscribe.router)
    if not public:

        @app.get("/openapi.json", include_in_schema=False)
        def openapi_document(state: Authorized) -> dict[str, Any]:
            return app.openapi()

    app.add_middleware(TimingMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _nodelay_listeners() -> int:
    """Turn Nagle off on this process's bound, unconnected TCP sockets: the listener uvicorn hands
    its workers (Linux; accepted connections inherit the option). uvicorn `--workers N` binds that
    socket with `proto` 0, and asyncio only sets TCP_NODELAY on connections whose `proto` is
    IPPROTO_TCP (Kludex/uvicorn#3149): a response's body then waits for the client's delayed ACK of
    its headers, ~40 ms on every keep-alive request. Runs in each worker's lifespan, when the
    inherited socket is open (listening or not yet). Returns how many sockets it changed."""
    fixed = 0
    with contextlib.suppress(OSError):
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        for fd in fds:
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=fd)  # family and type read from the descriptor
                try:
                    if (
                        sock.family in (socket.AF_INET, socket.AF_INET6)
                        and sock.type == socket.SOCK_STREAM
                        and sock.getsockname()[1] != 0
                        and not _connected(sock)
                    ):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        fixed += 1
                finally:
                    sock.detach()  # the descriptor stays uvicorn's
    return fixed


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


WEBHOOK_HEADERS = {
    "webhookId": "webhook-id",
    "webhookTimestamp": "webhook-timestamp",
    "webhookSignature": "webhook-signature",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the models that only raw-body routes and problem responses name, and
    the Standard Webhooks signature as the other way to authenticate `POST /v1/events`."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (schemas.Problem, schemas.EventIn, schemas.ItemIn, schemas.UserIn, schemas.RunRequest):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        _webhook_security(spec)
        app.openapi_schema = spec
    return app.openapi_schema


def _webhook_security(spec: dict[str, Any]) -> None:
    """`POST /v1/events` takes a bearer key OR all three Standard Webhooks headers (SPEC §4): the
    headers as apiKey schemes, required together (one security requirement naming all three)."""
    schemes = spec["components"].setdefault("securitySchemes", {})
    for name, header in WEBHOOK_HEADERS.items():
        schemes[name] = {
            "type": "apiKey",
            "in": "header",
            "name": header,
            "description": "Standard Webhooks: v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'> "
            "with a secret from TAGLOOP_WEBHOOK_SECRETS; the timestamp within 5 minutes."
            if name == "webhookSignature"
            else f"Standard Webhooks `{header}` header (with the other two).",
        }
    post = spec["paths"]["/v1/events"]["post"]
    post["security"] = [*post.get("security", []), {name: [] for name in WEBHOOK_HEADERS}]
