"""Erasure against runs in flight (concurrency audit): a DELETE waits for a run deciding the user
and no run starts until it commits; a worker giving new users their cadence rows skips one erased
meanwhile."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from api_support import AUTH, seed
from fastapi.testclient import TestClient

from tagloop.tools import triggers
from tagloop.tools.store import runs


def test_an_erase_waits_for_the_run_deciding_the_user(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """The erase took no lock a run holds: a run that had read the user failed its insert (a 500)
    or, the id PUT again meanwhile, stored a decision made from the erased events."""
    seed(client)
    db.rollback()
    answers: list[int] = []
    with triggers.run_lock(db, "u1") as got:  # a run of u1 in flight (what POST /runs holds)
        assert got
        eraser = threading.Thread(
            target=lambda: answers.append(client.delete("/v1/users/u1", headers=AUTH).status_code)
        )
        eraser.start()
        time.sleep(1.0)
        assert eraser.is_alive() and not answers  # waiting for the run
        assert db.execute("select count(*) as n from users where id = 'u1'").fetchone() == {"n": 1}
        db.rollback()
    eraser.join(timeout=30)
    assert answers == [200]
    assert db.execute("select count(*) as n from users where id = 'u1'").fetchone() == {"n": 0}


def test_cadence_rows_skip_a_user_erased_meanwhile(db: psycopg.Connection[Any]) -> None:
    """The insert's foreign key failed the worker's whole cycle (nothing decided or delivered)."""
    db.execute("insert into users (id, timezone) values ('here', 'UTC')")
    now = datetime(2026, 3, 2, tzinfo=UTC)
    assert runs.ensure_schedules(db, "daily", [("here", now), ("erased", now)]) == 1
    assert [r["user_id"] for r in db.execute("select user_id from user_schedules")] == ["here"]
