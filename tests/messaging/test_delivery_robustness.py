"""One bad message never takes down a delivery round: it is settled (dead-lettered) on its own and
every other message claimed with it is sent, retried or dead-lettered as usual — against the real
database, a local SMTP server and a local webhook receiver."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from msg_support import SECRET, Inbox, Receiver, add_users, queue_messages

from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.messaging.email import EmailChannel
from tagloop.tools.messaging.webhook import WebhookChannel

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
NO_QUIET = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), max_attempts=3)


def _messages(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "select id::text as id, user_id, status, attempts, last_error from messages"
    ).fetchall()
    conn.commit()
    return {r["id"]: r for r in rows}


def _set_address(conn: psycopg.Connection[Any], user: str, address: str) -> None:
    """As a row stored before addresses were validated (or written around the API)."""
    conn.execute(
        "update users set channels = jsonb_build_object('email', %(a)s::text) where id = %(u)s",
        {"a": address, "u": user},
    )
    conn.commit()


def test_bad_stored_email_addresses_are_dead_lettered_and_the_rest_of_the_batch_is_sent(
    db: psycopg.Connection[Any], smtp: tuple[str, Inbox]
) -> None:
    url, inbox = smtp
    users = add_users(db, 4, channel="email")
    _set_address(db, users[1], "e2@example.test\r\nBcc: evil@attacker.test")
    _set_address(db, users[2], "e3@example.test, victim@attacker.test")
    ids = dict(zip(users, queue_messages(db, users, send_at=NOW, channel="email"), strict=True))
    channel = EmailChannel(url, "tagloop@example.org", timeout=5)

    report = deliver_due(db, {"email": channel}, NO_QUIET, now=NOW, rng=np.random.default_rng(0))

    assert report.claimed == 4
    assert sorted(report.sent) == sorted([ids[users[0]], ids[users[3]]])
    assert sorted(report.dead) == sorted([ids[users[1]], ids[users[2]]])
    rows = _messages(db)
    assert {r["status"] for r in rows.values()} == {"sent", "dead"}  # nothing left in 'sending'
    assert "email address" in rows[ids[users[1]]]["last_error"]
    recipients = sorted(r for mail in inbox.mails for r in mail.rcpt_tos)
    assert recipients == [f"{users[0]}@example.org", f"{users[3]}@example.org"]
    for mail in inbox.mails:
        assert message_from_bytes(mail.content, policy=policy.default)["Bcc"] is None
    later = deliver_due(
        db, {"email": channel}, NO_QUIET, now=NOW + timedelta(hours=2), rng=np.random.default_rng(1)
    )
    assert later.claimed == 0  # dead, not retried


class Flaky:
    """A channel that raises an unexpected exception (not a DeliveryError) for one user."""

    name = "webhook"

    def __init__(self, bad_user: str) -> None:
        self.bad_user = bad_user
        self.sent: list[str] = []

    def send(self, message: OutboundMessage) -> None:
        if message.user_id == self.bad_user:
            raise UnicodeEncodeError("ascii", "é", 0, 1, "cannot encode")
        self.sent.append(message.user_id)


def test_an_unexpected_channel_error_dead_letters_only_that_message(db: psycopg.Connection[Any]) -> None:
    users = add_users(db, 3)
    ids = dict(zip(users, queue_messages(db, users, send_at=NOW), strict=True))
    channel = Flaky(users[1])

    report = deliver_due(db, {"webhook": channel}, NO_QUIET, now=NOW, rng=np.random.default_rng(0))

    assert report.dead == [ids[users[1]]] and sorted(channel.sent) == [users[0], users[2]]
    rows = _messages(db)
    assert rows[ids[users[1]]]["status"] == "dead"
    assert "UnicodeEncodeError" in rows[ids[users[1]]]["last_error"]
    assert sorted(r["status"] for r in rows.values()) == ["dead", "sent", "sent"]
    later = deliver_due(
        db, {"webhook": channel}, NO_QUIET, now=NOW + timedelta(hours=2), rng=np.random.default_rng(1)
    )
    assert later.claimed == 0 and sorted(channel.sent) == [users[0], users[2]]


def test_an_error_outside_the_channel_does_not_leave_the_other_claimed_messages_stuck(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """A user row with a time zone no guard can read (written around the validation) used to raise
    out of the loop after the claim: the rest of the batch stayed 'sending' until the lease ran out."""
    users = add_users(db, 3)
    db.execute("update users set timezone = 'Mars/Olympus' where id = %(u)s", {"u": users[0]})
    db.commit()
    ids = dict(zip(users, queue_messages(db, users, send_at=NOW), strict=True))
    cfg = DeliveryConfig(quiet_start=time(22), quiet_end=time(7), max_attempts=3)  # quiet hours: reads tz

    report = deliver_due(
        db,
        {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)},
        cfg,
        now=NOW,
        rng=np.random.default_rng(0),
    )

    assert report.dead == [ids[users[0]]]
    assert sorted(report.sent) == sorted([ids[users[1]], ids[users[2]]])
    rows = _messages(db)
    assert "sending" not in {r["status"] for r in rows.values()}
    assert "Mars/Olympus" in rows[ids[users[0]]]["last_error"]
    assert sorted(receiver.accepted) == sorted([ids[users[1]], ids[users[2]]])


def test_a_message_claimed_again_after_its_last_attempt_is_dead_lettered_without_a_send(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """A poison message that kills the sender mid-send on every attempt: after the last allowed attempt
    it must not be sent (and crash the worker) again when its lease expires."""
    users = add_users(db, 2)
    poison, fine = queue_messages(db, users, send_at=NOW)
    db.execute(
        """update messages set status = 'sending', attempts = %(n)s, claimed_until = %(t)s
           where id = %(id)s""",
        {"n": NO_QUIET.max_attempts, "t": NOW - timedelta(seconds=1), "id": poison},
    )
    db.commit()

    report = deliver_due(
        db,
        {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)},
        NO_QUIET,
        now=NOW,
        rng=np.random.default_rng(0),
    )

    assert report.dead == [poison] and report.sent == [fine]
    assert list(receiver.accepted) == [fine]
    row = _messages(db)[poison]
    assert row["status"] == "dead" and "gave up after 3 attempts" in row["last_error"]


def test_retryable_errors_still_retry_and_dead_letter_after_the_last_attempt(
    db: psycopg.Connection[Any],
) -> None:
    """SPEC §5 unchanged: a transient DeliveryError is retried with backoff up to max_attempts."""

    class Down:
        name = "webhook"
        calls = 0

        def send(self, message: OutboundMessage) -> None:
            Down.calls += 1
            raise DeliveryError("webhook answered HTTP 503", retryable=True)

    [mid] = queue_messages(db, add_users(db, 1), send_at=NOW)
    now, outcomes = NOW, []
    for _ in range(5):
        report = deliver_due(db, {"webhook": Down()}, NO_QUIET, now=now, rng=np.random.default_rng(0))
        outcomes += ["retrying"] * len(report.retrying) + ["dead"] * len(report.dead)
        now += NO_QUIET.backoff_max + timedelta(minutes=1)
    assert outcomes == ["retrying", "retrying", "dead"] and Down.calls == NO_QUIET.max_attempts
    assert _messages(db)[mid]["attempts"] == NO_QUIET.max_attempts


def test_the_worker_loop_survives_an_unexpected_error(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagloop.agent.settings import Settings
    from tagloop.agent.worker import Worker
    from tagloop.tools.store import db as store_db

    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        worker = Worker(Settings(home=tmp_path / "home", database_url=db_url), conn, channels={}, name="w")
        stop, calls = threading.Event(), []

        def run_once(**kwargs: Any) -> None:
            calls.append(kwargs)
            if len(calls) == 1:
                raise ValueError("Header values may not contain linefeed or carriage return characters")
            stop.set()

        monkeypatch.setattr(worker, "run_once", run_once)
        worker.run_forever(stop, 0.0, deliver=True)
        assert len(calls) == 2  # the first failure was logged, the loop went on
    finally:
        conn.close()
