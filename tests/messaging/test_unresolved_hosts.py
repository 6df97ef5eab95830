"""A host name that does not resolve (a resolver outage, or a name not found right now) is a
retryable delivery error naming the host, whether or not private targets are allowed, for webhooks
and for SMTP; only a host resolving to a private or loopback address is refused for good. Against
the real resolver (`.invalid` never resolves), a resolver failing with EAI_AGAIN, a local webhook
receiver and the real database."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from msg_support import MESSAGE as MAIL
from msg_support import SECRET, Receiver, add_users, queue_messages, webhook_message

from tagloop.tools.messaging import ssrf
from tagloop.tools.messaging.channels import DeliveryError
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.messaging.email import EmailChannel
from tagloop.tools.messaging.webhook import WebhookChannel

NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
NO_QUIET = DeliveryConfig(quiet_start=time(0), quiet_end=time(0), max_attempts=3)
MESSAGE = webhook_message("a")


def _resolver_down(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, Any]:
    """`name` fails with EAI_AGAIN (a resolver outage) while `state["down"]`, then resolves to
    127.0.0.1; other names as usual."""
    real = socket.getaddrinfo
    state: dict[str, Any] = {"down": True, "asked": 0}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        state["asked"] += 1
        if state["down"]:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return state


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_webhook_host_that_does_not_resolve_is_a_retryable_error_naming_it(allow_private: bool) -> None:
    channel = WebhookChannel("https://hooks.example.invalid/tagloop", SECRET, allow_private=allow_private)
    with pytest.raises(DeliveryError, match=r"cannot resolve outbound host 'hooks\.example\.invalid'") as err:
        channel.send(MESSAGE)
    channel.close()
    assert err.value.retryable


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_resolver_outage_is_retryable_for_webhooks(
    allow_private: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _resolver_down(monkeypatch, "hooks.example.org")
    channel = WebhookChannel("https://hooks.example.org/tagloop", SECRET, allow_private=allow_private)
    with pytest.raises(DeliveryError, match=r"host 'hooks\.example\.org': Temporary failure") as err:
        channel.send(MESSAGE)
    channel.close()
    assert err.value.retryable and state["asked"] >= 1


def test_a_host_resolving_to_loopback_is_still_refused_for_good() -> None:
    channel = WebhookChannel("http://localhost:9/hook", SECRET, allow_private=False)
    with pytest.raises(DeliveryError, match="private or loopback") as err:
        channel.send(MESSAGE)
    channel.close()
    assert not err.value.retryable


def test_an_smtp_host_that_does_not_resolve_is_a_retryable_error_naming_it() -> None:
    channel = EmailChannel("smtp://mail.example.invalid:2525", "tagloop@example.org", timeout=5)
    with pytest.raises(DeliveryError, match=r"cannot resolve SMTP host 'mail\.example\.invalid'") as err:
        channel.send(MAIL)
    assert err.value.retryable


def test_a_message_due_during_a_resolver_outage_backs_off_and_is_sent_after_it(
    db: psycopg.Connection[Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to be dead-lettered on its first attempt ("cannot resolve outbound host …")."""
    monkeypatch.setattr(ssrf, "is_public", lambda address: address == "127.0.0.1")  # the receiver
    state = _resolver_down(monkeypatch, "hooks.example.org")
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    channel = WebhookChannel(f"http://hooks.example.org:{port}/hook", SECRET, timeout=5)
    [message_id] = queue_messages(db, add_users(db, 1), send_at=NOW)

    first = deliver_due(db, {"webhook": channel}, NO_QUIET, now=NOW, rng=np.random.default_rng(0))

    assert first.retrying == [message_id] and not first.dead
    row = db.execute(
        "select status, attempts, last_error, next_attempt_at from messages where id = %(id)s",
        {"id": message_id},
    ).fetchone()
    db.commit()
    assert row is not None and (row["status"], row["attempts"]) == ("pending", 1)
    assert "cannot resolve outbound host 'hooks.example.org'" in row["last_error"]
    assert row["next_attempt_at"] >= NOW + NO_QUIET.backoff / 2  # backs off, like a connect error

    state["down"] = False
    later = deliver_due(
        db, {"webhook": channel}, NO_QUIET, now=NOW + timedelta(hours=2), rng=np.random.default_rng(1)
    )
    channel.close()
    assert later.sent == [message_id] and receiver.accepted == {message_id: 1}
