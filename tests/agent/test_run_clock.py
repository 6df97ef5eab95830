"""A run of several batches reads the clock per batch: a later batch's decisions and sends are
stamped (and checked against quiet hours and caps) at the time they happen, not when the run
started — `tagloop run --all` over many users takes minutes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import load_demo

from tagloop.agent import runner
from tagloop.agent.settings import Settings
from tagloop.tools.messaging.channels import DeliveryError, FileChannel, OutboundMessage

SEND_SECONDS = 0.7


class SlowFile(FileChannel):
    def send(self, message: OutboundMessage) -> None:
        time.sleep(SEND_SECONDS)  # a slow receiver
        super().send(message)


def test_later_batches_are_stamped_when_they_happen(
    db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = load_demo(db, tmp_path / "demo", datetime.now(UTC) - timedelta(hours=1), users=8)
    monkeypatch.setattr(runner, "BATCH", 4)
    settings = Settings(home=tmp_path / "home")
    outcomes = runner.run_users(
        db, settings, users, send_now=True, channels={"file": SlowFile(tmp_path / "o.jsonl")}
    )
    assert sum(o.delivered for o in outcomes) >= 4
    rows = db.execute(
        "select created_at, send_at, sent_at from messages where status = 'sent' order by created_at"
    ).fetchall()
    slack = timedelta(seconds=SEND_SECONDS / 2)
    assert rows[-1]["created_at"] - rows[0]["created_at"] > timedelta(seconds=SEND_SECONDS)  # two batches
    for r in rows:
        assert r["sent_at"] >= r["created_at"] - slack, r  # never sent before it existed
        assert r["send_at"] >= r["created_at"] - slack, r  # decided (and guarded) at the time too
    db.rollback()


class Refusing(FileChannel):
    def send(self, message: OutboundMessage) -> None:
        raise DeliveryError("receiver answered HTTP 400", retryable=False)


def test_a_run_reports_what_became_of_each_message(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """`delivered: false` alone hid a message the channel refused (dead at once) behind '1 message'."""
    users = load_demo(db, tmp_path / "demo", datetime.now(UTC) - timedelta(hours=1), users=3)
    settings = Settings(home=tmp_path / "home")
    refused = runner.run_users(
        db, settings, users[:2], send_now=True, channels={"file": Refusing(tmp_path / "o")}
    )
    assert [(o.outcome, o.delivered, o.delivery) for o in refused] == [("message", False, "dead")] * 2
    assert all(o.delivery_error == "receiver answered HTTP 400" for o in refused)
    sent = runner.run_users(
        db, settings, users[2:], send_now=True, channels={"file": FileChannel(tmp_path / "o")}
    )
    assert [(o.delivered, o.delivery, o.delivery_error) for o in sent] == [(True, "sent", None)]
    queued = runner.run_users(db, settings, users[2:], send_now=False, run_key="later")
    assert queued[0].delivery in ("pending", None) and not queued[0].delivered
