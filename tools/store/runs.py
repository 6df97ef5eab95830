"""Claiming agent runs: due rows of `run_queue` (event-triggered and manual requests) and
`user_schedules` (cadences), with FOR UPDATE SKIP LOCKED so any number of workers share them.

The claim is held for the caller's whole transaction: the worker claims, decides, records and
advances/deletes the rows, then commits once. A worker that dies rolls all of it back and the rows
become claimable again, so nothing is lost and a user is never run twice at once. A per-user
transaction-scoped advisory lock (`lock_users`; `wait_for_users` for runs outside the worker,
such as `POST /v1/users/{id}/runs`) also keeps a queued, a scheduled and a requested run of the same
user apart. Store functions never commit.

Also the facts guards and bandits need, one query per batch: recent sends per user and channel
(caps), unsubscribes (consent), and per-arm sent/engaged counts (opens and clicks credited through
`events.message_id`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from tagloop.tools.store.pending import Pending, request

# the channel an unsubscribe event `e` names, as sends compare it: lower-case, and every channel
# ('*') when it names none or holds what no channel is called (ingest normalises it since; rows
# stored before, such as 'File' or ["file"], must not leave the user subscribed)
UNSUBSCRIBED_CHANNEL = """(case when jsonb_typeof(e.context -> 'channel') = 'string'
                                 and btrim(e.context ->> 'channel') <> ''
                            then lower(btrim(e.context ->> 'channel')) else '*' end)"""

USER_LOCK_SPACE = 0x74676C  # first key of the two-key advisory lock: tagloop user runs

_CLAIM_SCHEDULES = """
select user_id, cadence, next_run_at from user_schedules
where next_run_at <= %(now)s
order by next_run_at
limit %(limit)s
for update skip locked
"""

_CLAIM_QUEUE = """
select user_id, due_at, trigger, reason from run_queue
where due_at <= %(now)s
order by due_at
limit %(limit)s
for update skip locked
"""


def claim_schedules(conn: psycopg.Connection[Any], *, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Lock up to `limit` due (user, cadence) rows for this transaction."""
    return conn.execute(_CLAIM_SCHEDULES, {"now": now, "limit": limit}).fetchall()


def claim_queue(conn: psycopg.Connection[Any], *, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Lock up to `limit` due run requests for this transaction."""
    return conn.execute(_CLAIM_QUEUE, {"now": now, "limit": limit}).fetchall()


def lock_users(conn: psycopg.Connection[Any], user_ids: list[str]) -> set[str]:
    """Try the per-user advisory locks (held until the transaction ends); returns the users locked."""
    if not user_ids:
        return set()
    rows = conn.execute(
        """select u, pg_try_advisory_xact_lock(%(space)s, hashtext(u)) as ok
           from unnest(%(users)s::text[]) as u""",
        {"users": sorted(set(user_ids)), "space": USER_LOCK_SPACE},
    ).fetchall()
    return {r["u"] for r in rows if r["ok"]}


def wait_for_users(conn: psycopg.Connection[Any], user_ids: list[str]) -> None:
    """Take the per-user advisory locks, waiting for a worker that holds one to commit (in id order,
    so two waiting callers never deadlock; workers only try, so they never wait on a caller)."""
    if user_ids:
        conn.execute(
            """select count(pg_advisory_xact_lock(%(space)s, hashtext(u)))
               from unnest(%(users)s::text[]) as u""",
            {"users": sorted(set(user_ids)), "space": USER_LOCK_SPACE},
        )


def advance_schedules(
    conn: psycopg.Connection[Any], rows: Iterable[tuple[str, str, datetime]], now: datetime
) -> None:
    """Set (user, cadence) → next run time after a run at `now`."""
    with conn.cursor() as cur:
        cur.executemany(
            """update user_schedules set next_run_at = %(next)s, last_run_at = %(now)s
               where user_id = %(user)s and cadence = %(cadence)s""",
            [{"user": u, "cadence": c, "next": n, "now": now} for u, c, n in rows],
        )


def delete_queued(conn: psycopg.Connection[Any], user_ids: list[str], *, due_before: datetime) -> None:
    """Remove the claimed run requests (a request that arrived later for a later time stays)."""
    conn.execute(
        "delete from run_queue where user_id = any(%(users)s) and due_at <= %(t)s",
        {"users": user_ids, "t": due_before},
    )


def enqueue_run(
    conn: psycopg.Connection[Any], user_id: str, *, due_at: datetime, trigger: str, reason: str | None = None
) -> None:
    """Ask for a run of `user_id` at `due_at`; an earlier pending request wins (bursts coalesce)."""
    conn.execute(
        """insert into run_queue (user_id, due_at, trigger, reason) values (%(u)s, %(t)s, %(trigger)s, %(r)s)
           on conflict (user_id) do update set
               due_at = least(run_queue.due_at, excluded.due_at),
               trigger = case when excluded.due_at < run_queue.due_at then excluded.trigger
                              else run_queue.trigger end,
               reason = coalesce(run_queue.reason, excluded.reason)""",
        {"u": user_id, "t": due_at, "trigger": trigger, "r": reason},
    )


def ensure_schedules(
    conn: psycopg.Connection[Any], cadence: str, first_runs: Iterable[tuple[str, datetime]]
) -> int:
    """Give users without a `cadence` row one, first due at the given time. Returns rows added.
    A user erased meanwhile is left out (their row is locked first, so an erase in flight is waited
    for and then skipped): the insert's foreign key failed, and with it the worker's whole cycle."""
    rows = list(first_runs)
    if not rows:
        return 0
    cur = conn.execute(
        """insert into user_schedules (user_id, cadence, next_run_at)
           select x.u, %(cadence)s, x.t
           from unnest(%(users)s::text[], %(times)s::timestamptz[]) as x(u, t)
           join users s on s.id = x.u
           for key share of s
           on conflict (user_id, cadence) do nothing""",
        {"cadence": cadence, "users": [u for u, _ in rows], "times": [t for _, t in rows]},
    )
    return cur.rowcount


def last_messaged(conn: psycopg.Connection[Any], user_ids: list[str], since: datetime) -> dict[str, datetime]:
    """user → the send time of their latest decided message due at `since` or later (users with none
    left out). A message is due at most a week or so after its decision was made, so only the
    decisions made since a little over a week before `since` are read (the user index's range), not
    each user's whole history."""
    rows = conn.execute(
        """select user_id, max(send_at) as at from decisions
           where user_id = any(%(users)s) and created_at >= %(since)s - interval '8 days'
             and outcome = 'message' and send_at >= %(since)s
           group by user_id""",
        {"users": user_ids, "since": since},
    ).fetchall()
    return {r["user_id"]: r["at"] for r in rows}


def users_without_schedule(conn: psycopg.Connection[Any], cadence: str, limit: int = 10_000) -> list[str]:
    rows = conn.execute(
        """select u.id from users u where not exists
               (select 1 from user_schedules s where s.user_id = u.id and s.cadence = %(c)s)
           order by u.id limit %(n)s""",
        {"c": cadence, "n": limit},
    ).fetchall()
    return [r["id"] for r in rows]


# --- what a run reads about its users: sends (caps), unsubscribes (consent), arm engagement ---


def send_times(
    conn: psycopg.Connection[Any],
    user_ids: list[str],
    *,
    since: datetime,
    include_pending: bool,
    exclude: str | None = None,
) -> dict[str, dict[str, list[datetime]]]:
    """user → channel → times of messages sent (and, if asked, scheduled) since `since` (caps)."""
    return request_send_times(
        conn, user_ids, since=since, include_pending=include_pending, exclude=exclude
    ).result()


def request_send_times(
    conn: psycopg.Connection[Any],
    user_ids: list[str],
    *,
    since: datetime,
    include_pending: bool,
    exclude: str | None = None,
) -> Pending[dict[str, dict[str, list[datetime]]]]:
    """`send_times`, sent now and read later (tools/store/pending.py)."""

    def parse(rows: list[Any]) -> dict[str, dict[str, list[datetime]]]:
        out: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            out[r["user_id"]][r["channel"]].append(r["t"])
        return out

    return request(
        conn,
        """select user_id, channel, coalesce(sent_at, send_at) as t from messages
           where user_id = any(%(users)s) and coalesce(sent_at, send_at) >= %(since)s
             and (status = 'sent' or (%(pending)s and status in ('pending', 'sending')))
             and (%(exclude)s::uuid is null or id <> %(exclude)s::uuid)""",
        {"users": user_ids, "since": since, "pending": include_pending, "exclude": exclude},
        parse,
        # Not prepared: a prepared statement keeps the generic plan made from the statistics of its
        # first executions. A worker starting on an empty `messages` table (a new install, a vacuum
        # after a purge) kept a sequential scan while its own sends filled the table, so every batch
        # scanned all messages written so far (0.06 ms of server time per decision over a
        # 4,400-user run, growing with it; bench/agent.py). Planned per execution, it uses the index.
        prepare=False,
    )


def message_statuses(
    conn: psycopg.Connection[Any], message_ids: list[str]
) -> dict[str, tuple[str, str | None]]:
    """message id → (outbox status, last delivery error)."""
    rows = conn.execute(
        "select id::text as id, status, last_error from messages where id = any(%(ids)s::uuid[])",
        {"ids": message_ids},
    ).fetchall()
    return {r["id"]: (r["status"], r["last_error"]) for r in rows}


def unsubscribes(conn: psycopg.Connection[Any], user_ids: list[str]) -> dict[str, dict[str, datetime]]:
    """user → {channel or '*': time of the latest unsubscribe (its `ts`, or when it arrived if that
    was earlier: a sender's clock running ahead does not postpone it)} for unsubscribes received
    after the user record (which carries consent) was last written — a later re-import re-grants
    consent."""
    return request_unsubscribes(conn, user_ids).result()


def request_unsubscribes(
    conn: psycopg.Connection[Any], user_ids: list[str]
) -> Pending[dict[str, dict[str, datetime]]]:
    """`unsubscribes`, sent now and read later."""

    def parse(rows: list[Any]) -> dict[str, dict[str, datetime]]:
        out: dict[str, dict[str, datetime]] = defaultdict(dict)
        for r in rows:
            out[r["user_id"]][r["channel"]] = r["ts"]
        return out

    return request(
        conn,
        f"""select e.user_id, {UNSUBSCRIBED_CHANNEL} as channel,
                  max(least(e.ts, e.received_at)) as ts
           from events e join users u on u.id = e.user_id
           where e.user_id = any(%(users)s) and e.type = 'unsubscribe' and e.received_at >= u.updated_at
           group by 1, 2""",
        {"users": user_ids},
        parse,
    )


_ARM_STATS = """
select m.user_id, m.channel, m.send_hour, count(*) as sent,
       count(*) filter (where exists (select 1 from events e
                                      where e.message_id = m.id::text and e.user_id = m.user_id
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
    return request_arm_counts(conn, since=since, user_ids=user_ids).result()


def request_arm_counts(
    conn: psycopg.Connection[Any], *, since: datetime, user_ids: list[str] | None = None
) -> Pending[tuple[ArmCounts, dict[str, ArmCounts]]]:
    """`arm_counts`, sent now and read later."""

    def parse(rows: list[Any]) -> tuple[ArmCounts, dict[str, ArmCounts]]:
        overall = ArmCounts()
        per_user: dict[str, ArmCounts] = defaultdict(ArmCounts)
        for r in rows:
            overall.add(r["channel"], r["send_hour"], r["sent"], r["engaged"])
            per_user[r["user_id"]].add(r["channel"], r["send_hour"], r["sent"], r["engaged"])
        return overall, per_user

    params = {"since": since, "all": user_ids is None, "users": user_ids or []}
    return request(conn, _ARM_STATS, params, parse)
