"""The profile folder: committed events are folded into their users' profiles from the event log,
in `events.seq` order from a checkpoint, big batches at a time, after the ingest request has
already answered 202.

One fold (`fold_pending`) is one transaction: take the folder lock (one folder at a time), find
the settled horizon, read the events after the checkpoint up to it, fold them with
`tools.online.apply_events`, enqueue the runs they trigger (`tools.triggers`) and advance the
checkpoint (`profile_fold_state.last_seq`) — so each event is folded exactly once, or not at all
when the process dies mid-fold.

The settled horizon. `seq` is taken when a row is inserted, not when it commits, so a transaction
may commit seq 101 while seq 100 is still in flight; folding past 100 would skip it forever. Every
ingest transaction therefore takes a shared advisory lock (`hold_ingest_lock`) before it inserts.
The horizon is found by reading the sequence's last value S, then the virtual transaction ids
holding that lock, then waiting (bounded) until none of them holds it any more: any transaction
that owns a seq <= S took the lock before it took the seq, so it was among the holders, and once
they are all gone every seq <= S is committed or never will be. The wait is on ingest
transactions only (milliseconds), never on unrelated long transactions, as an xmin horizon would.
Writers that do not take the lock (file imports, `eval simulate`) rebuild or fold profiles
themselves; `rebuild_profiles` sets each user's `folded_seq` so the folder never counts an event
twice.

Read-your-writes: `fold_user` folds one user's pending events (under the same folder lock, up to a
settled horizon) and marks them in `user_profiles.folded_seq`, which the folder then skips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from tagloop.tools import online, triggers
from tagloop.tools.ingest.records import EventRecord

LOCK_NS = 0x74_61_67_66  # "tagf": the advisory-lock class of the folder
FOLD_LOCK = {"ns": LOCK_NS, "key": 0}  # one folder at a time
INGEST_LOCK = {"ns": LOCK_NS, "key": 1}  # held shared by every ingest transaction until it ends
SETTLE_TIMEOUT_S = 2.0
SETTLE_POLL_S = 0.003

_LAST_SEQ = """
select coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass), 0) as s
"""
_HOLDERS = """
select array_agg(virtualtransaction) as holders from pg_locks
where locktype = 'advisory' and classid = %(ns)s::oid and objid = %(key)s::oid and objsubid = 2
  and granted and pid <> pg_backend_pid()
"""
_STILL_HELD = """
select count(*) as n from pg_locks
where locktype = 'advisory' and classid = %(ns)s::oid and objid = %(key)s::oid and objsubid = 2
  and virtualtransaction = any(%(holders)s)
"""
_CHECKPOINT = "select last_seq from profile_fold_state where id = 1"
_ADVANCE = """
insert into profile_fold_state as f (id, last_seq, folded_at) values (1, %(seq)s, now())
on conflict (id) do update set last_seq = greatest(f.last_seq, excluded.last_seq), folded_at = now()
"""
_PENDING = """
select e.seq, e.id, e.user_id, e.type, e.item_id, e.ts, e.value, e.message_id, e.context
from events e left join user_profiles p on p.user_id = e.user_id
where e.seq > %(after)s and e.seq <= %(upto)s and e.seq > coalesce(p.folded_seq, 0)
order by e.seq
"""
_USER_PENDING = """
select e.seq, e.id, e.user_id, e.type, e.item_id, e.ts, e.value, e.message_id, e.context
from events e
where e.user_id = %(user)s and e.seq > %(after)s and e.seq <= %(upto)s
  and e.seq > coalesce((select folded_seq from user_profiles where user_id = %(user)s), 0)
order by e.seq
"""


class FoldSettings(Protocol):
    profile_half_life_days: float
    trigger_delay_seconds: float


@dataclass(frozen=True)
class FoldOptions:
    online: online.OnlineConfig = field(default_factory=online.OnlineConfig)
    trigger_delay: timedelta = timedelta(seconds=30)
    max_events: int = 20_000  # per fold transaction

    @classmethod
    def from_settings(cls, settings: FoldSettings) -> FoldOptions:
        return cls(
            online.OnlineConfig(half_life_days=settings.profile_half_life_days),
            timedelta(seconds=settings.trigger_delay_seconds),
        )


@dataclass(frozen=True)
class FoldReport:
    events: int = 0
    users: int = 0
    enqueued: int = 0
    last_seq: int | None = None  # the checkpoint after this fold; None when the fold did not run


def hold_ingest_lock(conn: psycopg.Connection[Any]) -> None:
    """Mark the caller's transaction as one that may insert events (until it ends)."""
    conn.execute("select pg_advisory_xact_lock_shared(%(ns)s, %(key)s)", INGEST_LOCK)


def settled_horizon(conn: psycopg.Connection[Any], timeout_s: float = SETTLE_TIMEOUT_S) -> int | None:
    """A seq S such that no event with seq <= S can still be committed (None: not settled in time)."""
    row = conn.execute(_LAST_SEQ).fetchone()
    seq = int(row["s"]) if row else 0
    got = conn.execute(_HOLDERS, INGEST_LOCK).fetchone()
    holders = (got or {}).get("holders") or []
    deadline = time.monotonic() + timeout_s
    while holders:
        still = conn.execute(_STILL_HELD, {**INGEST_LOCK, "holders": holders}).fetchone()
        if not still or not still["n"]:
            break
        if time.monotonic() > deadline:
            return None
        time.sleep(SETTLE_POLL_S)
    return seq


def checkpoint(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_CHECKPOINT).fetchone()
    return int(row["last_seq"]) if row else 0


def fold_pending(conn: psycopg.Connection[Any], options: FoldOptions, *, now: datetime) -> FoldReport:
    """Fold up to `options.max_events` events after the checkpoint in one committed transaction.
    Returns at once (last_seq None) when another session is folding."""
    with conn.transaction():
        locked = conn.execute("select pg_try_advisory_xact_lock(%(ns)s, %(key)s) as ok", FOLD_LOCK).fetchone()
        if not locked or not locked["ok"]:
            return FoldReport()
        after = checkpoint(conn)
        horizon = settled_horizon(conn)
        if horizon is None or horizon <= after:
            return FoldReport(last_seq=after)
        upto = min(horizon, after + options.max_events)
        rows = conn.execute(_PENDING, {"after": after, "upto": upto}).fetchall()
        report = _fold(conn, rows, options, now=now, mark_users=False)
        conn.execute(_ADVANCE, {"seq": upto})
    return FoldReport(report.events, report.users, report.enqueued, upto)


def fold_user(conn: psycopg.Connection[Any], user_id: str, options: FoldOptions, *, now: datetime) -> int:
    """Fold the user's committed events the folder has not reached yet (read-your-writes); commits.
    Returns the events folded (0 also when nothing settled within the timeout)."""
    with conn.transaction():
        after = checkpoint(conn)
        probe = {"user": user_id, "after": after, "upto": 2**62}
        if conn.execute(_USER_PENDING + " limit 1", probe).fetchone() is None:
            return 0
        conn.execute("select pg_advisory_xact_lock(%(ns)s, %(key)s)", FOLD_LOCK)
        horizon = settled_horizon(conn)
        if horizon is None:
            return 0
        rows = conn.execute(_USER_PENDING, {"user": user_id, "after": checkpoint(conn), "upto": horizon})
        return _fold(conn, rows.fetchall(), options, now=now, mark_users=True, upto=horizon).events


def _fold(
    conn: psycopg.Connection[Any],
    rows: list[dict[str, Any]],
    options: FoldOptions,
    *,
    now: datetime,
    mark_users: bool,
    upto: int | None = None,
) -> FoldReport:
    events = [
        EventRecord(
            r["id"],
            r["user_id"],
            r["type"],
            r["item_id"],
            r["ts"],
            r["value"],
            r["message_id"],
            r["context"] or {},
        )
        for r in rows
    ]
    if not events:
        return FoldReport()
    seqs = {r["id"]: int(r["seq"]) for r in rows}
    folded = online.apply_events(
        conn, events, now=now, config=options.online, seqs=seqs, folded_upto=upto if mark_users else None
    )
    reasons = triggers.strong_signals(events, folded.bursts)
    enqueued = triggers.enqueue_runs(conn, reasons, now=now, delay=options.trigger_delay)
    return FoldReport(len(events), folded.users, enqueued)
