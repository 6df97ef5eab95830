"""The outbox delivery loop against the real database and a real local webhook receiver."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from msg_support import SECRET, Receiver, add_users, queue_messages
from standardwebhooks.webhooks import Webhook

from tagloop.policies.config import ChannelCap
from tagloop.tools.messaging.delivery import DeliveryConfig, backoff, deliver_due
from tagloop.tools.messaging.ssrf import UnsafeURL, check_url
from tagloop.tools.messaging.webhook import WebhookChannel
from tagloop.tools.store import outbox as store
from tagloop.tools.store import runs

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
NO_QUIET = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), max_attempts=4)


def _status(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("select id::text as id, status from messages").fetchall()
    conn.commit()
    return {r["id"]: r["status"] for r in rows}


def _drain(
    conn: psycopg.Connection[Any], channel: WebhookChannel, cfg: DeliveryConfig, rounds: int = 60
) -> list[str]:
    """Deliver with a simulated clock that jumps past every backoff; returns dead-lettered ids."""
    now, dead = NOW, []
    rng = np.random.default_rng(3)
    for _ in range(rounds):
        report = deliver_due(conn, {"webhook": channel}, cfg, now=now, rng=rng, limit=50)
        dead += report.dead
        if (
            report.claimed == 0
            and not conn.execute("select 1 from messages where status in ('pending', 'sending')").fetchone()
        ):
            conn.commit()
            break
        conn.commit()
        now += cfg.backoff_max + timedelta(minutes=1)
    return dead


def test_flaky_receiver_gets_every_message_exactly_once_and_dead_letters_are_reported(
    db: psycopg.Connection[Any], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    users = add_users(db, 40)
    ids = queue_messages(db, users, send_at=NOW)
    receiver.fail_rate = 0.5
    channel = WebhookChannel(receiver.url, SECRET, allow_private=True)

    with caplog.at_level("WARNING", logger="tagloop.delivery"):
        dead = _drain(db, channel, NO_QUIET)
    # each dead letter is logged with its id (it showed only as dead=1 in the round's summary)
    logged = {m.split("message=")[1].split()[0] for m in caplog.messages if "event=dead_letter" in m}
    assert logged == set(dead)

    status = _status(db)
    assert set(status) == set(ids)
    sent = {i for i, s in status.items() if s == "sent"}
    assert set(receiver.accepted) == sent  # receiver's view: everything sent arrived …
    assert all(n == 1 for n in receiver.accepted.values())  # … exactly once
    assert {i for i, s in status.items() if s == "dead"} == set(dead)  # nothing lost: sent or dead-lettered
    assert sent | set(dead) == set(ids)
    assert len(sent) > 30 and dead  # 50% failures over 4 attempts: ~1/16 dead
    reported = {str(r["id"]) for r in store.dead_letters(db)}
    assert reported == set(dead)
    attempts = {str(r["id"]): r["attempts"] for r in db.execute("select id, attempts from messages")}
    assert all(attempts[i] == NO_QUIET.max_attempts for i in dead)


def test_webhook_requests_are_signed_and_carry_the_spec_payload(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    users = add_users(db, 2)
    ids = queue_messages(db, users, send_at=NOW)
    deliver_due(
        db,
        {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)},
        NO_QUIET,
        now=NOW,
        rng=np.random.default_rng(0),
    )
    assert len(receiver.seen) == 2
    for req in receiver.seen:
        payload = Webhook(SECRET).verify(req["body"], req["headers"])  # raises when the signature is wrong
        assert req["headers"]["webhook-id"] == payload["message_id"]
        assert set(payload) == {
            "message_id",
            "decision_id",
            "user_id",
            "channel",
            "title",
            "body",
            "items",
            "send_at",
        }
    assert {json.loads(r["body"])["message_id"] for r in receiver.seen} == set(ids)


def test_client_errors_are_not_retried(db: psycopg.Connection[Any], receiver: Receiver) -> None:
    ids = queue_messages(db, add_users(db, 1), send_at=NOW)
    receiver.fail_rate, receiver.status_on_fail = 1.0, 410
    report = deliver_due(
        db,
        {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)},
        NO_QUIET,
        now=NOW,
        rng=np.random.default_rng(0),
    )
    assert report.dead == ids and len(receiver.seen) == 1


def test_unsubscribe_between_enqueue_and_send_stops_the_send(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    users = add_users(db, 2)
    ids = queue_messages(db, users, send_at=NOW)
    db.execute(
        "insert into events (id, user_id, type, ts) values ('unsub-1', %(u)s, 'unsubscribe', %(ts)s)",
        {"u": users[0], "ts": NOW - timedelta(minutes=1)},
    )
    db.commit()
    report = deliver_due(
        db,
        {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)},
        NO_QUIET,
        now=NOW,
        rng=np.random.default_rng(0),
    )
    assert report.cancelled == [ids[0]] and report.sent == [ids[1]]
    assert [json.loads(r["body"])["user_id"] for r in receiver.seen] == [users[1]]


def test_unsubscribes_stored_with_an_odd_channel_still_stop_sends(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """Rows stored before ingest normalised the channel ('Webhook', ["webhook"]) matched no channel,
    so the sends went on; they are read lower-case, and one naming no channel blocks every one."""
    users = add_users(db, 3)
    ids = queue_messages(db, users, send_at=NOW)
    for n, channel in enumerate(['"Webhook"', '["webhook"]']):
        db.execute(
            """insert into events (id, user_id, type, ts, context)
               values (%(id)s, %(u)s, 'unsubscribe', %(ts)s, jsonb_build_object('channel', %(c)s::jsonb))""",
            {"id": f"odd-{n}", "u": users[n], "ts": NOW - timedelta(minutes=1), "c": channel},
        )
    db.commit()
    assert runs.unsubscribes(db, users[:2]) == {
        users[0]: {"webhook": NOW - timedelta(minutes=1)},
        users[1]: {"*": NOW - timedelta(minutes=1)},
    }
    db.commit()
    channel = {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)}
    report = deliver_due(db, channel, NO_QUIET, now=NOW, rng=np.random.default_rng(0))
    assert sorted(report.cancelled) == sorted(ids[:2]) and report.sent == [ids[2]]


def test_consent_withdrawn_quiet_hours_and_caps_are_checked_at_send_time(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    users = add_users(db, 3, tz="Europe/Berlin")
    ids = queue_messages(db, users, send_at=NOW - timedelta(hours=1))
    db.execute("update users set consent = '{\"webhook\": false}' where id = %(u)s", {"u": users[0]})
    db.execute("update messages set send_hour = 20 where id = any(%(ids)s::uuid[])", {"ids": ids})
    db.commit()
    cfg = DeliveryConfig(quiet_start=time(22), quiet_end=time(7), caps={"webhook": ChannelCap(per_day=1)})
    channel = {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)}
    night = datetime(2026, 5, 4, 21, 30, tzinfo=UTC)  # 23:30 in Berlin
    report = deliver_due(db, channel, cfg, now=night, rng=np.random.default_rng(0))
    assert report.cancelled == [ids[0]] and sorted(report.deferred) == sorted(ids[1:])
    assert not receiver.seen
    # deferred past the hour the bandit chose: their engagement is no longer that hour arm's
    hours = db.execute("select send_hour from messages where id = any(%(ids)s::uuid[])", {"ids": ids[1:]})
    assert [r["send_hour"] for r in hours] == [None, None]
    db.rollback()
    morning = datetime(2026, 5, 5, 5, 0, tzinfo=UTC)  # 07:00 in Berlin
    assert sorted(deliver_due(db, channel, cfg, now=morning, rng=np.random.default_rng(0)).sent) == sorted(
        ids[1:]
    )
    again = queue_messages(db, users[1:2], send_at=morning)  # a second message the same day: over the cap
    report = deliver_due(db, channel, cfg, now=morning + timedelta(hours=1), rng=np.random.default_rng(0))
    assert report.deferred == again
    row = db.execute("select next_attempt_at from messages where id = %(i)s", {"i": again[0]}).fetchone()
    sent_at = morning + timedelta(days=1)  # plus the seconds the batch took to reach that send
    assert timedelta(0) <= row["next_attempt_at"] - sent_at < timedelta(seconds=5)


def test_a_claim_whose_worker_died_is_retried_after_the_lease(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    ids = queue_messages(db, add_users(db, 1), send_at=NOW)
    with db.transaction():
        assert len(store.claim_due(db, now=NOW, lease=timedelta(minutes=5))) == 1  # the worker then "dies"
    channel = {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)}
    assert (
        deliver_due(
            db, channel, NO_QUIET, now=NOW + timedelta(minutes=1), rng=np.random.default_rng(0)
        ).claimed
        == 0
    )
    report = deliver_due(db, channel, NO_QUIET, now=NOW + timedelta(minutes=6), rng=np.random.default_rng(0))
    assert report.sent == ids


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    cfg = DeliveryConfig(backoff=timedelta(seconds=10), backoff_max=timedelta(seconds=100))
    rng = np.random.default_rng(1)
    waits = [backoff(a, cfg, rng).total_seconds() for a in (1, 2, 3, 4, 5, 6)]
    for attempt, wait in zip((1, 2, 3, 4, 5, 6), waits, strict=True):
        ceiling = min(10 * 2 ** (attempt - 1), 100)
        assert 0.5 * ceiling <= wait < ceiling
    assert len({round(w, 6) for w in waits}) == len(waits)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://[::ffff:192.168.0.1]/",
        "ftp://example.org/",
        "http://100.64.0.1/",
    ],
)
def test_ssrf_guard_refuses_private_and_loopback_targets(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, allow_private=False)


def test_ssrf_guard_allows_private_targets_only_when_configured(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    check_url("http://127.0.0.1:9/", allow_private=True)
    ids = queue_messages(db, add_users(db, 1), send_at=NOW)
    report = deliver_due(
        db, {"webhook": WebhookChannel(receiver.url, SECRET)}, NO_QUIET, now=NOW, rng=np.random.default_rng(0)
    )
    assert report.dead == ids and not receiver.seen
    assert "private or loopback" in (store.dead_letters(db)[0]["last_error"] or "")


def test_service_logs_do_not_show_webhook_urls_with_their_tokens(
    db: psycopg.Connection[Any], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """serve and worker log at INFO; httpx logs each request's full URL at INFO, and a webhook URL
    often carries its token (path, query, userinfo). None of it may reach the logs."""
    from tagloop.agent.cli import _log_to_stderr

    caplog.set_level(logging.DEBUG)
    _log_to_stderr()
    url = receiver.url.replace("http://", "http://bot:hunter2@") + "/T0/XXXXSECRETTOKEN?token=abc123"
    users = add_users(db, 1)
    queue_messages(db, users, send_at=NOW)
    report = deliver_due(
        db,
        {"webhook": WebhookChannel(url, SECRET, allow_private=True)},
        NO_QUIET,
        now=NOW,
        rng=np.random.default_rng(1),
        limit=5,
    )
    db.commit()
    assert len(report.sent) == 1 and receiver.accepted  # the request was made
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert not any(secret in text for secret in ("hunter2", "XXXXSECRETTOKEN", "abc123"))


def test_a_webhook_channel_shown_keeps_its_url_token_out() -> None:
    channel = WebhookChannel("https://bot:hunter2@hooks.example.com/T0/SECRET?token=abc", SECRET)
    assert repr(channel) == "WebhookChannel(url='https://hooks.example.com…')"


def test_a_message_sent_at_another_local_hour_than_chosen_credits_no_hour(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """Only a deferral cleared `send_hour`: a message sent late (an outage, retries) or after the user
    moved to another time zone kept it, and its opens credited the hour arm chosen (20:00 Berlin
    for a message that went out at 14:00 in New York)."""
    users = add_users(db, 3, tz="Europe/Berlin")
    ids = queue_messages(db, users, send_at=NOW - timedelta(hours=1))
    at = datetime(2026, 5, 4, 18, 10, tzinfo=UTC)  # 20:10 in Berlin, 14:10 in New York
    db.execute("update messages set send_hour = 20 where id = any(%(ids)s::uuid[])", {"ids": ids})
    db.execute("update messages set send_hour = 19 where id = %(id)s::uuid", {"id": ids[1]})  # sent late
    db.execute("update users set timezone = 'America/New_York' where id = %(u)s", {"u": users[2]})
    db.commit()
    channel = {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)}
    report = deliver_due(db, channel, NO_QUIET, now=at, rng=np.random.default_rng(0))
    assert sorted(report.sent) == sorted(ids)
    hours = {r["id"]: r["send_hour"] for r in db.execute("select id::text as id, send_hour from messages")}
    assert [hours[i] for i in ids] == [20, None, None]


def test_a_process_leaves_the_messages_of_channels_it_cannot_send_to_others(
    db: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """Delivery claimed every due message whatever its channel, and a worker without email set up
    (TAGLOOP_SMTP_URL=none for that process) dead-lettered the whole deployment's due mail:
    "channel 'email' is not configured"."""
    users = add_users(db, 4)
    hooks = queue_messages(db, users[:2], send_at=NOW)
    mails = queue_messages(db, users[2:], send_at=NOW, channel="email")
    channel = {"webhook": WebhookChannel(receiver.url, SECRET, allow_private=True)}
    report = deliver_due(db, channel, NO_QUIET, now=NOW, rng=np.random.default_rng(0))
    assert sorted(report.sent) == sorted(hooks) and report.claimed == 2 and not report.dead
    status = _status(db)
    assert [status[m] for m in mails] == ["pending", "pending"]  # for a process with email
