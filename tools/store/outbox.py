"""The message outbox from delivery's side: claiming due messages, leases, send outcomes, dead letters.

Delivery claims due messages with FOR UPDATE SKIP LOCKED, so any number of workers share the outbox
without sending a message twice. A claim is a lease (`claimed_until`): a message whose worker died
mid-send is claimed again once the lease expires (receivers dedupe on its id). Each send's outcome
(sent, retry later, dead-lettered, deferred by quiet hours or caps, cancelled) is one update in the
sender's transaction. Also the outbox at a glance (`tagloop outbox`, /metrics) and dead letters sent
back. Messages are written with their decisions (tools/store/decisions.py)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tagloop.tools.errors import InvalidInput
from tagloop.tools.store.runs import UNSUBSCRIBED_CHANNEL

_CLAIM = """
update messages m set status = 'sending', attempts = m.attempts + 1, claimed_until = %(lease_end)s
from users u
where u.id = m.user_id and m.id in (
    select id from messages
    where ((status = 'pending' and next_attempt_at <= %(now)s)
           or (status = 'sending' and claimed_until < %(now)s))
      and (%(any)s or id = any(%(ids)s::uuid[]))
      and (%(every_channel)s or channel = any(%(channels)s::text[]))
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
    channels: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Lease up to `limit` due messages (and expired leases) as 'sending' and return them with the
    user's address, consent and time zone; only those of `channels` when given (the ones this
    process can send: another process with more channels takes the rest). Commit before sending."""
    params = {
        "now": now,
        "lease_end": now + lease,
        "limit": limit,
        "any": ids is None,
        "ids": ids or [],
        "every_channel": channels is None,
        "channels": sorted(channels or ()),
    }
    return conn.execute(_CLAIM, params).fetchall()


DELIVERY_LOCK_SPACE = 0x74676D  # two-key advisory lock: one sender per user at a time (caps)

_TAKE = f"""
update messages m set claimed_until = %(lease_end)s
from users u
left join lateral (
    select array_agg(x.channel) as unsub_channels, array_agg(x.at) as unsub_times from (
        select {UNSUBSCRIBED_CHANNEL} as channel, max(least(e.ts, %(now)s)) as at
        from events e
        where e.user_id = u.id and e.type = 'unsubscribe' and e.received_at >= u.updated_at
        group by 1
    ) x
) us on true
where m.id = %(id)s and m.status = 'sending' and m.claimed_until = %(mine)s and u.id = m.user_id
returning u.channels ->> m.channel as address, u.consent, u.timezone, us.unsub_channels, us.unsub_times,
          array(select s.sent_at from messages s
                where s.user_id = m.user_id and s.channel = m.channel and s.status = 'sent'
                  and s.sent_at >= %(since)s order by s.sent_at) as sent
"""


def take_claimed(
    conn: psycopg.Connection[Any], row: dict[str, Any], *, now: datetime, lease: timedelta, since: datetime
) -> dict[str, Any] | None:
    """In the caller's transaction, just before a claimed message is checked and sent: wait for any
    other sender of the same user (a transaction-scoped advisory lock, so caps count what they sent),
    then lock the message if it is still this claim's (the batch's lease may have run out and another
    worker claimed it since: None, do not send) with a fresh lease, and read what the send-time
    checks need as of now: the user's address, consent, time zone, unsubscribes (channel → time;
    every unsubscribe stored by now counts, one whose `ts` lies ahead of this clock too) and this
    channel's sends since `since`."""
    conn.execute(
        "select pg_advisory_xact_lock(%(space)s, hashtext(%(user)s))",
        {"space": DELIVERY_LOCK_SPACE, "user": row["user_id"]},
    )
    params = {
        "id": row["id"],
        "mine": row["claimed_until"],
        "now": now,
        "lease_end": now + lease,
        "since": since,
    }
    found = conn.execute(_TAKE, params).fetchone()
    if found is None:
        return None
    unsubscribed = dict(zip(found.pop("unsub_channels") or [], found.pop("unsub_times") or [], strict=True))
    return {**found, "unsubscribed": unsubscribed}


def renew_claims(
    conn: psycopg.Connection[Any], ids: list[str], *, mine: datetime, until: datetime
) -> set[str]:
    """Extend this batch's lease (claimed until `mine`) on `ids` to `until`; returns the ids still
    this batch's (any other was claimed by another worker after the lease ran out)."""
    rows = conn.execute(
        """update messages set claimed_until = %(until)s
           where id = any(%(ids)s::uuid[]) and status = 'sending' and claimed_until = %(mine)s
           returning id::text as id""",
        {"ids": ids, "mine": mine, "until": until},
    ).fetchall()
    return {r["id"] for r in rows}


def release_claims(conn: psycopg.Connection[Any], ids: list[str], *, mine: datetime) -> list[str]:
    """Hand this batch's claim (claimed until `mine`) on `ids` back unsent: pending again, due when
    it was, without the attempt the claim counted. Returns the ids released (any other was claimed
    by another worker after the lease ran out)."""
    if not ids:
        return []
    rows = conn.execute(
        """update messages set status = 'pending', attempts = greatest(attempts - 1, 0), claimed_until = null
           where id = any(%(ids)s::uuid[]) and status = 'sending' and claimed_until = %(mine)s
           returning id::text as id""",
        {"ids": ids, "mine": mine},
    ).fetchall()
    return sorted(r["id"] for r in rows)


def mark_sent(
    conn: psycopg.Connection[Any], message_id: str, now: datetime, local_hour: int | None = None
) -> None:
    """Sent at `now`, in the user's local hour `local_hour` (None: unknown): a message that went out
    at another hour than its `send_hour` (sent late after an outage or retries, or the user moved
    to another time zone since the decision) loses its `send_hour`, as a deferred one does, so its
    opens do not credit an hour it was not sent at."""
    conn.execute(
        """update messages set status = 'sent', sent_at = %(now)s, last_error = null, claimed_until = null,
               send_hour = case when send_hour = %(hour)s then send_hour end
           where id = %(id)s""",
        {"id": message_id, "now": now, "hour": local_hour},
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
    """Back to 'pending' until `until` without spending an attempt (quiet hours, caps). The message
    no longer goes out at the send hour the bandit chose, so its `send_hour` is cleared: its opens
    and clicks still count for its channel, not for that hour's arm."""
    conn.execute(
        """update messages set status = 'pending', next_attempt_at = %(until)s, attempts = attempts - 1,
               last_error = %(r)s, claimed_until = null, send_hour = null where id = %(id)s""",
        {"id": message_id, "until": until, "r": reason[:500]},
    )


def cancel(conn: psycopg.Connection[Any], message_id: str, reason: str) -> None:
    conn.execute(
        """update messages set status = 'cancelled', last_error = %(r)s, claimed_until = null
           where id = %(id)s""",
        {"id": message_id, "r": reason[:500]},
    )


def dead_letters(conn: psycopg.Connection[Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Messages given up on, newest first: id, user, channel, attempts, last error, decision id, title.
    Read in the order of messages_dead_idx (dead_at desc; every dead letter has its dead_at), so the
    newest `limit` come from the index without sorting all dead letters."""
    return conn.execute(
        """select id, user_id, channel, attempts, last_error, dead_at, decision_id, title from messages
           where status = 'dead' order by dead_at desc limit %(n)s""",
        {"n": limit},
    ).fetchall()


def dead_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) as n from messages where status = 'dead'").fetchone()
    return int(row["n"]) if row else 0


# --- the outbox at a glance (`tagloop outbox`, /metrics) and dead letters sent back ------------------

OUTBOX_STATUSES = ("pending", "sending", "sent", "dead", "cancelled")


def outbox_counts(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Messages by channel and status: [{channel, status, n}] (reads the whole outbox)."""
    return conn.execute(
        "select channel, status, count(*) as n from messages group by 1, 2 order by 1, 2"
    ).fetchall()


def oldest_pending(conn: psycopg.Connection[Any], now: datetime) -> dict[str, Any] | None:
    """The pending message whose send time passed longest ago (id, channel, send_at, next_attempt_at,
    attempts), or None when no pending message is past its send time."""
    return conn.execute(
        """select id::text as id, channel, send_at, next_attempt_at, attempts from messages
           where status = 'pending' and send_at <= %(now)s order by send_at, id limit 1""",
        {"now": now},
    ).fetchone()


def due_count(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Pending messages due now (their next attempt time has come), from the due index."""
    row = conn.execute(
        "select count(*) as n from messages where status = 'pending' and next_attempt_at <= %(now)s",
        {"now": now},
    ).fetchone()
    return int(row["n"]) if row else 0


def expired_claims(conn: psycopg.Connection[Any], now: datetime) -> dict[str, Any]:
    """Messages claimed for sending whose lease ran out with no worker renewing it (the worker died
    or hung): `n`, and `oldest`, the lease end longest past (None when there are none). The next
    claim takes them again (`_CLAIM`), from the lease index."""
    row = conn.execute(
        """select count(*) as n, min(claimed_until) as oldest from messages
           where status = 'sending' and claimed_until < %(now)s""",
        {"now": now},
    ).fetchone()
    return {"n": int(row["n"]), "oldest": row["oldest"]} if row else {"n": 0, "oldest": None}


_BACKLOG = """
select (select count(*) from messages where status = 'pending') as pending,
       (select count(*) from messages where status = 'sending') as sending,
       (select count(*) from messages where status = 'dead') as dead
"""


def outbox_backlog(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Pending, sending and dead messages (for /metrics at scrape time), each counted from its
    partial index (tests/messaging/test_outbox_backlog_plan.py)."""
    row = conn.execute(_BACKLOG).fetchone()
    return {k: int(row[k]) for k in ("pending", "sending", "dead")} if row else {}


_STATUS_OF = """
select id::text as id, status, channel from messages where id = any(%(ids)s::uuid[]) for update
"""
_REQUEUE = """
update messages set status = 'pending', attempts = 0, send_at = %(now)s, next_attempt_at = %(now)s,
       claimed_until = null, dead_at = null
where status = 'dead' and (%(all)s or id = any(%(ids)s::uuid[]))
  and (%(channel)s::text is null or channel = %(channel)s::text)
returning id::text as id
"""


def retry_dead_letters(
    conn: psycopg.Connection[Any], *, ids: list[str] | None, channel: str | None, now: datetime
) -> list[str]:
    """Send dead letters again: `ids` (all of them dead, on `channel` when given) or, with None, every
    dead letter (on `channel`). Each goes back to 'pending' with its attempts reset, due at `now`
    (its `send_at` too, so the payload and the latency metric count from the retry); consent,
    unsubscribes, quiet hours and caps are checked again when it is sent. An id that is not a dead
    letter refuses the whole request (`InvalidInput` naming each), nothing requeued. Returns the
    requeued ids, in the caller's transaction."""
    if ids is not None:
        bad_form = [i for i in ids if not _is_uuid(i)]
        if bad_form:
            raise InvalidInput(f"--id {', '.join(map(repr, bad_form))}: not a message id (a UUID)")
        ids = list(dict.fromkeys(str(uuid.UUID(i.strip())) for i in ids))
        found = {r["id"]: r for r in conn.execute(_STATUS_OF, {"ids": ids})}
        problems = []
        for i in ids:
            row = found.get(i)
            if row is None:
                problems.append(f"{i}: no such message")
            elif row["status"] != "dead":
                problems.append(f"{i}: is {row['status']}, not dead (only dead letters are retried)")
            elif channel is not None and row["channel"] != channel:
                problems.append(f"{i}: is on channel {row['channel']!r}, not {channel!r}")
        if problems:
            raise InvalidInput("cannot retry: " + "; ".join(problems) + " — nothing was requeued")
    rows = conn.execute(
        _REQUEUE, {"now": now, "all": ids is None, "ids": ids or [], "channel": channel}
    ).fetchall()
    return sorted(r["id"] for r in rows)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True
