"""Delivery against other senders and late news, on the real database: a batch slower than its lease
never sends what another worker claimed since, two workers sending to one user respect the caps,
and an unsubscribe stored while a batch is under way (or dated a little ahead) stops the sends after
it. Each of these went wrong before messages were checked one by one at their own send time."""

from __future__ import annotations

import threading
import time as clock
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from msg_support import add_users, queue_messages

from tagloop.policies import in_holdout
from tagloop.policies.config import ChannelCap
from tagloop.tools.messaging.channels import OutboundMessage
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.store import db as store_db

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
CFG = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), lease=timedelta(seconds=30))


@dataclass
class Hooked:
    """A channel that records each send and runs `before(n, message)` first (n: sends so far)."""

    before: Callable[[int, OutboundMessage], None] = lambda n, m: None
    sent: list[str] = field(default_factory=list)
    name: str = "webhook"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutboundMessage) -> None:
        self.before(len(self.sent), message)
        with self.lock:
            self.sent.append(message.user_id)


def _other(db_url: str) -> psycopg.Connection[Any]:
    return store_db.connect(db_url, migrate_schema=False)


def test_a_batch_slower_than_its_lease_does_not_send_what_another_worker_claimed(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    users = add_users(db, 4)
    queue_messages(db, users, send_at=NOW - timedelta(minutes=1))
    db.commit()
    other = _other(db_url)
    late = Hooked()

    def slow_first_send(n: int, message: OutboundMessage) -> None:
        if n == 0:  # meanwhile the batch's lease runs out and a second worker claims the rest
            report = deliver_due(
                other,
                {"webhook": late},
                CFG,
                now=NOW + CFG.lease + timedelta(seconds=1),
                rng=np.random.default_rng(1),
            )
            assert len(report.sent) == 3

    first = Hooked(before=slow_first_send)
    try:
        report = deliver_due(db, {"webhook": first}, CFG, now=NOW, rng=np.random.default_rng(0))
    finally:
        other.close()
    assert report.claimed == 4 and len(report.sent) == 1 and len(report.lost) == 3
    assert sorted(first.sent + late.sent) == sorted(users)  # each user exactly once


def test_two_workers_sending_to_one_user_respect_the_cap(db: psycopg.Connection[Any], db_url: str) -> None:
    (user,) = add_users(db, 1)
    first_id = queue_messages(db, [user], send_at=NOW - timedelta(minutes=2))[0]
    second_id = queue_messages(db, [user], send_at=NOW - timedelta(minutes=1))[0]
    db.commit()
    cfg = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), caps={"webhook": ChannelCap(per_day=1)})
    other = _other(db_url)
    results: dict[str, Any] = {}

    def meanwhile(n: int, message: OutboundMessage) -> None:
        worker = threading.Thread(
            target=lambda: results.update(
                report=deliver_due(
                    other, {"webhook": second}, cfg, now=NOW, rng=np.random.default_rng(1), ids=[second_id]
                )
            )
        )
        worker.start()
        clock.sleep(0.5)  # the second worker has claimed its message and waits for this send to finish
        results["thread"] = worker

    first, second = Hooked(before=meanwhile), Hooked()
    try:
        report = deliver_due(
            db, {"webhook": first}, cfg, now=NOW, rng=np.random.default_rng(0), ids=[first_id]
        )
        results["thread"].join(timeout=30)
    finally:
        other.close()
    assert report.sent == [first_id] and first.sent == [user]
    assert second.sent == [] and results["report"].deferred == [second_id]


def test_an_unsubscribe_stored_during_a_batch_stops_the_sends_after_it(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    users = add_users(db, 3)
    now = datetime.now(UTC)
    queue_messages(db, users, send_at=now - timedelta(minutes=1))
    db.commit()
    other = _other(db_url)

    def unsubscribe_the_others(n: int, message: OutboundMessage) -> None:
        if n == 0:  # the sender's clock runs two minutes ahead: the unsubscribe still counts
            for user in set(users) - {message.user_id}:
                other.execute(
                    "insert into events (id, user_id, type, ts) values (%(id)s, %(u)s, 'unsubscribe', %(t)s)",
                    {"id": f"unsub-{user}", "u": user, "t": now + timedelta(minutes=2)},
                )
            other.commit()

    channel = Hooked(before=unsubscribe_the_others)
    try:
        report = deliver_due(db, {"webhook": channel}, CFG, now=now, rng=np.random.default_rng(0))
    finally:
        other.close()
    assert len(channel.sent) == 1 and len(report.sent) == 1 and len(report.cancelled) == 2


def test_a_holdout_that_grew_since_enqueue_cancels_its_users_messages(db: psycopg.Connection[Any]) -> None:
    users = add_users(db, 40)
    queue_messages(db, users, send_at=NOW - timedelta(minutes=1))
    db.commit()
    cfg = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), holdout_share=0.5, holdout_salt="s")
    channel = Hooked()
    report = deliver_due(db, {"webhook": channel}, cfg, now=NOW, rng=np.random.default_rng(0))
    held = {u for u in users if in_holdout(u, 0.5, "s")}
    assert 0 < len(held) < len(users)
    assert set(channel.sent) == set(users) - held and len(report.cancelled) == len(held)


def test_a_slow_batch_keeps_its_claim_and_spends_one_attempt_per_send(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    """Claims used to lapse under a slow receiver: another worker claimed the rest (an attempt spent
    per claim) and messages were dead-lettered after 0-1 real sends. A batch now renews its lease."""
    users = add_users(db, 8)
    now = datetime.now(UTC)
    queue_messages(db, users, send_at=now - timedelta(minutes=1))
    db.commit()
    cfg = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), lease=timedelta(seconds=2))
    slow = Hooked(before=lambda n, m: clock.sleep(0.5))  # 8 sends: 4 s, twice the first lease
    result: dict[str, Any] = {}
    first = _other(db_url)
    worker = threading.Thread(
        target=lambda: result.update(
            report=deliver_due(first, {"webhook": slow}, cfg, now=now, rng=np.random.default_rng(0))
        )
    )
    worker.start()
    second = _other(db_url)
    try:
        clock.sleep(2.4)  # the first lease has run out by the clock
        rival = deliver_due(
            second, {"webhook": Hooked()}, cfg, now=datetime.now(UTC), rng=np.random.default_rng(1)
        )
        worker.join(timeout=30)
    finally:
        first.close()
        second.close()
    assert rival.claimed == 0
    assert len(result["report"].sent) == 8 and result["report"].lost == []
    attempts = db.execute("select attempts from messages").fetchall()
    assert [r["attempts"] for r in attempts] == [1] * 8
