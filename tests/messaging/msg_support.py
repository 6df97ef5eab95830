"""Helpers for delivery tests: users and queued messages written straight through the store, a
local webhook receiver (127.0.0.1, ephemeral port) that can be told to fail, a local SMTP server
(aiosmtpd on 127.0.0.1) collecting what it receives, and a table's sequential-scan count (plans
that must use an index)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import psycopg
import pytest
from aiosmtpd.controller import Controller

from tagloop.tools.messaging.channels import OutboundMessage
from tagloop.tools.store import decisions as store

SECRET = "whsec_" + "dGFnbG9vcC10ZXN0LXNlY3JldC0zMmJ5dGVzISEhIQ=="


def seq_scans(conn: psycopg.Connection[Any], table: str) -> int:
    """Sequential scans of `table` so far, this connection's included (commits the connection)."""
    conn.execute("select pg_stat_force_next_flush()")
    conn.commit()  # this backend's counters are reported at the end of the transaction
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select seq_scan from pg_stat_user_tables where relname = %(t)s", {"t": table}
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row["seq_scan"])


def add_users(
    conn: psycopg.Connection[Any], n: int, *, channel: str = "webhook", tz: str = "UTC", prefix: str = "u"
) -> list[str]:
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    conn.execute(
        """insert into users (id, timezone, channels, consent)
           select u, %(tz)s, jsonb_build_object(%(ch)s::text, u || '@example.org'),
                  jsonb_build_object(%(ch)s::text, true)
           from unnest(%(ids)s::text[]) as u""",
        {"ids": ids, "tz": tz, "ch": channel},
    )
    return ids


def queue_messages(
    conn: psycopg.Connection[Any], users: list[str], *, send_at: datetime, channel: str = "webhook"
) -> list[str]:
    ids = []
    for u in users:
        decision_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"d|{u}|{send_at.isoformat()}"))
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"m|{decision_id}"))
        store.insert_decisions(
            conn,
            [
                store.DecisionRow(
                    id=decision_id,
                    user_id=u,
                    trigger="test",
                    policy_name="t",
                    policy_version="1",
                    seed=1,
                    candidates=[],
                    chosen=[],
                    propensities=[],
                    channel=channel,
                    send_at=send_at,
                    outcome="message",
                    explanation=None,
                    context={},
                )
            ],
        )
        store.insert_messages(
            conn,
            [
                store.MessageRow(
                    id=message_id,
                    decision_id=decision_id,
                    user_id=u,
                    channel=channel,
                    title=f"hello {u}",
                    body="body",
                    items=[{"id": "i1", "title": "Song"}],
                    send_at=send_at,
                )
            ],
        )
        ids.append(message_id)
    conn.commit()
    return ids


@dataclass
class Receiver:
    url: str
    fail_rate: float = 0.0
    status_on_fail: int = 500
    delay: float = 0.0  # seconds each request takes (a slow receiver)
    seen: list[dict[str, Any]] = field(default_factory=list)  # every request: headers + body
    accepted: dict[str, int] = field(default_factory=dict)  # webhook-id → times accepted
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                state.seen.append({"headers": headers, "body": body.decode()})
                fail = state.rng.random() < state.fail_rate
                if not fail:
                    wid = headers["webhook-id"]
                    state.accepted[wid] = state.accepted.get(wid, 0) + 1
            time.sleep(state.delay)
            self.send_response(state.status_on_fail if fail else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def payloads(rec: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in rec.seen]


class Inbox:
    """aiosmtpd handler keeping every envelope (`rcpt_tos`, `content`)."""

    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[str, Inbox]]:
    """A local SMTP server: (`smtp://127.0.0.1:PORT`, its inbox)."""
    inbox = Inbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", inbox
    controller.stop()


# one email message, as the email tests send it
MESSAGE = OutboundMessage(
    message_id="7b0c2a8e-0000-5000-8000-000000000001",
    decision_id="d",
    user_id="u1",
    channel="email",
    title="New for you: A",
    body="Because you like rock.",
    items=[{"id": "i1", "title": "Song A"}],
    send_at="2026-05-04T12:00:00+00:00",
    address="listener@example.org",
)


def webhook_message(last: str) -> OutboundMessage:
    """One webhook message as the webhook channel tests send it (`last`: its id's last characters)."""
    return OutboundMessage(
        message_id=f"7b0c2a8e-0000-5000-8000-{last:0>12}",
        decision_id="d",
        user_id="u1",
        channel="webhook",
        title="t",
        body="b",
        send_at="2026-05-04T12:00:00+00:00",
    )
