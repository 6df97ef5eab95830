"""`tagloop outbox status|retry` end to end through the entry point, and the outbox gauges of
/metrics: counts by status and channel, the oldest pending message's age, dead letters sent again
(attempts reset, due now, the send-time guards still applied), ids that are not dead letters refused
with nothing requeued — against the real database and a local webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from fastapi.testclient import TestClient
from msg_support import SECRET, Receiver, add_users, queue_messages

from tagloop.agent.http import create_app
from tagloop.agent.settings import Settings
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.messaging.webhook import WebhookChannel
from tagloop.tools.store import outbox as store

TAGLOOP = Path(sys.executable).with_name("tagloop")
NO_QUIET = DeliveryConfig(quiet_start=time(0), quiet_end=time(0))


def tagloop(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(TAGLOOP), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert result.returncode == code, f"tagloop {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


def _dead(conn: psycopg.Connection[Any], ids: list[str], at: datetime) -> None:
    for i in ids:
        conn.execute("update messages set attempts = 6 where id = %(id)s", {"id": i})
        store.mark_failed(conn, i, error="webhook answered HTTP 503", retry_in=None, now=at)
    conn.commit()


def _rows(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "select id::text as id, status, attempts, send_at, next_attempt_at, dead_at from messages"
    ).fetchall()
    conn.commit()
    return {r["id"]: r for r in rows}


def test_outbox_status_counts_by_status_and_channel_with_the_oldest_pending_age(
    tagloop_env: Path, db: psycopg.Connection[Any]
) -> None:
    empty = json.loads(tagloop("outbox", "status", "--json").stdout)
    assert empty["total"] == 0 and empty["oldest_pending"] is None
    assert empty["by_status"] == {"pending": 0, "sending": 0, "sent": 0, "dead": 0, "cancelled": 0}
    now = datetime.now(UTC)
    hooks = queue_messages(db, add_users(db, 4), send_at=now - timedelta(hours=2))
    db.execute("insert into users (id, timezone) values ('e1', 'UTC')")
    mails = queue_messages(db, ["e1"], send_at=now + timedelta(hours=1), channel="email")
    _dead(db, hooks[:2], now)
    store.mark_sent(db, hooks[2], now)
    db.commit()
    data = json.loads(tagloop("outbox", "status", "--json").stdout)
    assert data["total"] == 5 and data["due_now"] == 1
    assert data["by_status"] == {"pending": 2, "sending": 0, "sent": 1, "dead": 2, "cancelled": 0}
    assert data["by_channel"]["webhook"] == {"pending": 1, "sending": 0, "sent": 1, "dead": 2, "cancelled": 0}
    assert data["by_channel"]["email"]["pending"] == 1
    oldest = data["oldest_pending"]
    assert oldest["id"] == hooks[3] and oldest["channel"] == "webhook"  # the email is not due yet
    assert 2 * 3600 <= oldest["age_seconds"] < 2 * 3600 + 60
    for at in (data["at"], oldest["send_at"], oldest["next_attempt_at"]):
        assert "T" in at and datetime.fromisoformat(at).tzinfo is not None
    text = tagloop("outbox", "status").stdout
    assert "webhook" in text and "email" in text and "oldest 2.0 h past its send time" in text
    assert mails[0] not in text


def test_outbox_status_counts_claims_whose_worker_died_as_due(
    tagloop_env: Path, db: psycopg.Connection[Any]
) -> None:
    """A worker killed mid-batch leaves its claims 'sending' until their lease runs out; then they
    are due (the next claim takes them), and the status said 'due now 0, none past its send time'."""
    now = datetime.now(UTC)
    ids = queue_messages(db, add_users(db, 3), send_at=now - timedelta(minutes=10))
    claimed = store.claim_due(db, now=now - timedelta(minutes=2), limit=2, lease=timedelta(seconds=40))
    db.commit()  # ... and the worker dies: nobody renews or finishes the claim
    data = json.loads(tagloop("outbox", "status", "--json").stdout)
    assert data["by_status"]["sending"] == 2 and data["claims_expired"] == 2
    assert data["due_now"] == 3  # the one still pending and the two orphaned claims
    lease_end = datetime.fromisoformat(data["oldest_claim_expired_at"])
    assert abs(lease_end - (now - timedelta(minutes=2) + timedelta(seconds=40))) < timedelta(seconds=1)
    text = tagloop("outbox", "status").stdout
    assert "due now 3" in text and "2 claim(s) expired with no worker holding them" in text
    assert {str(r["id"]) for r in store.claim_due(db, now=now, limit=10)} == set(ids)  # what "due" promised
    db.rollback()
    assert {str(r["id"]) for r in claimed} <= set(ids)


def test_outbox_retry_requeues_dead_letters_and_refuses_ids_that_are_not_dead(
    tagloop_env: Path, db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=1)
    users = add_users(db, 4)
    ids = queue_messages(db, users, send_at=long_ago)
    _dead(db, ids[:3], long_ago)
    pending, unknown = ids[3], "00000000-0000-0000-0000-0000000000ff"
    before = _rows(db)

    neither = tagloop("outbox", "retry", code=2)
    assert "either --all or one or more --id" in neither.stderr and "Traceback" not in neither.stderr
    refused = tagloop("outbox", "retry", "--id", ids[0], "--id", pending, "--id", unknown, code=2)
    assert f"{pending}: is pending, not dead" in refused.stderr
    assert f"{unknown}: no such message" in refused.stderr and "nothing was requeued" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "not a message id" in tagloop("outbox", "retry", "--id", "abc", code=2).stderr
    wrong_channel = tagloop("outbox", "retry", "--id", ids[0], "--channel", "email", code=2)
    assert "is on channel 'webhook', not 'email'" in wrong_channel.stderr
    assert _rows(db) == before  # nothing requeued by a refused request

    started = datetime.now(UTC)
    one = json.loads(tagloop("outbox", "retry", "--id", ids[0], "--json").stdout)
    assert one["retried"] == [ids[0]] and one["count"] == 1 and "T" in one["due_at"]
    row = _rows(db)[ids[0]]
    assert row["status"] == "pending" and row["attempts"] == 0 and row["dead_at"] is None
    assert started - timedelta(seconds=1) <= row["next_attempt_at"] == row["send_at"] <= datetime.now(UTC)
    no_email = json.loads(tagloop("outbox", "retry", "--all", "--channel", "email", "--json").stdout)
    assert no_email["count"] == 0
    rest = json.loads(tagloop("outbox", "retry", "--all", "--json").stdout)
    assert rest["retried"] == sorted(ids[1:3])

    # sent again at once, the send-time guards still applied: a user who withdrew consent gets nothing
    db.execute("update users set consent = '{}' where id = %(u)s", {"u": users[1]})
    db.commit()
    channel = WebhookChannel(receiver.url, SECRET, allow_private=True)
    report = deliver_due(
        db, {"webhook": channel}, NO_QUIET, now=datetime.now(UTC), rng=np.random.default_rng(1)
    )
    channel.close()
    assert sorted(report.sent) == sorted([ids[0], ids[2], pending])
    assert report.cancelled == [ids[1]]
    assert set(receiver.accepted) == {ids[0], ids[2], pending}
    listed = json.loads(tagloop("decisions", "dead-letters", "--json").stdout)
    assert listed == {"dead_letters": [], "total": 0}


def test_decisions_dead_letters_name_the_decision_and_title(
    tagloop_env: Path, db: psycopg.Connection[Any]
) -> None:
    at = datetime.now(UTC)
    ids = queue_messages(db, add_users(db, 1), send_at=at)
    _dead(db, ids, at)
    (row,) = json.loads(tagloop("decisions", "dead-letters", "--json").stdout)["dead_letters"]
    decision = db.execute("select decision_id::text as d from messages").fetchone()
    db.commit()
    assert decision is not None
    assert row["id"] == ids[0] and row["decision_id"] == decision["d"] and row["title"] == "hello u0000"


def test_metrics_show_pending_sending_and_dead_messages_at_scrape_time(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    at = datetime.now(UTC)
    ids = queue_messages(db, add_users(db, 5), send_at=at)
    _dead(db, ids[:2], at)
    settings = Settings(database_url=db_url, home=tmp_path, api_keys=["k" * 32])
    with TestClient(create_app(settings, pool_size=2)) as client:
        auth = {"Authorization": "Bearer " + "k" * 32}
        text = client.get("/metrics", headers=auth).text
        assert 'tagloop_outbox_messages{status="pending"} 3.0' in text
        assert 'tagloop_outbox_messages{status="dead"} 2.0' in text
        assert 'tagloop_outbox_messages{status="sending"} 0.0' in text
        _dead(db, ids[2:3], at)
        text = client.get("/metrics", headers=auth).text
        assert 'tagloop_outbox_messages{status="dead"} 3.0' in text
