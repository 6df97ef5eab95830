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
File imports take it too (for their one insert, which may run for seconds: reads that fold
meanwhile give up waiting after `SETTLE_TIMEOUT_S` and show the profile as folded so far). Writers
that do not take it (`eval simulate`, in a database of its own) rebuild or fold profiles
themselves. `rebuild_profiles` holds the folder lock too (`lock_for_rebuild`), reads events up to
a settled horizon and sets each user's `folded_seq` to it, so the folder never counts an event
twice nor skips one the rebuild did not read.

Batches. Most of a fold's cost is per user (read the profile, decay its tags, write it back), so
folding every request's events on its own would cost several times what folding many requests'
events at once does. With `min_events`, `fold_pending` first waits (outside any transaction, so
nothing is locked meanwhile) until that many events are pending or the oldest pending event is
`max_wait` old, whichever comes first: under load a fold covers seconds of events, when quiet an
event is folded at most `max_wait` after it arrived. Reads never wait for it (see below).

Read-your-writes: `fold_user` folds one user's pending events (under the same folder lock, up to a
settled horizon) and marks them in `user_profiles.folded_seq`, which the folder then skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import psycopg
from psycopg.rows import tuple_row

from tagloop.tools import online, triggers
from tagloop.tools.gc_pause import gc_paused
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
_OLDEST_AGE = """
select extract(epoch from clock_timestamp() - received_at)::float8 as age from events
where seq > %(after)s order by seq limit 1
"""
BATCH_POLL_S = 0.05
_CHECKPOINT = "select last_seq from profile_fold_state where id = 1"
_ADVANCE = """
insert into profile_fold_state as f (id, last_seq, folded_at) values (1, %(seq)s, now())
on conflict (id) do update set last_seq = greatest(f.last_seq, excluded.last_seq), folded_at = now()
"""
_PENDING = """
select e.seq, e.id, e.user_id, e.type, e.item_id, e.ts, e.value, e.message_id, e.context::text
from events e left join user_profiles p on p.user_id = e.user_id
where e.seq > %(after)s and e.seq <= %(upto)s and e.seq > coalesce(p.folded_seq, 0)
order by e.seq
"""
_USER_PENDING = """
select e.seq, e.id, e.user_id, e.type, e.item_id, e.ts, e.value, e.message_id, e.context::text
from events e
where e.user_id = %(user)s and e.seq > %(after)s and e.seq <= %(upto)s
  and e.seq > coalesce((select folded_seq from user_profiles where user_id = %(user)s), 0)
order by e.seq
"""


class FoldSettings(Protocol):
    profile_half_life_days: float
    trigger_delay_seconds: float
    trigger_max_age_seconds: float
    fold_min_events: int
    fold_max_wait_seconds: float


@dataclass(frozen=True)
class FoldOptions:
    online: online.OnlineConfig = field(default_factory=online.OnlineConfig)
    trigger_delay: timedelta = timedelta(seconds=30)
    trigger_max_age: timedelta = timedelta(hours=6)  # older events (imports, backfills) trigger no run
    max_events: int = 20_000  # per fold transaction
    min_events: int = 0  # fewer pending: wait for more, up to max_wait after the oldest arrived
    max_wait: timedelta = timedelta(0)

    @classmethod
    def from_settings(cls, settings: FoldSettings) -> FoldOptions:
        return cls(
            online.OnlineConfig(half_life_days=settings.profile_half_life_days),
            timedelta(seconds=settings.trigger_delay_seconds),
            trigger_max_age=timedelta(seconds=settings.trigger_max_age_seconds),
            min_events=settings.fold_min_events,
            max_wait=timedelta(seconds=settings.fold_max_wait_seconds),
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


def lock_for_rebuild(conn: psycopg.Connection[Any]) -> int:
    """Take the folder lock for the caller's transaction (no fold runs until it ends) and return the
    seq a profile rebuild reads events up to and marks as folded: the settled horizon, or while an
    ingest in flight keeps it from settling, the checkpoint (settled when the folder reached it).
    Either is at or past the checkpoint, so the folder never leaves out an event the rebuild did
    not count, nor counts one it did."""
    conn.execute("select pg_advisory_xact_lock(%(ns)s, %(key)s)", FOLD_LOCK)
    horizon = settled_horizon(conn)
    return horizon if horizon is not None else checkpoint(conn)


def checkpoint(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_CHECKPOINT).fetchone()
    return int(row["last_seq"]) if row else 0


def _share_niceness(conn: psycopg.Connection[Any]) -> None:
    """Give a local backend (over a Unix socket, so on this machine) the calling thread's niceness:
    the folder thread of `tagloop serve` runs at nice 10 so requests come first, and half of a
    fold's CPU is its backend's (reading the batch, writing thousands of profiles) — at nice 0
    that half stalled concurrent requests by ~150 ms at each fold. Linux only; otherwise a no-op."""
    host = conn.info.host
    pid = conn.info.backend_pid
    if not host.startswith("/") or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError, AttributeError):
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if nice <= os.getpriority(os.PRIO_PROCESS, pid):
            return
        with open(f"/proc/{pid}/comm") as comm:  # a postgres backend, not a reused pid
            if not comm.read().startswith("postgres"):
                return
        os.setpriority(os.PRIO_PROCESS, pid, nice)


def await_batch(conn: psycopg.Connection[Any], options: FoldOptions) -> None:
    """Wait until `options.min_events` events are pending (by seq) or the oldest pending one is
    `options.max_wait` old; return at once when nothing is pending. Only on an idle connection (its
    polls end their own transactions); in a caller's open transaction it does not wait."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    limit = options.max_wait.total_seconds()
    try:
        while True:
            after = checkpoint(conn)
            row = conn.execute(_LAST_SEQ).fetchone()
            if (int(row["s"]) if row else 0) - after >= options.min_events:
                return
            oldest = conn.execute(_OLDEST_AGE, {"after": after}).fetchone()
            if oldest is None or oldest["age"] >= limit:
                return
            conn.rollback()
            time.sleep(min(BATCH_POLL_S, limit - oldest["age"]))
    finally:
        conn.rollback()


def fold_pending(conn: psycopg.Connection[Any], options: FoldOptions, *, now: datetime) -> FoldReport:
    """Fold up to `options.max_events` events after the checkpoint in one committed transaction
    (first waiting for a batch, with `options.min_events`). Returns at once (last_seq None) when
    another session is folding. `now` is the clock when the call began; a wait for a batch moves
    it on by as long as it waited (the runs that events received meanwhile trigger are due a full
    `trigger_delay` after them)."""
    _share_niceness(conn)
    if options.min_events > 0:
        started = time.monotonic()
        await_batch(conn, options)
        now += timedelta(seconds=time.monotonic() - started)
    with conn.transaction():
        locked = conn.execute("select pg_try_advisory_xact_lock(%(ns)s, %(key)s) as ok", FOLD_LOCK).fetchone()
        if not locked or not locked["ok"]:
            return FoldReport()
        after = checkpoint(conn)
        horizon = settled_horizon(conn)
        if horizon is None or horizon <= after:
            return FoldReport(last_seq=after)
        upto = min(horizon, after + options.max_events)
        with gc_paused():  # tens of thousands of acyclic records: nothing for the collector to find
            rows = _rows(conn, _PENDING, {"after": after, "upto": upto})
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
        rows = _rows(conn, _USER_PENDING, {"user": user_id, "after": checkpoint(conn), "upto": horizon})
        return _fold(conn, rows, options, now=now, mark_users=True, upto=horizon).events


def _rows(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:  # tuples: tens of thousands of rows a fold
        return cur.execute(query, params).fetchall()


def _context(text: str | None) -> dict[str, Any]:
    """An event's stored context (jsonb as text) by orjson (a number beyond 64 bits reads as a float;
    the fold only reads strings from a context), the standard library for anything it refuses."""
    if not text or text == "{}":
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _fold(
    conn: psycopg.Connection[Any],
    rows: list[tuple[Any, ...]],
    options: FoldOptions,
    *,
    now: datetime,
    mark_users: bool,
    upto: int | None = None,
) -> FoldReport:
    """Fold rows of (seq, id, user_id, type, item_id, ts, value, message_id, context text)."""
    events = [
        EventRecord(id_, user_id, type_, item_id, ts, value, message_id, _context(context))
        for _, id_, user_id, type_, item_id, ts, value, message_id, context in rows
    ]
    if not events:
        return FoldReport()
    seqs = {r[1]: int(r[0]) for r in rows}
    folded = online.apply_events(
        conn, events, now=now, config=options.online, seqs=seqs, folded_upto=upto if mark_users else None
    )
    reasons = triggers.strong_signals(events, folded.bursts, since=now - options.trigger_max_age)
    enqueued = triggers.enqueue_runs(conn, reasons, now=now, delay=options.trigger_delay)
    return FoldReport(len(events), folded.users, enqueued)
