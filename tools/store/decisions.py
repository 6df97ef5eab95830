"""Decisions and the message outbox. A decision and its message are written in one transaction
(the caller's); delivery claims due messages with FOR UPDATE SKIP LOCKED so any number of workers
share the outbox without sending a message twice. A claim is a lease (`claimed_until`): a message
whose worker died mid-send is claimed again once the lease expires (receivers dedupe on its id).

Decisions and messages are COPied in per batch (through session-local staging tables, keeping the
on-conflict-do-nothing rule of a retried run); decisions in binary COPY, their candidate set as
parallel arrays (migration 0029: ids, scores, providers, source bit masks over `source_names`),
which the export turns back into the `[{item_id, score, source, provider}]` list. The facts a run
reads about its users (sends, caps, unsubscribes, arm engagement) are in tools/store/runs.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from tagloop.tools.retrieval import CandidateLog


@dataclass
class DecisionRow:
    id: str
    user_id: str
    trigger: str
    policy_name: str
    policy_version: str
    seed: int
    candidates: CandidateLog | list[dict[str, Any]]  # a list: [{item_id, score, source, provider}]
    chosen: list[str]
    propensities: list[float]
    channel: str | None
    send_at: datetime | None
    outcome: str
    explanation: str | None
    context: dict[str, Any]
    run_key: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)


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
    send_hour: int | None = None


# A batch is COPied into a session-local staging table (same columns, same defaults), then inserted
# with the same conflict rule as one row at a time (a retried run reuses its decision and message ids).
_DECISIONS_STAGE = (
    """create temp table if not exists decisions_stage (like decisions including defaults)
       on commit delete rows""",
    """copy decisions_stage (id, user_id, trigger, policy_name, policy_version, seed, chosen, propensities,
                             channel, send_at, outcome, explanation, context, run_key, arms, candidate_ids,
                             candidate_scores, candidate_providers, candidate_sources, source_names)
       from stdin (format binary)""",
    "insert into decisions select * from decisions_stage on conflict (id) do nothing",
    "truncate decisions_stage",
)
_MESSAGES_STAGE = (
    """create temp table if not exists messages_stage (like messages including defaults)
       on commit delete rows""",
    """copy messages_stage (id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at,
                            send_hour)
       from stdin""",
    "insert into messages select * from messages_stage on conflict (id) do nothing",
    "truncate messages_stage",
)


_DECISION_TYPES = [
    "uuid", "text", "text", "text", "text", "int8", "jsonb", "float8[]", "text", "timestamptz", "text",
    "text", "jsonb", "text", "jsonb", "text[]", "float8[]", "text[]", "int2[]", "text[]",
]  # fmt: skip


def _copy_in(
    conn: psycopg.Connection[Any],
    stage: tuple[str, str, str, str],
    rows: list[tuple[Any, ...]],
    types: list[str] | None = None,
) -> None:
    create, copy_sql, insert, truncate = stage
    conn.execute(create)
    with conn.cursor().copy(copy_sql) as copy:
        if types:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    conn.execute(insert)
    conn.execute(truncate)


def insert_decisions(conn: psycopg.Connection[Any], rows: list[DecisionRow]) -> None:
    """Insert decisions (a decision id already stored is left as it is)."""
    if not rows:
        return
    logs = [CandidateLog.from_records(c) if isinstance(c, list) else c for c in (r.candidates for r in rows)]
    _copy_in(
        conn,
        _DECISIONS_STAGE,
        [
            (
                UUID(r.id),
                r.user_id,
                r.trigger,
                r.policy_name,
                r.policy_version,
                r.seed,
                Jsonb(r.chosen),
                r.propensities,
                r.channel,
                r.send_at,
                r.outcome,
                r.explanation,
                Jsonb(r.context, dumps=_dumps_str),
                r.run_key,
                Jsonb(r.arms),
                c.item_ids,
                c.scores,
                c.providers,
                c.sources,
                c.source_names,
            )
            for r, c in zip(rows, logs, strict=True)
        ],
        _DECISION_TYPES,
    )


def _dumps_str(obj: Any) -> str:
    return json.dumps(obj, default=str)


def insert_messages(conn: psycopg.Connection[Any], rows: list[MessageRow]) -> None:
    """Insert outbox messages, first due at their send time (a message id already stored is kept)."""
    if not rows:
        return
    _copy_in(
        conn,
        _MESSAGES_STAGE,
        [
            (
                r.id,
                r.decision_id,
                r.user_id,
                r.channel,
                r.title,
                r.body,
                json.dumps(r.items),
                r.send_at,
                r.send_at,
                r.send_hour,
            )
            for r in rows
        ],
    )


_CLAIM = """
update messages m set status = 'sending', attempts = m.attempts + 1, claimed_until = %(lease_end)s
from users u
where u.id = m.user_id and m.id in (
    select id from messages
    where ((status = 'pending' and next_attempt_at <= %(now)s)
           or (status = 'sending' and claimed_until < %(now)s))
      and (%(any)s or id = any(%(ids)s::uuid[]))
    order by next_attempt_at
    limit %(limit)s
    for update skip locked)
returning m.*, u.channels ->> m.channel as address, u.consent, u.timezone, u.updated_at as user_updated_at
"""


def claim_due(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    limit: int = 100,
    ids: list[str] | None = None,
    lease: timedelta = timedelta(minutes=5),
) -> list[dict[str, Any]]:
    """Lease up to `limit` due messages (and expired leases) as 'sending' and return them with the
    user's address, consent and time zone. Commit before sending."""
    return conn.execute(
        _CLAIM, {"now": now, "lease_end": now + lease, "limit": limit, "any": ids is None, "ids": ids or []}
    ).fetchall()


def mark_sent(conn: psycopg.Connection[Any], message_id: str, now: datetime) -> None:
    conn.execute(
        """update messages set status = 'sent', sent_at = %(now)s, last_error = null, claimed_until = null
           where id = %(id)s""",
        {"id": message_id, "now": now},
    )


def mark_failed(
    conn: psycopg.Connection[Any], message_id: str, *, error: str, retry_in: timedelta | None, now: datetime
) -> None:
    """Back to 'pending' with a later attempt time, or 'dead' (dead-lettered) when no retry is due."""
    conn.execute(
        """update messages set status = case when %(retry)s then 'pending' else 'dead' end,
               next_attempt_at = %(next)s, last_error = %(error)s, claimed_until = null,
               dead_at = case when %(retry)s then null else %(now)s end
           where id = %(id)s""",
        {
            "id": message_id,
            "retry": retry_in is not None,
            "next": now + (retry_in or timedelta()),
            "error": error[:500],
            "now": now,
        },
    )


def defer(conn: psycopg.Connection[Any], message_id: str, *, until: datetime, reason: str) -> None:
    """Back to 'pending' until `until` without spending an attempt (quiet hours, caps)."""
    conn.execute(
        """update messages set status = 'pending', next_attempt_at = %(until)s, attempts = attempts - 1,
               last_error = %(r)s, claimed_until = null where id = %(id)s""",
        {"id": message_id, "until": until, "r": reason[:500]},
    )


def cancel(conn: psycopg.Connection[Any], message_id: str, reason: str) -> None:
    conn.execute(
        """update messages set status = 'cancelled', last_error = %(r)s, claimed_until = null
           where id = %(id)s""",
        {"id": message_id, "r": reason[:500]},
    )


_EXPORT = """
select d.id, d.user_id, d.created_at, d.policy_name, d.policy_version, d.seed, d.candidates, d.candidate_ids,
       d.candidate_scores, d.candidate_providers, d.candidate_sources, d.source_names, d.chosen,
       d.propensities, d.channel, d.send_at, d.context, d.arms, d.outcome, d.trigger,
       exists (select 1 from messages m join events e on e.message_id = m.id::text
               where m.decision_id = d.id and e.type in ('open', 'click')) as engaged
from decisions d
order by d.created_at, d.id
"""


def iter_decision_log(conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
    """Every decision as an OPE log record (see `tagloop decisions export`)."""
    with conn.cursor(name="decision_export") as cur:
        cur.execute(_EXPORT)
        for r in cur:
            yield {
                "decision_id": str(r["id"]),
                "user_id": r["user_id"],
                "ts": r["created_at"].isoformat(),
                "policy": r["policy_name"],
                "version": r["policy_version"],
                "seed": r["seed"],
                "candidates": _candidates(r),
                "chosen": r["chosen"],
                "propensities": r["propensities"],
                "channel": r["channel"],
                "send_at": r["send_at"].isoformat() if r["send_at"] else None,
                "context": {
                    **r["context"],
                    "arms": r["arms"],
                    "outcome": r["outcome"],
                    "trigger": r["trigger"],
                },
                "reward": int(r["engaged"]),
            }


def _candidates(r: dict[str, Any]) -> list[dict[str, Any]]:
    if r["candidate_ids"] is None:
        return list(r["candidates"] or [])
    log = CandidateLog(
        r["candidate_ids"],
        r["candidate_scores"],
        r["candidate_providers"],
        r["candidate_sources"],
        r["source_names"],
    )
    return log.records()


def dead_letters(conn: psycopg.Connection[Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Messages given up on, newest first: id, user, channel, attempts, last error."""
    return conn.execute(
        """select id, user_id, channel, attempts, last_error, dead_at from messages where status = 'dead'
           order by dead_at desc nulls last limit %(n)s""",
        {"n": limit},
    ).fetchall()
