"""The caps read (`runs.send_times`) on a `messages` table that was empty when a worker's session
first ran it (a new install, or a vacuum after a purge): once the worker's own sends have filled the
table, the read must use the user index, not a plan cached from the empty table that scans every
message written so far."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from msg_support import add_users, queue_messages, seq_scans

from tagloop.tools.store import runs

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def test_send_times_uses_the_user_index_once_the_table_has_filled(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    # ids no earlier test used: the column statistics an autovacuum analyze took of earlier tests'
    # messages stay (analyzing an empty table keeps them), and if they name these users as the most
    # common values, a sequential scan is the right plan for them
    users = add_users(db, 60, prefix="plan-u")
    db.commit()
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("vacuum messages")  # empty now, and its statistics say so
        # and they stay so: an autovacuum analyze during the insert below (busy in a full test run)
        # would count its uncommitted rows as none and make any plan look as good as the index
        admin.execute("alter table messages set (autovacuum_enabled = false)")
    since = NOW - timedelta(days=7)
    for _ in range(14):  # psycopg prepares at the 5th; PostgreSQL tries 5 custom plans, then generic
        assert runs.send_times(db, users[:20], since=since, include_pending=True) == {}
    queue_messages(db, users, send_at=NOW)
    db.execute(  # the worker's sends fill the table: 6,000 more messages of the same decisions
        """insert into messages (id, decision_id, user_id, channel, title, body, send_at)
           select gen_random_uuid(), m.decision_id, m.user_id, m.channel, m.title, m.body,
                  m.send_at - make_interval(days => g)
           from messages m cross join generate_series(1, 100) as g"""
    )
    before = seq_scans(db, "messages")
    for _ in range(5):
        times = runs.send_times(db, users[:20], since=since, include_pending=True)
        assert sorted(times) == sorted(users[:20]) and all(len(t["webhook"]) == 8 for t in times.values())
    scans = seq_scans(db, "messages") - before
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("alter table messages reset (autovacuum_enabled)")
    assert scans == 0  # five sequential scans of 6,060 messages before the fix
