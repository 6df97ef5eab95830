"""Decisions and the message outbox. A decision and its message are written in one transaction
(the caller's); delivery claims due messages with FOR UPDATE SKIP LOCKED so any number of workers
share the outbox without sending a message twice. A claim is a lease (`claimed_until`): a message
whose worker died mid-send is claimed again once the lease expires (receivers dedupe on its id).

Also the facts guards and bandits need, one query per batch: recent sends per user and channel
(caps), unsubscribes (consent), and per-arm sent/engaged counts (opens and clicks credited through
`events.message_id`)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg


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


# A batch is COPied into a session-local staging table, then inserted with the same conflict rule as
# one row at a time (a retried run reuses its decision and message ids): COPY instead of executemany.
_DECISIONS_STAGE = (
    """create temp table if not exists decisions_stage (like decisions including defaults)
       on commit delete rows""",
    """copy decisions_stage (id, user_id, trigger, policy_name, policy_version, seed, candidates, chosen,
                             propensities, channel, send_at, outcome, explanation, context, run_key, arms)
       from stdin""",
    """insert into decisions (id, user_id, trigger, policy_name, policy_version, seed, candidates, chosen,
                              propensities, channel, send_at, outcome, explanation, context, run_key, arms)
       select id, user_id, trigger, policy_name, policy_version, seed, candidates, chosen, propensities,
              channel, send_at, outcome, explanation, context, run_key, arms
       from decisions_stage
       on conflict (id) do nothing""",
    "truncate decisions_stage",
)
_MESSAGES_STAGE = (
    """create temp table if not exists messages_stage (like messages including defaults)
       on commit delete rows""",
    """copy messages_stage (id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at,
                            send_hour)
       from stdin""",
    """insert into messages (id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at,
                             send_hour)
       select id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at, send_hour
       from messages_stage
       on conflict (id) do nothing""",
    "truncate messages_stage",
)


def _copy_in(
    conn: psycopg.Connection[Any], stage: tuple[str, str, str, str], rows: list[tuple[Any, ...]]
) -> None:
    create, copy_sql, insert, truncate = stage
    conn.execute(create)
    with conn.cursor().copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(insert)
    conn.execute(truncate)


def insert_decisions(conn: psycopg.Connection[Any], rows: list[DecisionRow]) -> None:
    """Insert decisions (a decision id already stored is left as it is)."""
    if not rows:
        return
    dumps = json.dumps
    _copy_in(
        conn,
        _DECISIONS_STAGE,
        [
            (
                r.id, r.user_id, r.trigger, r.policy_name, r.policy_version, r.seed, dumps(r.candidates),
                dumps(r.chosen), r.propensities, r.channel, r.send_at, r.outcome, r.explanation,
                dumps(r.context, default=str), r.run_key, dumps(r.arms),
            )
            for r in rows
        ],
    )


def insert_messages(conn: psycopg.Connection[Any], rows: list[MessageRow]) -> None:
    """Insert outbox messages, first due at their send time (a message id already stored is kept)."""
    if not rows:
        return
    _copy_in(
        conn,
        _MESSAGES_STAGE,
        [
            (
                r.id, r.decision_id, r.user_id, r.channel, r.title, r.body, json.dumps(r.items), r.send_at,
                r.send_at, r.send_hour,
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


def send_times(
    conn: psycopg.Connection[Any],
    user_ids: list[str],
    *,
    since: datetime,
    include_pending: bool,
    exclude: str | None = None,
) -> dict[str, dict[str, list[datetime]]]:
    """user → channel → times of messages sent (and, if asked, scheduled) since `since` (caps)."""
    rows = conn.execute(
        """select user_id, channel, coalesce(sent_at, send_at) as t from messages
           where user_id = any(%(users)s) and coalesce(sent_at, send_at) >= %(since)s
             and (status = 'sent' or (%(pending)s and status in ('pending', 'sending')))
             and (%(exclude)s::uuid is null or id <> %(exclude)s::uuid)""",
        {"users": user_ids, "since": since, "pending": include_pending, "exclude": exclude},
    ).fetchall()
    out: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["user_id"]][r["channel"]].append(r["t"])
    return out


def unsubscribes(conn: psycopg.Connection[Any], user_ids: list[str]) -> dict[str, dict[str, datetime]]:
    """user → {channel or '*': time of the latest unsubscribe} for unsubscribes received after the
    user record (which carries consent) was last written — a later re-import re-grants consent."""
    rows = conn.execute(
        """select e.user_id, coalesce(e.context ->> 'channel', '*') as channel, max(e.ts) as ts
           from events e join users u on u.id = e.user_id
           where e.user_id = any(%(users)s) and e.type = 'unsubscribe' and e.received_at >= u.updated_at
           group by 1, 2""",
        {"users": user_ids},
    ).fetchall()
    out: dict[str, dict[str, datetime]] = defaultdict(dict)
    for r in rows:
        out[r["user_id"]][r["channel"]] = r["ts"]
    return out


_ARM_STATS = """
select m.user_id, m.channel, m.send_hour, count(*) as sent,
       count(*) filter (where exists (select 1 from events e where e.message_id = m.id::text
                                      and e.type in ('open', 'click'))) as engaged
from messages m
where m.status = 'sent' and m.sent_at >= %(since)s and (%(all)s or m.user_id = any(%(users)s))
group by 1, 2, 3
"""


@dataclass
class ArmCounts:
    """Sent and engaged (opened/clicked) message counts per channel and per local send hour."""

    channel: dict[str, tuple[int, int]] = field(default_factory=dict)
    hour: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, channel: str, hour: int | None, sent: int, engaged: int) -> None:
        s, e = self.channel.get(channel, (0, 0))
        self.channel[channel] = (s + sent, e + engaged)
        if hour is not None:
            s, e = self.hour.get(hour, (0, 0))
            self.hour[hour] = (s + sent, e + engaged)


def arm_counts(
    conn: psycopg.Connection[Any], *, since: datetime, user_ids: list[str] | None = None
) -> tuple[ArmCounts, dict[str, ArmCounts]]:
    """Engagement per arm: overall, and per user (for `user_ids`, or all users)."""
    overall = ArmCounts()
    per_user: dict[str, ArmCounts] = defaultdict(ArmCounts)
    for r in conn.execute(_ARM_STATS, {"since": since, "all": user_ids is None, "users": user_ids or []}):
        overall.add(r["channel"], r["send_hour"], r["sent"], r["engaged"])
        per_user[r["user_id"]].add(r["channel"], r["send_hour"], r["sent"], r["engaged"])
    return overall, per_user


_EXPORT = """
select d.id, d.user_id, d.created_at, d.policy_name, d.policy_version, d.seed, d.candidates, d.chosen,
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
                "candidates": r["candidates"],
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


def dead_letters(conn: psycopg.Connection[Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Messages given up on, newest first: id, user, channel, attempts, last error."""
    return conn.execute(
        """select id, user_id, channel, attempts, last_error, dead_at from messages where status = 'dead'
           order by dead_at desc nulls last limit %(n)s""",
        {"n": limit},
    ).fetchall()
