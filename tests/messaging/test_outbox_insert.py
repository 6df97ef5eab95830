"""Outbox inserts on a `decisions` table whose statistics say it is empty (a new install, or a
vacuum after a purge): the messages' foreign-key checks must still find their decisions by index,
not by a cached sequential scan that grows with every decision written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from msg_support import add_users, queue_messages, seq_scans

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def test_message_inserts_find_decisions_by_index_after_the_table_was_emptied(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    users = add_users(db, 40)
    db.commit()
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("vacuum decisions")  # empty now, and its statistics say so
    before = seq_scans(db, "decisions")
    queue_messages(db, users, send_at=NOW)  # a decision, then its message, per user
    assert db.execute("show enable_seqscan").fetchone() == {"enable_seqscan": "on"}  # restored
    after = seq_scans(db, "decisions")
    assert db.execute("select count(*) as n from messages").fetchone() == {"n": 40}
    assert after - before < 5  # one sequential scan of `decisions` per message before the fix
