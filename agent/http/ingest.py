"""Durable, idempotent event ingest behind `POST /v1/events`.

A request's events are validated with the same `parse_event` as file imports (errors name the
array index and field: `[3].ts`), inserted with ON CONFLICT DO NOTHING on the event id in one
statement (the foreign keys check users and items) and committed before the 202 goes out.
Nothing of a request is stored when any event is bad. The request takes no profile lock: the
profile folder (`tools.profile_folder`) folds committed events into profiles and enqueues the runs
they trigger shortly after; the transaction only holds the folder's shared ingest lock, so the
folder knows when every event up to a seq is committed.

Unknown users and items are rejected (422 naming `[i].user_id` / `[i].item_id`), as in file
imports: a user created from an event would have no time zone and no consent, and a typo would
silently create a ghost user; the sender registers the user (`PUT /v1/users/{id}`) and retries.
One 422 names every bad event of a batch: fields that do not parse and unknown references alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from tagloop.agent.http.problems import FieldErrors, PayloadTooLarge
from tagloop.tools import profile_folder
from tagloop.tools.ingest.records import MAX_ID, EventRecord, FieldError, parse_event
from tagloop.tools.store import users as store

RETRIES = 3  # deadlock / serialization failures are retried; the request is idempotent


@dataclass(frozen=True)
class IngestOptions:
    max_events: int
    extra_types: frozenset[str]


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    users: int


class ParsedBatch(list[EventRecord]):
    """A request's events that parsed, `positions` their indices in the request, and `errors`
    (field, reason) of the ones that did not: `store_events` then names the unknown users and items
    of the parsed ones too, so one 422 names every bad event, and stores nothing."""

    def __init__(
        self, events: list[EventRecord], positions: list[int], errors: list[tuple[int, str, str]]
    ) -> None:
        super().__init__(events)
        self.positions = positions
        self.errors = errors


def parse_payload(
    payload: Any, *, now: datetime, options: IngestOptions, webhook_id: str | None = None
) -> ParsedBatch:
    """One event object or an array of them → records (the bad ones' errors kept in the result:
    ParsedBatch). An event without `id` gets the stable id derived from its fields (as in file
    imports and API-key requests, so a backfill of events also streamed by webhook stores each
    once); one without `ts` too, delivered by webhook, takes the `webhook-id` instead (the i-th of
    a batch `{webhook-id}#{i}`), since its time is the request's: a redelivery is stored once."""
    single = isinstance(payload, dict)
    if single:
        batch = [payload]
    elif isinstance(payload, list):
        batch = payload
    else:
        raise FieldErrors([("body", "must be an event object or an array of event objects")])
    if len(batch) > options.max_events:
        raise PayloadTooLarge(f"{len(batch):,} events in one request; the limit is {options.max_events:,}")
    events: list[EventRecord] = []
    positions: list[int] = []
    errors: list[tuple[int, str, str]] = []
    for index, data in enumerate(batch):
        where = "" if single else f"[{index}]"
        if not isinstance(data, dict):
            errors.append((index, where or "body", f"must be an event object, got {type(data).__name__}"))
            continue
        if webhook_id and data.get("id") in (None, "") and data.get("ts") in (None, ""):
            derived = webhook_id if single else f"{webhook_id}#{index}"
            if len(derived) > MAX_ID:  # the sender gave no id: name the header it came from
                if not any(field == "webhook-id" for _, field, _ in errors):
                    errors.append((index, "webhook-id", _too_long(single, index, len(derived))))
                continue
            data = {**data, "id": derived}
        try:
            events.append(parse_event(data, now=now, extra_types=options.extra_types, position=index))
            positions.append(index)
        except FieldError as exc:
            errors.append((index, f"{where}.{exc.field}" if where else exc.field, exc.reason))
    return ParsedBatch(events, positions, errors)


def _too_long(single: bool, index: int, length: int) -> str:
    taken = (
        "an event without an id takes it" if single else f"event {index} has no id and takes it + `#{index}`"
    )
    return f"is too long: {taken} as its id ({length} characters; at most {MAX_ID})"


def _ref_errors(
    conn: psycopg.Connection[Any], events: list[EventRecord], positions: list[int], single: bool
) -> list[tuple[int, str, str]]:
    """(index, field, reason) of each event naming a user or item that is not stored."""
    item_ids = [e.item_id for e in events if e.item_id]
    users, items = store.known_refs(conn, [e.user_id for e in events], item_ids)
    errors = []
    for index, e in zip(positions, events, strict=True):
        where = "" if single else f"[{index}]."
        if e.user_id not in users:
            errors.append(
                (index, f"{where}user_id", f"unknown user {e.user_id!r} (PUT /v1/users/{{id}} first)")
            )
        elif e.item_id is not None and e.item_id not in items:
            errors.append(
                (index, f"{where}item_id", f"unknown item {e.item_id!r} (PUT /v1/items/{{id}} first)")
            )
    return errors


def _refuse(errors: list[tuple[int, str, str]]) -> None:
    if errors:
        raise FieldErrors([(field, reason) for _, field, reason in sorted(errors, key=lambda e: e[0])])


def store_events(
    pool: ConnectionPool, events: list[EventRecord], *, single: bool, now: datetime, options: IngestOptions
) -> IngestResult:
    """Insert in one committed transaction (profiles are folded after, by the folder): the ingest
    lock, the insert and the commit go out pipelined, in two round trips. Unknown users and items
    are caught by the foreign keys; the batch is then rolled back and checked for them, so the 422
    names every unknown reference. A `ParsedBatch` holding errors is refused here, its unknown
    references named with them."""
    positions = events.positions if isinstance(events, ParsedBatch) else list(range(len(events)))
    if isinstance(events, ParsedBatch) and events.errors:
        with pool.connection() as conn:
            _refuse(events.errors + (_ref_errors(conn, events, positions, single) if events else []))
    for attempt in range(RETRIES):
        try:
            with pool.connection() as conn:
                try:
                    with conn.pipeline(), conn.transaction():
                        profile_folder.hold_ingest_lock(conn)
                        new = store.insert_new_events(conn, events)
                except psycopg.errors.ForeignKeyViolation:
                    _refuse(_ref_errors(conn, events, positions, single))  # naming them
                    if attempt == RETRIES - 1:  # no unknown reference, yet a violation: let it show
                        raise
                    continue  # the user or item was stored meanwhile: try again
            return IngestResult(len(new), len(events) - len(new), len({e.user_id for e in new}))
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            if attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")
