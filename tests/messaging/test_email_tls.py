"""The email channel's transport security against local SMTP servers (aiosmtpd) holding a
certificate from a throwaway CA (trustme): `smtps://` verifies the server's certificate and host
name, `smtp://` upgrades with STARTTLS when the server offers it, and a password is never sent
over a connection that is not encrypted."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from msg_support import MESSAGE, Inbox

from tagloop.tools.messaging.channels import DeliveryError
from tagloop.tools.messaging.email import EmailChannel


@dataclass
class Logins:
    """aiosmtpd authenticator: accepts mailer/s3cret and notes whether the session was encrypted."""

    seen: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        encrypted = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit
        self.seen.append((data.login.decode(), encrypted))
        return AuthResult(success=(data.login, data.password) == (b"mailer", b"s3cret"))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def server(ca: trustme.CA, request: pytest.FixtureRequest) -> Iterator[tuple[int, Inbox, Logins]]:
    """mode 'implicit' (TLS from the first byte), 'starttls' (offers STARTTLS, AUTH only after
    it) or 'plain' (no TLS at all, AUTH allowed)."""
    mode = request.param
    inbox, logins, port = Inbox(), Logins(), _free_port()
    tls = _serving(ca)
    # aiosmtpd offers AUTH on an implicit-TLS connection only when not asked to require STARTTLS
    options: dict[str, Any] = {"authenticator": logins, "auth_require_tls": mode == "starttls"}
    if mode == "implicit":
        options["ssl_context"] = tls
    elif mode == "starttls":
        options["tls_context"] = tls
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield port, inbox, logins
    controller.stop()


@pytest.mark.parametrize("server", ["implicit"], indirect=True)
def test_smtps_verifies_the_servers_certificate(server: tuple[int, Inbox, Logins], ca: trustme.CA) -> None:
    port, inbox, logins = server
    url = f"smtps://mailer:s3cret@127.0.0.1:{port}"
    with pytest.raises(DeliveryError, match="certificate") as err:
        EmailChannel(url, "t@example.org", timeout=5).send(MESSAGE)  # the system's CAs: not trusted
    assert err.value.retryable and inbox.mails == [] and logins.seen == []
    EmailChannel(url, "t@example.org", timeout=5, tls_context=_trusting(ca)).send(MESSAGE)
    assert len(inbox.mails) == 1 and logins.seen == [("mailer", True)]


@pytest.mark.parametrize("server", ["starttls"], indirect=True)
def test_smtp_upgrades_with_starttls_before_logging_in(
    server: tuple[int, Inbox, Logins], ca: trustme.CA
) -> None:
    port, inbox, logins = server
    url = f"smtp://mailer:s3cret@127.0.0.1:{port}"
    with pytest.raises(DeliveryError, match="certificate"):
        EmailChannel(url, "t@example.org", timeout=5).send(MESSAGE)
    assert inbox.mails == [] and logins.seen == []
    EmailChannel(url, "t@example.org", timeout=5, tls_context=_trusting(ca)).send(MESSAGE)
    assert len(inbox.mails) == 1 and logins.seen == [("mailer", True)]


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_a_password_is_never_sent_unencrypted(server: tuple[int, Inbox, Logins], ca: trustme.CA) -> None:
    port, inbox, logins = server
    with pytest.raises(DeliveryError, match="STARTTLS") as err:
        EmailChannel(f"smtp://mailer:s3cret@127.0.0.1:{port}", "t@example.org", timeout=5).send(MESSAGE)
    assert err.value.retryable  # a configuration to fix: the message waits for it
    assert inbox.mails == [] and logins.seen == []
    EmailChannel(f"smtp://127.0.0.1:{port}", "t@example.org", timeout=5).send(MESSAGE)  # no login: fine
    assert len(inbox.mails) == 1
