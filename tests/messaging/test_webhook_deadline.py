"""TAGLOOP_DELIVERY_TIMEOUT_SECONDS bounds the whole webhook send, not each read: a receiver that
answers and then trickles its body one byte at a time, or trickles its headers, used to hold a send
(and the delivery round, and a `send_now` request) for as long as it kept trickling. Against local
receivers on 127.0.0.1 and the real database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock_time
from typing import Any

import numpy as np
import psycopg
import pytest
from msg_support import SECRET, add_users, queue_messages, webhook_message

from tagloop.tools.messaging.channels import DeliveryError
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.messaging.webhook import WebhookChannel

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
NO_QUIET = DeliveryConfig(quiet_start=clock_time(0), quiet_end=clock_time(0), max_attempts=3)
MESSAGE = webhook_message("b")
TIMEOUT = 2.0
TRICKLE = 0.5  # seconds between two bytes: each read is well within the timeout


@dataclass
class Trickler:
    """A receiver that reads the request, writes `head` at once, then `tail` one byte every
    `TRICKLE` seconds (for up to 20 s, or until the client hangs up)."""

    head: bytes = b""
    tail: bytes = b""
    url: str = ""
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _answer(state: Trickler, conn: socket.socket) -> None:
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += conn.recv(65536)
        state.requests += 1
        try:
            conn.sendall(state.head)
            for byte in state.tail:
                if state.stop.wait(TRICKLE):
                    return
                conn.sendall(bytes([byte]))
        except OSError:  # the client hung up
            return


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    state = Trickler()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    state.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"

    def serve() -> None:
        while not state.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=_answer, args=(state, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    thread.join(5)
    listener.close()


def _timed_send(url: str) -> tuple[DeliveryError | None, float]:
    channel = WebhookChannel(url, SECRET, allow_private=True, timeout=TIMEOUT)
    started = time.monotonic()
    try:
        channel.send(MESSAGE)
        error = None
    except DeliveryError as exc:
        error = exc
    took = time.monotonic() - started
    channel.close()
    return error, took


BODY_40 = b"x" * 40  # 20 s of trickling


def test_a_5xx_whose_body_trickles_is_answered_within_the_timeout(trickler: Trickler) -> None:
    trickler.head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 40\r\n\r\n"
    trickler.tail = BODY_40
    error, took = _timed_send(trickler.url)
    assert took < TIMEOUT + 0.5  # it took 20 s: the read timeout only bounds each read
    assert error is not None and error.retryable and "HTTP 500" in str(error)


def test_a_2xx_whose_body_trickles_is_sent_within_the_timeout(trickler: Trickler) -> None:
    trickler.head = b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n"
    trickler.tail = BODY_40
    error, took = _timed_send(trickler.url)
    assert took < TIMEOUT + 0.5 and error is None
    assert trickler.requests == 1


def test_a_4xx_whose_body_trickles_is_still_not_retried(trickler: Trickler) -> None:
    trickler.head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 40\r\n\r\n"
    trickler.tail = BODY_40
    error, took = _timed_send(trickler.url)
    assert took < TIMEOUT + 0.5
    assert error is not None and not error.retryable and "HTTP 400" in str(error)


def test_a_receiver_trickling_its_headers_is_a_retryable_timeout_at_the_deadline(trickler: Trickler) -> None:
    trickler.head = b"HTTP/1.1 200 OK\r\n"
    trickler.tail = b"x-slow: " + b"y" * 40 + b"\r\ncontent-length: 0\r\n\r\n"
    error, took = _timed_send(trickler.url)
    assert took < TIMEOUT + 0.5
    assert error is not None and error.retryable and "timed out" in str(error)


def test_a_delivery_round_is_not_held_by_a_trickling_receiver(
    db: psycopg.Connection[Any], trickler: Trickler
) -> None:
    trickler.head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 40\r\n\r\n"
    trickler.tail = BODY_40
    ids = queue_messages(db, add_users(db, 3), send_at=NOW)
    channel = WebhookChannel(trickler.url, SECRET, allow_private=True, timeout=TIMEOUT)
    started = time.monotonic()

    report = deliver_due(db, {"webhook": channel}, NO_QUIET, now=NOW, rng=np.random.default_rng(0))

    took = time.monotonic() - started
    channel.close()
    assert sorted(report.retrying) == sorted(ids) and trickler.requests == 3
    assert took < 3 * TIMEOUT  # it took a minute: 20 s a message
    rows = db.execute("select distinct last_error from messages").fetchall()
    db.commit()
    assert [r["last_error"] for r in rows] == ["webhook answered HTTP 503"]


def test_hung_sends_are_bounded_daemon_threads_that_never_hold_up_an_exit(
    trickler: Trickler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run built a channel with a pool of four non-daemon threads, never shut down: sends hung
    on a receiver that trickles its headers piled up per run and kept `tagloop run` from exiting."""
    from tagloop.tools.messaging import webhook

    monkeypatch.setattr(webhook, "_IN_FLIGHT", threading.BoundedSemaphore(2))
    trickler.head = b"HTTP/1.1 200 OK\r\n"
    trickler.tail = b"x-slow: " + b"y" * 200 + b"\r\ncontent-length: 0\r\n\r\n"  # 100 s of headers
    errors = []
    for _ in range(3):  # three runs, a channel each
        channel = WebhookChannel(trickler.url, SECRET, allow_private=True, timeout=1.0)  # > TRICKLE
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failed:
            channel.send(MESSAGE)
        assert failed.value.retryable and time.monotonic() - started < 2.0
        errors.append(str(failed.value))
    assert errors[:2] == ["webhook timed out (no answer within 1 s)"] * 2
    assert "every sender busy" in errors[2] and trickler.requests == 2  # the third was not made
    senders = [t for t in threading.enumerate() if t.name == "webhook-send"]
    assert len(senders) == 2 and all(t.daemon for t in senders)  # an exit does not wait for them
