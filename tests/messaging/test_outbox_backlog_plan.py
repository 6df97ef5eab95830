"""The outbox gauges are computed at every /metrics scrape (`outbox_backlog`): on a table of
mostly sent messages they must not read the whole table, dead letters included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from msg_support import add_users, queue_messages, seq_scans

from tagloop.tools.store.outbox import dead_letters, outbox_backlog

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def test_the_backlog_and_dead_letters_are_read_from_indexes(db: psycopg.Connection[Any], db_url: str) -> None:
    users = add_users(db, 30)
    queue_messages(db, users, send_at=NOW)
    db.execute(  # a deployment's history: thousands of sent messages, a few dead
        """insert into messages (id, decision_id, user_id, channel, title, body, send_at, status, sent_at)
           select gen_random_uuid(), m.decision_id, m.user_id, m.channel, m.title, m.body,
                  m.send_at - make_interval(days => g), 'sent', m.send_at - make_interval(days => g)
           from messages m cross join generate_series(1, 200) as g"""
    )
    db.execute(
        """update messages set status = 'dead', dead_at = %(now)s, last_error = 'HTTP 400'
           where id in (select id from messages where status = 'pending' limit 3)""",
        {"now": NOW},
    )
    db.commit()
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("vacuum analyze messages")
    before = seq_scans(db, "messages")
    assert outbox_backlog(db)["dead"] == 3
    assert len(dead_letters(db, 10)) == 3
    assert seq_scans(db, "messages") - before == 0
