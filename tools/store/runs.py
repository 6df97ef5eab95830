"""Claiming agent runs: due rows of `run_queue` (event-triggered and manual requests) and
`user_schedules` (cadences), with FOR UPDATE SKIP LOCKED so any number of workers share them.

The claim is held for the caller's whole transaction: the worker claims, decides, records and
advances/deletes the rows, then commits once. A worker that dies rolls all of it back and the rows
become claimable again, so nothing is lost and a user is never run twice at once. A per-user
transaction-scoped advisory lock (`lock_users`; `wait_for_users` for runs outside the worker,
such as `POST /v1/users/{id}/runs`) also keeps a queued, a scheduled and a requested run of the same
user apart. Store functions never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

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
    """Give users without a `cadence` row one, first due at the given time. Returns rows added."""
    rows = list(first_runs)
    if not rows:
        return 0
    cur = conn.execute(
        """insert into user_schedules (user_id, cadence, next_run_at)
           select u, %(cadence)s, t from unnest(%(users)s::text[], %(times)s::timestamptz[]) as x(u, t)
           on conflict (user_id, cadence) do nothing""",
        {"cadence": cadence, "users": [u for u, _ in rows], "times": [t for _, t in rows]},
    )
    return cur.rowcount


def users_without_schedule(conn: psycopg.Connection[Any], cadence: str, limit: int = 10_000) -> list[str]:
    rows = conn.execute(
        """select u.id from users u where not exists
               (select 1 from user_schedules s where s.user_id = u.id and s.cadence = %(c)s)
           order by u.id limit %(n)s""",
        {"c": cadence, "n": limit},
    ).fetchall()
    return [r["id"] for r in rows]
