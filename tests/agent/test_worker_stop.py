"""The worker's decision loop: it stops between cycles once asked to, and each cycle decides at the
time it starts (not at the time the drain began) — against the real database and demo data."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from agent_support import load_demo

from tagloop.agent.settings import Settings
from tagloop.agent.worker import Worker

NOW = datetime(2026, 5, 4, 1, tzinfo=UTC)


def _worker(db: psycopg.Connection[Any], db_url: str, home: Path, **kwargs: Any) -> Worker:
    settings = Settings(
        home=home,
        database_url=db_url,
        cadences={"daily": "1d"},
        cadence_spread=0.0,
        run_batch_size=7,
        candidate_sources=["tags", "trending"],
    )
    return Worker(settings, db, channels={}, name="w", **kwargs)


def test_each_decision_cycle_reads_the_clock(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW)
    ticks = iter(NOW + timedelta(seconds=10 * i) for i in range(10_000))
    worker = _worker(db, db_url, tmp_path / "home", clock=lambda: next(ticks))
    report = worker.run_once(deliver=False)
    assert len(report.decided) == len(users)
    rows = db.execute("select distinct last_run_at from user_schedules order by 1").fetchall()
    db.commit()
    # 30 users in batches of 7: five cycles, each at its own time
    assert len(rows) == 5
    assert rows[0]["last_run_at"] > NOW


def test_a_stopping_worker_finishes_the_decision_cycle_under_way_and_starts_no_other(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    load_demo(db, tmp_path / "demo", NOW)
    stop = threading.Event()
    worker = _worker(db, db_url, tmp_path / "home", clock=lambda: NOW, on_claimed=lambda rows: stop.set())
    worker.run_forever(stop, 0.0, deliver=False)
    rows = db.execute(
        "select count(*) filter (where last_run_at is not null) as done, count(*) as due from user_schedules"
    ).fetchone()
    decided = db.execute("select count(*) as n from decisions").fetchone()
    db.commit()
    assert rows is not None and decided is not None
    assert rows["done"] == 7 and rows["due"] == 30  # one batch committed; the others wait for a worker
    assert decided["n"] == 7
