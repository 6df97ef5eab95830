"""The routes of SPEC §4. Each one authenticates, rate-limits, calls one service and returns its
typed result; errors are raised as `TagloopError`s and mapped to problem+json in one place."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolClosed, PoolTimeout
from starlette.convertors import Convertor, register_url_convertor

from tagloop.agent.http import bodies, ingest, schemas, services
from tagloop.agent.http.auth import read_body
from tagloop.agent.http.problems import MEDIA_TYPE, FieldErrors
from tagloop.agent.http.state import AppState
from tagloop.agent.runner import configured_channels
from tagloop.tools.ingest.fields import FieldError, ts_field
from tagloop.tools.logsafe import hashed
from tagloop.tools.recommender import MAX_K

log = logging.getLogger("tagloop.http")


class IdConvertor(Convertor[str]):
    """A user or item id in a path: any characters (SPEC §3 ids are any string up to 256), slashes
    and line breaks included — Starlette's `path` convertor stops at a line break (its `.*`)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def utf8_path(request: Request) -> None:
    """422 for a path whose percent-escapes are not UTF-8 (`/v1/users/%FF`): the server decodes
    them to U+FFFD, so `%FF` and `%FE` would name the same user."""
    raw: bytes = request.scope.get("raw_path") or b""
    if b"%" not in raw:
        return
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        names = [n for n in request.path_params if n.endswith("_id")] or ["path"]
        raise FieldErrors([(names[0], "path id is not valid UTF-8")], read=True) from None


register_url_convertor("id", IdConvertor())
router = APIRouter(dependencies=[Depends(utf8_path)])
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from TAGLOOP_API_KEYS.")
UserId = Annotated[str, Path(min_length=1, max_length=256)]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    content = {MEDIA_TYPE: {"schema": _ref("Problem")}}
    return {c: {"content": content, "description": "problem+json"} for c in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.tagloop
    return state


def authorized(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None
) -> AppState:
    state = app_state(request)
    state.limiter.check(state.auth.bearer(request.headers))
    return state


Authorized = Annotated[AppState, Depends(authorized)]
METRICS_DB_TIMEOUT = 2.0  # seconds a scrape waits for a database connection (then renders without)
EVENT_BATCH = {"type": "array", "items": _ref("EventIn"), "maxItems": 1000}


def _batch_of(name: str) -> dict[str, Any]:
    return _body({"type": "array", "items": _ref(name), "maxItems": services.MAX_RECORDS})


EVENTS_BODY = _body({"oneOf": [_ref("EventIn"), EVENT_BATCH]})


@router.post(
    "/v1/events",
    status_code=202,
    response_model=schemas.Accepted,
    tags=["events"],
    responses=_problems(401, 413, 422, 429),
    openapi_extra=EVENTS_BODY,
)
async def post_events(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None
) -> schemas.Accepted:
    """Store one event or an array of up to 1,000; 202 once committed. Bearer key or Standard
    Webhooks signature."""
    state = app_state(request)
    if "authorization" in request.headers:
        state.limiter.check(state.auth.bearer(request.headers))
        body = await read_body(request, state.settings.max_body_bytes)
        webhook_id = None
    else:
        state.auth.webhook_headers(request.headers)  # no credentials: 401 before reading any body
        body = await read_body(request, state.settings.max_body_bytes)
        state.limiter.check(state.auth.webhook(body, request.headers))
        webhook_id = request.headers.get("webhook-id")
    now = datetime.now(UTC)
    payload: Any = None
    try:
        payload = bodies.decode(body)
        events = ingest.parse_payload(payload, now=now, options=state.ingest, webhook_id=webhook_id)
        result = await run_in_threadpool(
            ingest.store_events,
            state.pool,
            events,
            single=isinstance(payload, dict),
            now=now,
            options=state.ingest,
        )
    except FieldErrors:  # nothing of the request is stored: every event of it is rejected
        state.metrics.events.labels("rejected").inc(len(payload) if isinstance(payload, list) else 1)
        raise
    state.metrics.events.labels("accepted").inc(result.accepted)
    state.metrics.events.labels("duplicate").inc(result.duplicates)
    log.info(
        "event=ingest accepted=%d duplicates=%d users=%d", result.accepted, result.duplicates, result.users
    )
    return schemas.Accepted(accepted=result.accepted, duplicates=result.duplicates)


async def _json(request: Request, state: AppState) -> Any:
    return bodies.decode(await read_body(request, state.settings.max_body_bytes))


@router.put(
    "/v1/items/{item_id:id}",
    response_model=schemas.Stored,
    tags=["catalogue"],
    responses=_problems(401, 413, 422, 429),
    openapi_extra=_body(_ref("ItemIn")),
)
async def put_item(item_id: UserId, request: Request, state: Authorized) -> schemas.Stored:
    payload = await _json(request, state)
    return schemas.Stored(stored=await state.in_tx(services.put_items, payload, path_id=item_id))


@router.post(
    "/v1/items",
    response_model=schemas.Stored,
    tags=["catalogue"],
    responses=_problems(401, 413, 422, 429),
    openapi_extra=_batch_of("ItemIn"),
)
async def post_items(request: Request, state: Authorized) -> schemas.Stored:
    payload = await _json(request, state)
    return schemas.Stored(stored=await state.in_tx(services.put_items, payload))


@router.put(
    "/v1/users/{user_id:id}",
    response_model=schemas.Stored,
    tags=["users"],
    responses=_problems(401, 413, 422, 429),
    openapi_extra=_body(_ref("UserIn")),
)
async def put_user(user_id: UserId, request: Request, state: Authorized) -> schemas.Stored:
    payload = await _json(request, state)
    return schemas.Stored(stored=await state.in_tx(services.put_users, payload, path_id=user_id))


@router.post(
    "/v1/users",
    response_model=schemas.Stored,
    tags=["users"],
    responses=_problems(401, 413, 422, 429),
    openapi_extra=_batch_of("UserIn"),
)
async def post_users(request: Request, state: Authorized) -> schemas.Stored:
    payload = await _json(request, state)
    return schemas.Stored(stored=await state.in_tx(services.put_users, payload))


@router.delete(
    "/v1/users/{user_id:id}",
    response_model=schemas.Erased,
    tags=["users"],
    responses=_problems(401, 404, 422, 429),
)
async def delete_user(user_id: UserId, state: Authorized) -> schemas.Erased:
    """Erase the user and every row derived from them (events, profile, decisions, messages, …)."""
    erased = await state.in_tx(services.erase, user_id)  # again when a deadlock victim
    log.info("event=erase user=%s rows=%d", hashed(user_id), sum(erased.deleted.values()))
    return erased


@router.get(
    "/v1/users/{user_id:id}/events",
    response_model=schemas.EventsPage,
    tags=["users"],
    responses=_problems(401, 404, 422, 429),
)
def get_events(
    user_id: UserId,
    state: Authorized,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    before: Annotated[
        str | None, Query(description="RFC 3339 timestamp, read as an event's `ts` (e.g. `next_before`)")
    ] = None,
) -> dict[str, Any]:
    try:  # the same reading as an event's ts, so a value POST /v1/events takes is taken here too
        until = ts_field({"before": before}, "before", required=False)
    except FieldError as exc:
        raise FieldErrors([(exc.field, exc.reason)], read=True) from None
    with state.pool.connection() as conn:
        return services.events_page(conn, user_id, limit=limit, before=until)


@router.get(
    "/v1/users/{user_id:id}/profile",
    response_model=schemas.Profile,
    tags=["users"],
    responses=_problems(401, 404, 422, 429),
)
def get_profile(user_id: UserId, state: Authorized) -> schemas.Profile:
    configured = configured_channels(state.settings)
    with state.pool.connection() as conn:
        return services.profile_view(conn, user_id, fold=state.fold, configured=configured)


@router.get(
    "/v1/users/{user_id:id}/recommendations",
    response_model=schemas.Recommendations,
    tags=["users"],
    responses=_problems(401, 404, 422, 429),
)
def get_recommendations(
    user_id: UserId, state: Authorized, k: Annotated[int, Query(ge=1, le=MAX_K)] = 20
) -> schemas.Recommendations:
    with state.pool.connection() as conn:
        return services.recommendations(conn, user_id, k, fold=state.fold)


@router.post(
    "/v1/users/{user_id:id}/runs",
    response_model=schemas.RunDecision,
    tags=["users"],
    responses=_problems(401, 404, 409, 413, 422, 429),
    openapi_extra={"requestBody": {**_body(_ref("RunRequest"))["requestBody"], "required": False}},
)
async def post_run(user_id: UserId, request: Request, state: Authorized) -> schemas.RunDecision:
    """Run the agent for the user now and return the decision. The body is optional."""
    body = await read_body(request, state.settings.max_body_bytes)
    send_now = services.run_options(bodies.decode(body)) if body.strip() else False

    def run() -> schemas.RunDecision:
        with state.pool.connection() as conn:
            return services.run_now(
                conn, state.settings, user_id, send_now=send_now, fold=state.fold, share=state.runs
            )

    decision = await run_in_threadpool(run)
    state.metrics.runs.labels("manual", decision.outcome).inc()
    log.info("event=run user=%s outcome=%s", hashed(user_id), decision.outcome)
    return decision


@router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
@router.get("/healthz", response_model=schemas.Health, tags=["ops"], responses=_problems(503))
def healthz(request: Request) -> schemas.Health:
    """200 when the database answers within `HEALTH_TIMEOUT`, else 503: a server that accepts
    connections but never answers (stopped, swapped out, a dead link that keeps its socket) held
    the probe — and the orchestrator's check — until it woke (47 s, then a 200)."""
    state = app_state(request)

    def probe() -> None:
        with state.pool.connection() as conn:  # the pool's own wait (a stopped database: ~1 s)
            conn.execute("select 1")

    if not _within(HEALTH_TIMEOUT, probe):
        raise PoolTimeout(f"the database did not answer within {HEALTH_TIMEOUT:g} s")
    return schemas.Health(status="ok", database="ok")


def _within(seconds: float, work: Callable[[], None]) -> bool:
    """Run `work` on a daemon thread and wait for it at most `seconds`: True when it finished
    (raising what it raised), False when it is still running (stuck on a database that keeps its
    connections but does not answer; a daemon thread never holds up the process's exit)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=run, name="db-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


HEALTH_TIMEOUT = 5.0  # seconds


@router.get(
    "/metrics",
    tags=["ops"],
    responses={200: {"content": {"text/plain": {}}}, **_problems(401, 429)},
    response_class=Response,
)
def metrics(state: Authorized) -> Response:
    """Prometheus text format. Rendered also while the database is down (it answered 503, and the
    in-process series — latency, events, deliveries — were lost exactly during the outage):
    `tagloop_database_up` says so, and the database-backed gauges keep their last values."""

    def read() -> None:
        with state.pool.connection(timeout=METRICS_DB_TIMEOUT) as conn:
            state.metrics.queue_depth.set(services.triggers.queue_depth(conn))
            state.metrics.observe_outbox(conn)

    try:
        up = _within(METRICS_DB_TIMEOUT, read)  # a hung server held the scrape past its timeout
    except (psycopg.Error, PoolTimeout, PoolClosed):
        up = False
    state.metrics.database_up.set(1 if up else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
