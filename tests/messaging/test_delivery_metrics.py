"""Delivery metrics in the default Prometheus registry: messages by outcome, latency, send time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from msg_support import SECRET, Receiver, add_users, queue_messages
from prometheus_client import REGISTRY, generate_latest

from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.messaging.webhook import WebhookChannel

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sent_dead_and_latency_are_counted_per_channel(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    users = add_users(db, 3)
    queue_messages(db, users, send_at=NOW - timedelta(seconds=90))
    db.commit()
    before_sent = _value("tagloop_messages_total", channel="webhook", outcome="sent")
    before_dead = _value("tagloop_messages_total", channel="webhook", outcome="dead")
    before_late = _value("tagloop_delivery_latency_seconds_count", channel="webhook")
    before_sum = _value("tagloop_delivery_latency_seconds_sum", channel="webhook")
    cfg = DeliveryConfig(quiet_start=time(0), quiet_end=time(0))

    ok = WebhookChannel(receiver.url, SECRET, allow_private=True)
    report = deliver_due(db, {"webhook": ok}, cfg, now=NOW, rng=np.random.default_rng(1), limit=2)
    assert len(report.sent) == 2
    assert _value("tagloop_messages_total", channel="webhook", outcome="sent") == before_sent + 2
    assert _value("tagloop_delivery_latency_seconds_count", channel="webhook") == before_late + 2
    late = _value("tagloop_delivery_latency_seconds_sum", channel="webhook") - before_sum
    assert 0 <= late - 2 * 90.0 < 5.0  # each was sent 90 s after its send time (plus the batch's own time)
    assert _value("tagloop_delivery_send_seconds_count", channel="webhook") >= 2

    refused = WebhookChannel(receiver.url, SECRET)  # a loopback target, refused by the SSRF guard: dead
    report = deliver_due(db, {"webhook": refused}, cfg, now=NOW, rng=np.random.default_rng(1))
    assert len(report.dead) == 1
    assert _value("tagloop_messages_total", channel="webhook", outcome="dead") == before_dead + 1
    assert b"tagloop_messages_total" in generate_latest(REGISTRY)
