"""The email channel against a local SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.email import EmailChannel


class Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", inbox
    controller.stop()


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


def test_email_is_delivered_with_the_message_id(smtp: tuple[str, Inbox]) -> None:
    url, inbox = smtp
    EmailChannel(url, "tagloop@example.org", timeout=5).send(MESSAGE)
    assert len(inbox.mails) == 1
    envelope = inbox.mails[0]
    assert envelope.rcpt_tos == ["listener@example.org"]
    mail = message_from_bytes(envelope.content)
    assert mail["Subject"] == "New for you: A" and mail["Message-ID"] == f"<{MESSAGE.message_id}@tagloop>"
    assert "Song A" in mail.get_payload()


def test_unreachable_smtp_server_is_retryable_and_missing_address_is_not() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError) as err:
        EmailChannel(f"smtp://127.0.0.1:{port}", "t@example.org", timeout=2).send(MESSAGE)
    assert err.value.retryable
    with pytest.raises(DeliveryError) as err:
        EmailChannel(f"smtp://127.0.0.1:{port}", "t@example.org").send(
            OutboundMessage(**{**MESSAGE.__dict__, "address": None})
        )
    assert not err.value.retryable
