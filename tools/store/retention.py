"""Retention: deleting what the agent wrote longer ago than a cutoff (`tagloop db purge`), so the
decisions and messages a scheduled agent writes for every user every period do not grow forever.

What goes, for rows older than the cutoff:
- messages that are done with: sent, dead or cancelled (a pending or sending message stays, whatever
  its age: it has not been delivered or given up yet), aged by when they were sent; a sent message's
  recipient (id, user, channel) is kept in `unsubscribe_recipients`, so the unsubscribe link of an
  old mail still works;
- decisions left without a message (with theirs, through the cascade, their feedback rows).

Events are not purged: they are each user's seen set (what is never recommended again: the batch
history, the CF and tag searches' filters), the training data and the profiles' source, and the
consent record (unsubscribes). Deleting old ones would make the agent propose what users already
played or saved; that needs a compact seen set kept apart first.

The cutoff may not be later than `MIN_AGE` before now: the agent reads 90 days of sent messages and
their opens/clicks (the channel and send-hour bandits' evidence, agent/reads.py ARMS_WINDOW), so a
shorter retention would change its decisions without saying so.

Users are taken `USERS_PER_BATCH` at a time in id order, each batch committed before the next is
read, through the (user, time) indexes, so a purge of a large store holds no lock for long, can be
stopped and run again, and reports progress. A dry run counts the same rows and deletes nothing.

Measured with `tagloop db purge` on a copy of bench/agent.py's database (10,000 users): 500,000
decisions with their sent messages in 6.0 s. Without migration 0083's index on
messages(decision_id), 50,000 decisions took 146 s: each one's foreign-key cascade scanned the
messages table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools.errors import InvalidInput

MIN_AGE = timedelta(days=90)
USERS_PER_BATCH = 1_000
DONE = ["sent", "dead", "cancelled", "failed"]  # message statuses nothing will change any more

# by when a message was sent (the bandits' window, runs._ARM_STATS), else made; sent_at is never
# before created_at, so the created_at bound holds too and keeps the (user, created_at) index usable
_OLD_MESSAGE = "m.created_at < %(cutoff)s and coalesce(m.sent_at, m.created_at) < %(cutoff)s"
_MESSAGES = f"""
from messages m
where m.user_id = any(%(users)s) and {_OLD_MESSAGE} and m.status = any(%(done)s)
"""
# the recipient of a sent message kept for its unsubscribe link (mail links never expire)
_KEEP_RECIPIENTS = f"""
insert into unsubscribe_recipients (message_id, user_id, channel)
select m.id, m.user_id, m.channel {_MESSAGES} and m.status = 'sent'
on conflict (message_id) do nothing
"""
# a decision goes when no message of its stays: in a dry run its old finished ones still exist
_DECISIONS = f"""
from decisions d
where d.user_id = any(%(users)s) and d.created_at < %(cutoff)s
  and not exists (select 1 from messages m
                  where m.decision_id = d.id and not ({_OLD_MESSAGE} and m.status = any(%(done)s)))
"""


@dataclass
class Purged:
    messages: int = 0
    decisions: int = 0
    users: int = 0  # users looked at

    def add(self, other: Purged) -> None:
        self.messages += other.messages
        self.decisions += other.decisions
        self.users += other.users


def check_cutoff(cutoff: datetime, now: datetime) -> None:
    if cutoff > now - MIN_AGE:
        raise InvalidInput(
            f"the cutoff {cutoff:%Y-%m-%d} is less than {MIN_AGE.days} days ago; the agent reads "
            f"{MIN_AGE.days} days of sent messages (its bandits' evidence), so keep at least that"
        )


def user_batches(conn: psycopg.Connection[Any], size: int | None = None) -> Iterator[list[str]]:
    """Every user id, `size` (`USERS_PER_BATCH`) at a time in id order (keyset pagination)."""
    size = size or USERS_PER_BATCH
    after = ""  # ids are never empty
    while True:
        with conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(
                "select id from users where id > %(after)s order by id limit %(n)s",
                {"after": after, "n": size},
            ).fetchall()
        if not rows:
            return
        yield [r[0] for r in rows]
        after = rows[-1][0]


def purge_users(
    conn: psycopg.Connection[Any], users: list[str], cutoff: datetime, *, dry_run: bool
) -> Purged:
    """One batch of users, in the caller's transaction."""
    params: dict[str, Any] = {"users": users, "cutoff": cutoff, "done": DONE}
    rows = _count if dry_run else _delete
    if not dry_run:
        conn.execute(_KEEP_RECIPIENTS, params)
    return Purged(
        messages=rows(conn, _MESSAGES, params),
        decisions=rows(conn, _DECISIONS, params),
        users=len(users),
    )


def purge(
    conn: psycopg.Connection[Any],
    cutoff: datetime,
    now: datetime,
    *,
    dry_run: bool = False,
    progress: Callable[[Purged], None] | None = None,
) -> Purged:
    """Every user's old rows, a batch of users per transaction: each batch is committed before the
    next is read (a transaction open on `conn` when this is called is committed first)."""
    check_cutoff(cutoff, now)
    conn.commit()
    total = Purged()
    for users in user_batches(conn):
        total.add(purge_users(conn, users, cutoff, dry_run=dry_run))
        conn.commit()
        if progress:
            progress(total)
    return total


def _count(conn: psycopg.Connection[Any], rows: str, params: dict[str, Any]) -> int:
    """How many rows `rows` (a `from … where …` clause) names."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("select count(*) " + rows, params).fetchone()
    return int(row[0]) if row else 0


def _delete(conn: psycopg.Connection[Any], rows: str, params: dict[str, Any]) -> int:
    """Delete the rows `rows` names (`delete from T a where …`); how many went."""
    with conn.cursor() as cur:
        cur.execute("delete " + rows.strip(), params)
        return max(cur.rowcount, 0)
