"""Event-triggered runs: which interactions are strong enough to re-decide for a user, enqueueing
them into `run_queue` (consumed by the scheduler/worker), and the per-user run lock.

Strong signals: an explicit positive of an item (like, save, add_to_playlist, share; without an
`item_id` it teaches the profile nothing and triggers nothing) or a burst of plays of a
tag new to the user (found by `tools.online`), from events of the last `trigger_max_age` (6 hours by
default): an import of last year's likes is history, not a reason to message anyone now. The
enqueue is an upsert keeping the earliest `due_at`, so a burst of signals coalesces into one run
`delay` after the first.

`run_lock` is a session-level Postgres advisory lock on (namespace, hashtext(user id)): any
process running the agent for a user takes it first, so one user never has two runs at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tagloop.tools.ingest.records import EventRecord

STRONG_TYPES = frozenset({"like", "save", "add_to_playlist", "share"})
RUN_LOCK_NAMESPACE = 0x74_61_67_6C  # "tagl": the advisory-lock class of per-user runs

_ENQUEUE = """
insert into run_queue as q (user_id, due_at, trigger, reason)
select u.user_id, %(due_at)s, 'event', u.reason
from unnest(%(users)s::text[], %(reasons)s::text[]) as u(user_id, reason)
order by u.user_id
on conflict (user_id) do update
    set due_at = least(q.due_at, excluded.due_at),
        reason = case when excluded.due_at < q.due_at then excluded.reason else q.reason end
"""


def strong_signals(
    events: Iterable[EventRecord], bursts: Mapping[str, int], *, since: datetime | None = None
) -> dict[str, str]:
    """user id → why a run is due (the first strong event type, or a new-tag burst). Only events at
    or after `since` count (a history import or a late backfill is not a real-time signal), and a
    burst only for a user with such an event."""
    reasons: dict[str, str] = {}
    recent: set[str] = set()
    for e in events:
        if since is not None and e.ts < since:
            continue
        recent.add(e.user_id)
        if e.type in STRONG_TYPES and e.item_id and e.user_id not in reasons:  # a like of nothing: no signal
            reasons[e.user_id] = e.type
    for user_id, tag_id in bursts.items():
        if user_id in recent:
            reasons.setdefault(user_id, f"burst:tag:{tag_id}")
    return reasons


def enqueue_runs(
    conn: psycopg.Connection[Any], reasons: Mapping[str, str], *, now: datetime, delay: timedelta
) -> int:
    """Schedule an event-triggered run `delay` from now for each user (earliest due time wins)."""
    if not reasons:
        return 0
    users = sorted(reasons)
    conn.execute(_ENQUEUE, {"users": users, "reasons": [reasons[u] for u in users], "due_at": now + delay})
    return len(users)


def queue_depth(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) as n from run_queue").fetchone()
    return int(row["n"]) if row else 0


@contextmanager
def run_lock(conn: psycopg.Connection[Any], user_id: str, *, wait: bool = False) -> Iterator[bool]:
    """Hold the user's run lock for the block; yields False (and holds nothing) when another session
    has it and `wait` is False. Session-level, so it survives the run's own commits."""
    params = {"ns": RUN_LOCK_NAMESPACE, "user": user_id}
    if wait:
        conn.execute("select pg_advisory_lock(%(ns)s, hashtext(%(user)s))", params)
        got = True
    else:
        row = conn.execute("select pg_try_advisory_lock(%(ns)s, hashtext(%(user)s)) as ok", params).fetchone()
        got = bool(row and row["ok"])
    if not conn.autocommit:
        conn.commit()
    try:
        yield got
    finally:
        if got:
            conn.execute("select pg_advisory_unlock(%(ns)s, hashtext(%(user)s))", params)
            if not conn.autocommit:
                conn.commit()
