"""A worker asked to stop (SIGINT/SIGTERM → its stop event) finishes the send under way and hands the
rest of its claim back at once, instead of draining everything due first — against the real
database and a slow local webhook receiver."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from msg_support import SECRET, Receiver, add_users, queue_messages

from tagloop.agent.settings import Settings
from tagloop.agent.worker import Worker
from tagloop.tools.messaging.webhook import WebhookChannel
from tagloop.tools.store import outbox as store

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)


def _stop_on_first_request(rec: Receiver, stop: threading.Event) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 30
        while not rec.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()  # as the SIGTERM handler of `tagloop worker` does, while the first send is under way

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_stopping_worker_finishes_the_send_under_way_and_releases_the_rest_of_its_claim(
    db: psycopg.Connection[Any], db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    ids = queue_messages(db, add_users(db, 6), send_at=NOW - timedelta(minutes=1))
    receiver.delay = 0.5
    settings = Settings(home=tmp_path / "home", database_url=db_url, delivery_max_attempts=6)
    channel = WebhookChannel(receiver.url, SECRET, allow_private=True, timeout=5)
    worker = Worker(settings, db, channels={"webhook": channel}, clock=lambda: NOW, name="w")
    stop = threading.Event()
    watcher = _stop_on_first_request(receiver, stop)
    started = time.monotonic()
    worker.run_forever(stop, 0.0, decide_runs=False)
    watcher.join()
    assert time.monotonic() - started < 3  # one send of 0.5 s, not all six
    assert len(receiver.seen) == 1
    rows = db.execute(
        "select id::text as id, status, attempts, claimed_until, next_attempt_at from messages"
    ).fetchall()
    db.commit()
    sent = [r for r in rows if r["status"] == "sent"]
    rest = [r for r in rows if r["status"] != "sent"]
    assert len(sent) == 1 and sent[0]["id"] == receiver.seen[0]["headers"]["webhook-id"]
    assert {r["status"] for r in rest} == {"pending"}
    assert all(r["attempts"] == 0 and r["claimed_until"] is None for r in rest)  # no attempt spent
    # another worker takes them at once, not after the lease
    with db.transaction():
        again = store.claim_due(db, now=NOW, limit=100)
    assert sorted(str(r["id"]) for r in again) == sorted(r["id"] for r in rest)
    assert set(ids) == {r["id"] for r in rows}
    channel.close()


def test_a_stopping_worker_starts_no_further_retry_round(
    db: psycopg.Connection[Any], db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    """A failing receiver: without the stop check the worker went through every retry round."""
    queue_messages(db, add_users(db, 3), send_at=NOW - timedelta(minutes=1))
    receiver.fail_rate, receiver.delay = 1.0, 0.2
    settings = Settings(
        home=tmp_path / "home", database_url=db_url, delivery_max_attempts=6, delivery_backoff_seconds=0
    )
    channel = WebhookChannel(receiver.url, SECRET, allow_private=True, timeout=5)
    worker = Worker(settings, db, channels={"webhook": channel}, clock=lambda: NOW, name="w")
    stop = threading.Event()
    watcher = _stop_on_first_request(receiver, stop)
    report = worker.run_once(decide_runs=False, stop=stop)
    watcher.join()
    assert len(receiver.seen) == 1
    assert report.delivery.summary()["retrying"] == 1 and report.delivery.summary()["released"] == 2
    statuses = db.execute("select status, count(*) as n from messages group by 1").fetchall()
    db.commit()
    assert {r["status"]: r["n"] for r in statuses} == {"pending": 3}
    channel.close()
