"""User and event SQL for the HTTP API: existence checks, the idempotent event insert that reports
which events are new, the events listing (newest first, keyset-paged on `ts`), erasure, and the
recipient of a message (unsubscribe links). Every function takes a connection and never commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from tagloop.tools.ingest.records import EventRecord
from tagloop.tools.store.runs import USER_LOCK_SPACE
from tagloop.tools.triggers import RUN_LOCK_NAMESPACE

_EVENTS_PAGE = """
select id, type, item_id, ts, value, message_id, context
from events
where user_id = %(user_id)s and (%(before)s::timestamptz is null or ts < %(before)s)
order by ts desc, seq desc
limit %(limit)s
"""

_EVENTS_AT = """
select id, type, item_id, ts, value, message_id, context from events
where user_id = %(user_id)s and ts = %(ts)s order by seq desc
"""


def user_exists(conn: psycopg.Connection[Any], user_id: str) -> bool:
    return conn.execute("select 1 from users where id = %(id)s", {"id": user_id}).fetchone() is not None


def user_timezones(conn: psycopg.Connection[Any], user_ids: list[str]) -> dict[str, str]:
    """user id → IANA time zone, for the stored users among `user_ids`."""
    rows = conn.execute("select id, timezone from users where id = any(%(ids)s)", {"ids": user_ids})
    return {r["id"]: r["timezone"] for r in rows}


def list_events(
    conn: psycopg.Connection[Any], user_id: str, *, limit: int, before: datetime | None
) -> tuple[list[dict[str, Any]], datetime | None]:
    """One page of the user's events, newest first, and the `before` of the next page (None at the
    end). `before` is exclusive, so events sharing the boundary timestamp stay together: the page
    is trimmed to end before them and the next page starts 1 µs after the boundary; when the whole
    page shares one timestamp, all events at it are returned (the one case of more than `limit`)."""
    rows = conn.execute(_EVENTS_PAGE, {"user_id": user_id, "before": before, "limit": limit + 1}).fetchall()
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    boundary = rows[limit]["ts"]
    trimmed = [r for r in page if r["ts"] != boundary]
    if trimmed:
        return trimmed, boundary + timedelta(microseconds=1)
    # the whole page shares one timestamp: return every event at it (more than `limit`), never a gap
    ties = conn.execute(_EVENTS_AT, {"user_id": user_id, "ts": boundary}).fetchall()
    return ties, boundary


def tables_with_user_rows(conn: psycopg.Connection[Any]) -> list[str]:
    """Every public table with a `user_id` column (plus `users`): what erasure must empty."""
    rows = conn.execute(
        """select table_name from information_schema.columns
           where table_schema = 'public' and column_name = 'user_id' order by table_name"""
    ).fetchall()
    return ["users", *[r["table_name"] for r in rows]]


def erase_user(conn: psycopg.Connection[Any], user_id: str) -> dict[str, int]:
    """Delete the user and every row derived from them; returns rows deleted per table.

    Tables keyed by `user_id` are emptied explicitly (not only through ON DELETE CASCADE) so a
    table added later without a foreign key is still covered. The rows are counted before any
    delete: a cascade (decisions → messages) would otherwise empty a table before its turn and
    report 0 for it. The user's row is locked first, so no row of theirs is added meanwhile."""
    # the co-likes table (tools/neighbors.py) is derived from everyone's events and has no user_id
    # column: an item only this user liked had their liked items as its neighbours. Marked stale,
    # the next run that refreshes it (`tagloop run`, a worker's renewal) recomputes it without them
    # (a run over HTTP does not: ~10 s on a million events). First, before any row lock: a refresh
    # holds the state row from its start, so this waits for it to finish and never overlaps it
    # (its save would overwrite the mark with a table computed with this user's events).
    conn.execute("update item_neighbors_state set events_seq = -1")
    # A run deciding the user finishes first, and none starts until this commits: a run over HTTP
    # holds the user's run lock (a new one gets 409 meanwhile), a worker's or `tagloop run`'s batch
    # the user's run-batch lock. A run that had read the user failed its insert (a 500) or, the id
    # PUT again meanwhile, stored a decision and a pending message made from the erased events.
    conn.execute(
        """select pg_advisory_xact_lock(%(ns)s, hashtext(%(id)s)),
                  pg_advisory_xact_lock(%(space)s, hashtext(%(id)s))""",
        {"ns": RUN_LOCK_NAMESPACE, "space": USER_LOCK_SPACE, "id": user_id},
    )
    conn.execute("select id from users where id = %(id)s for update", {"id": user_id})
    tables = tables_with_user_rows(conn)[1:]
    deleted: dict[str, int] = {}
    for table in tables:
        count = psycopg.sql.SQL("select count(*) as n from {} where user_id = %(id)s")
        row = conn.execute(count.format(psycopg.sql.Identifier(table)), {"id": user_id}).fetchone()
        deleted[table] = int(row["n"]) if row else 0
    for table in tables:
        conn.execute(
            psycopg.sql.SQL("delete from {} where user_id = %(id)s").format(psycopg.sql.Identifier(table)),
            {"id": user_id},
        )
    cur = conn.execute("delete from users where id = %(id)s", {"id": user_id})
    deleted["users"] = cur.rowcount
    return deleted


_INSERT_EVENTS = """
insert into events (id, user_id, type, item_id, ts, value, message_id, context)
select e.id, e.user_id, e.type, e.item_id, e.ts, e.value, e.message_id, coalesce(e.context, '{}')
from json_to_recordset(%(events)s::json) as e(id text, user_id text, type text, item_id text,
                                              ts timestamptz, value float8, message_id text, context jsonb)
order by e.id
on conflict (id) do nothing
returning id
"""


def json_param(value: Any) -> str:
    """JSON text of `value` for a `%(name)s::json` parameter: orjson, or the standard library for
    what orjson refuses (integers beyond 64 bits, lone surrogates), so such values reach the
    database — and are reported by it — exactly as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    """Datetimes as orjson writes them (RFC 3339 with the offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def insert_new_events(conn: psycopg.Connection[Any], events: Sequence[EventRecord]) -> list[EventRecord]:
    """Insert events in one statement from one JSON parameter (ids in sorted order, so concurrent
    batches lock the unique index in the same order); return those not stored before. A
    concurrent insert of the same id waits for the other transaction and then counts as a
    duplicate."""
    unique = list({e.id: e for e in reversed(events)}.values())  # first occurrence of an id wins
    if not unique:
        return []
    rows = [
        {
            "id": e.id,
            "user_id": e.user_id,
            "type": e.type,
            "item_id": e.item_id,
            "ts": e.ts,
            "value": e.value,
            "message_id": e.message_id,
            "context": e.context or None,
        }
        for e in unique
    ]
    stored = {r["id"] for r in conn.execute(_INSERT_EVENTS, {"events": json_param(rows)}).fetchall()}
    return [e for e in unique if e.id in stored]


def known_refs(
    conn: psycopg.Connection[Any], user_ids: Iterable[str], item_ids: Iterable[str]
) -> tuple[set[str], set[str]]:
    """Which of the users and items exist (one pipelined round trip)."""
    with conn.pipeline():
        users = conn.execute("select id from users where id = any(%(ids)s)", {"ids": sorted(set(user_ids))})
        items = conn.execute("select id from items where id = any(%(ids)s)", {"ids": sorted(set(item_ids))})
    return {r["id"] for r in users.fetchall()}, {r["id"] for r in items.fetchall()}


def message_recipient(conn: psycopg.Connection[Any], message_id: str) -> dict[str, Any] | None:
    """`{user_id, channel, consent_at, first_click_at}` of a stored message, or of a sent one purged
    since (None when the id is unknown or not a UUID); `consent_at` is when the user's consent was
    last written (an unsubscribe received before it no longer counts), None for a user erased since;
    `first_click_at`, when the link's unsubscribe was stored under its first id form,
    `unsubscribe:{message_id}` (None when it was not)."""
    try:
        uuid.UUID(message_id)
    except ValueError:
        return None
    row = conn.execute(
        """select r.user_id, r.channel, u.updated_at as consent_at,
                  (select e.received_at from events e where e.id = 'unsubscribe:' || %(id)s)
                      as first_click_at
           from (select user_id, channel from messages where id = %(id)s::uuid
                 union all  -- a message purged since (tools/store/retention.py)
                 select user_id, channel from unsubscribe_recipients where message_id = %(id)s::uuid
                 limit 1) r
           left join users u on u.id = r.user_id""",
        {"id": message_id},
    ).fetchone()
    return dict(row) if row else None
