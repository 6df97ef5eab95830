"""The unsubscribe link of a mail (tools/messaging/unsubscribe.py): `POST /v1/unsubscribe/{message_id}
?token=…` records an `unsubscribe` event for the message's user and channel, credited to the
message, so the send-time checks stop every later mail on that channel; `GET` on the same link
shows a page with one button that makes that POST (link scanners and previews only GET, so a GET
never unsubscribes). The token is the credential: without a valid one the answer is 401, like any
other endpoint without credentials. Clicking twice stores one event (its id is derived from the
message id)."""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from tagloop.agent.http import ingest, schemas
from tagloop.agent.http.problems import MEDIA_TYPE, Unauthorized
from tagloop.agent.http.state import AppState
from tagloop.tools.errors import NotFound
from tagloop.tools.ingest.records import parse_event
from tagloop.tools.logsafe import hashed
from tagloop.tools.store import users as store

router = APIRouter()
log = logging.getLogger("tagloop.http")
MessageId = Annotated[str, Path(min_length=1, max_length=256, description="the message of the link")]
Token = Annotated[str, Query(max_length=200, description="the link's token (without it: 401)")]
_PROBLEM = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    c: {"content": _PROBLEM, "description": "problem+json"} for c in (401, 404, 422, 429)
}
_OFF = "unsubscribe links are not enabled (TAGLOOP_PUBLIC_URL, TAGLOOP_UNSUBSCRIBE_SECRET)"


def _checked(request: Request, message_id: str, token: str) -> AppState:
    state: AppState = request.app.state.tagloop
    links = state.unsubscribe
    if links is None:
        raise Unauthorized(_OFF)
    if not token or not links.valid(message_id, token):
        raise Unauthorized("this unsubscribe link is not valid")
    state.limiter.check(f"unsubscribe:{message_id}")
    return state


def _recipient(state: AppState, message_id: str) -> dict[str, Any]:
    with state.pool.connection() as conn:
        found = store.message_recipient(conn, message_id)
    if found is None:
        raise NotFound("this message no longer exists (its user may have been erased)")
    return found


@router.post(
    "/v1/unsubscribe/{message_id}",
    response_model=schemas.Unsubscribed,
    tags=["users"],
    responses=_PROBLEMS,
)
async def unsubscribe(request: Request, message_id: MessageId, token: Token = "") -> schemas.Unsubscribed:
    """One-click unsubscribe (RFC 8058): any body is accepted and ignored."""
    state = _checked(request, message_id, token)
    found = await run_in_threadpool(_recipient, state, message_id)
    now = datetime.now(UTC)
    # one event per link and consent: a click after the user opted in again (consent written since
    # the first click) is a new unsubscribe, not a duplicate of the one that no longer counts
    consent_at, first = found["consent_at"], found["first_click_at"]
    still_counts = first is not None and (consent_at is None or first >= consent_at)
    # (a click stored under the first id form, `unsubscribe:{message_id}`, that still counts: the same)
    generation = f":{consent_at.timestamp():.6f}" if consent_at is not None and not still_counts else ""
    event = parse_event(
        {
            "id": f"unsubscribe:{message_id}{generation}",
            "user_id": found["user_id"],
            "type": "unsubscribe",
            "message_id": message_id,
            "ts": now.isoformat(),
            "context": {"channel": found["channel"], "source": "unsubscribe_link"},
        },
        now=now,
    )
    result = await run_in_threadpool(
        ingest.store_events, state.pool, [event], single=True, now=now, options=state.ingest
    )
    state.metrics.events.labels("accepted" if result.accepted else "duplicate").inc()
    log.info("event=unsubscribe_link user=%s channel=%s", hashed(found["user_id"]), found["channel"])
    return schemas.Unsubscribed(channel=found["channel"], already=result.accepted == 0)


@router.get(
    "/v1/unsubscribe/{message_id}",
    response_class=HTMLResponse,
    tags=["users"],
    responses={200: {"content": {"text/html": {}}}, **_PROBLEMS},
)
async def unsubscribe_page(request: Request, message_id: MessageId, token: Token = "") -> HTMLResponse:
    """A page with one button that POSTs the link; a GET changes nothing."""
    state = _checked(request, message_id, token)
    found = await run_in_threadpool(_recipient, state, message_id)
    channel = html.escape(found["channel"])
    action = html.escape(f"?token={token}", quote=True)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Unsubscribe</title></head><body>"
        f"<p>Stop receiving these {channel} messages?</p>"
        f"<form method='post' action='{action}'><button type='submit'>Unsubscribe</button></form>"
        "</body></html>"
    )
    return HTMLResponse(page)
