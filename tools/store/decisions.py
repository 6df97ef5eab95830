"""Decisions and the message outbox. A decision and its message are written in one transaction
(the caller's); delivery claims due messages with FOR UPDATE SKIP LOCKED so any number of workers
share the outbox without sending a message twice."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

_INSERT_DECISION = """
insert into decisions (id, user_id, trigger, policy_name, policy_version, seed, candidates, chosen,
                       propensities, channel, send_at, outcome, explanation, context)
values (%(id)s, %(user_id)s, %(trigger)s, %(policy_name)s, %(policy_version)s, %(seed)s, %(candidates)s,
        %(chosen)s, %(propensities)s, %(channel)s, %(send_at)s, %(outcome)s, %(explanation)s, %(context)s)
on conflict (id) do nothing
"""

_INSERT_MESSAGE = """
insert into messages (id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at)
values (%(id)s, %(decision_id)s, %(user_id)s, %(channel)s, %(title)s, %(body)s, %(items)s, %(send_at)s,
        %(send_at)s)
on conflict (id) do nothing
"""


@dataclass
class DecisionRow:
    id: str
    user_id: str
    trigger: str
    policy_name: str
    policy_version: str
    seed: int
    candidates: list[dict[str, Any]]
    chosen: list[str]
    propensities: list[float]
    channel: str | None
    send_at: datetime | None
    outcome: str
    explanation: str | None
    context: dict[str, Any]


@dataclass
class MessageRow:
    id: str
    decision_id: str
    user_id: str
    channel: str
    title: str
    body: str
    items: list[dict[str, str]]
    send_at: datetime


def insert_decisions(conn: psycopg.Connection[Any], rows: list[DecisionRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_DECISION,
            [
                {**r.__dict__, "candidates": json.dumps(r.candidates), "chosen": json.dumps(r.chosen),
                 "context": json.dumps(r.context)}
                for r in rows
            ],
        )


def insert_messages(conn: psycopg.Connection[Any], rows: list[MessageRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(_INSERT_MESSAGE, [{**r.__dict__, "items": json.dumps(r.items)} for r in rows])


_CLAIM = """
update messages m set status = 'sending', attempts = m.attempts + 1
where m.id in (
    select id from messages
    where status = 'pending' and next_attempt_at <= %(now)s and (%(any)s or id = any(%(ids)s::uuid[]))
    order by next_attempt_at
    limit %(limit)s
    for update skip locked)
returning m.*, (select u.channels ->> m.channel from users u where u.id = m.user_id) as address
"""


def claim_due(
    conn: psycopg.Connection[Any], *, now: datetime, limit: int = 100, ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Mark up to `limit` due messages as 'sending' and return them; commit before sending."""
    return conn.execute(_CLAIM, {"now": now, "limit": limit, "any": ids is None, "ids": ids or []}).fetchall()


def mark_sent(conn: psycopg.Connection[Any], message_id: str, now: datetime) -> None:
    conn.execute(
        "update messages set status = 'sent', sent_at = %(now)s, last_error = null where id = %(id)s",
        {"id": message_id, "now": now},
    )


def mark_failed(
    conn: psycopg.Connection[Any], message_id: str, *, error: str, retry_in: timedelta | None, now: datetime
) -> None:
    """Back to 'pending' with a later attempt time, or 'dead' when no retry is due."""
    conn.execute(
        """update messages set status = case when %(retry)s then 'pending' else 'dead' end,
               next_attempt_at = %(next)s, last_error = %(error)s where id = %(id)s""",
        {"id": message_id, "retry": retry_in is not None, "next": now + (retry_in or timedelta()),
         "error": error[:500]},
    )


def cancel(conn: psycopg.Connection[Any], message_id: str, reason: str) -> None:
    conn.execute(
        "update messages set status = 'cancelled', last_error = %(r)s where id = %(id)s",
        {"id": message_id, "r": reason},
    )
