"""The `email` channel: one plain-text mail per message over SMTP (`TAGLOOP_SMTP_URL`,
`smtp://host:port`, or `smtps://` for implicit TLS), `Message-ID` derived from the message id (so
receivers can dedupe a resend) and `Date` the send time.

Transport security: the server's certificate and host name are verified (the system's CAs, or the
bundle `SSL_CERT_FILE` names); `smtp://` upgrades with STARTTLS whenever the server offers it, and
a user and password in the URL are only ever sent encrypted — over `smtp://` to a server without
STARTTLS the mail is not sent (a retryable error saying so), never the password in clear.

With unsubscribe links configured (tools/messaging/unsubscribe.py) each mail has
`List-Unsubscribe` (and, for an https link, `List-Unsubscribe-Post` one-click, RFC 8058) and the
link at the end of its text.

The timeout bounds the whole send, not each read (`_Deadline` cuts the connection when it is up).

Connection problems (a host name that does not resolve among them) and 4xx SMTP replies are
retryable; 5xx replies (bad address, refused) are not, nor is an address that is not exactly one
plain address (`channels.email_address`: no CR/LF, no list, no display name) — it is refused before
any connection is made.

The Subject is the title with control characters flattened; a title that itself looks like an
RFC 2047 encoded word (`=?utf-8?q?…?=`) is sent encoded as a whole, so mail clients show it as the
literal text it is instead of decoding it."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage, email_address, flat
from tagloop.tools.messaging.unsubscribe import UnsubscribeLinks

SMTP_URL_HINT = "TAGLOOP_SMTP_URL must look like smtp://[user:password@]host[:port] (or smtps://)"


@dataclass(frozen=True)
class _EncodedHeader:
    """A header value always written as RFC 2047 encoded words (`email.header.Header`). The email
    policy stores an object with a matching `name` as is and folds it by calling its `fold`; a plain
    string would be parsed, and an encoded word inside it decoded (then sent as raw text)."""

    name: str
    text: str

    def __str__(self) -> str:
        return self.text

    def fold(self, *, policy: Policy) -> str:
        linesep = policy.linesep
        maxlen = policy.max_line_length or 78
        encoded = Header(self.text, "utf-8", maxlen, header_name=self.name).encode(linesep=linesep)
        return f"{self.name}: {encoded}{linesep}"


class _VerbatimHeader(str):
    """A structured ASCII header written as is on one line (`List-Unsubscribe: <https://…>`):
    the policy would fold a long link as unstructured text into RFC 2047 encoded words, which
    RFC 2369 headers must not contain (mail providers then find no link). The policy keeps a value
    whose `name` matches as is and folds it by calling its `fold`."""

    name: str

    def __new__(cls, name: str, text: str) -> _VerbatimHeader:
        header = super().__new__(cls, text)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


class EmailChannel:
    name = "email"

    def __init__(
        self,
        smtp_url: str,
        sender: str,
        *,
        timeout: float = 10.0,
        unsubscribe: UnsubscribeLinks | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """`tls_context`: how to verify the server (default: `ssl.create_default_context()`)."""
        try:  # the URL may hold a password: no message below quotes it
            parts = urlsplit(smtp_url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"{SMTP_URL_HINT}; its port (or host) is not valid") from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(f"{SMTP_URL_HINT}, got scheme {parts.scheme!r}")
        if port == 0:
            raise ConfigError(f"{SMTP_URL_HINT}; port 0 is not valid")
        self.host, self.port = parts.hostname, port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender, self.timeout, self.unsubscribe = sender, timeout, unsubscribe
        self.tls_context = tls_context

    def __repr__(self) -> str:
        return f"EmailChannel(host={self.host!r}, port={self.port})"

    def build(self, message: OutboundMessage, *, now: datetime | None = None) -> EmailMessage:
        if not message.address:
            raise DeliveryError("the user has no email address", retryable=False)
        try:
            to = email_address(message.address)
        except ValueError as exc:
            raise DeliveryError(f"the user's email address {exc}", retryable=False) from None
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        subject = flat(message.title)
        mail["Subject"] = _EncodedHeader("Subject", subject) if "=?" in subject else subject
        mail["Date"] = format_datetime(now or datetime.now(UTC))
        mail["Message-ID"] = f"<{message.message_id}@tagloop>"
        lines = [message.body, ""] + [f"- {flat(_item_title(item))}" for item in message.items]
        if self.unsubscribe is not None:
            link = self.unsubscribe.url(message.message_id)
            mail["List-Unsubscribe"] = _VerbatimHeader("List-Unsubscribe", f"<{link}>")
            if self.unsubscribe.one_click:
                mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            lines += ["", f"Unsubscribe: {link}"]
        mail.set_content("\n".join(lines))
        return mail

    def send(self, message: OutboundMessage) -> None:
        try:
            mail = self.build(message)
        except (ValueError, TypeError) as exc:  # what the email package refuses in a header value
            raise DeliveryError(f"cannot build the mail: {type(exc).__name__}", retryable=False) from None
        context = self.tls_context or ssl.create_default_context()
        deadline = _Deadline(self.timeout)
        try:
            with deadline, self._connect(context, deadline) as smtp:
                if self.user and self.password:
                    smtp.login(self.user, self.password)
                smtp.send_message(mail)
        except DeliveryError:
            raise
        except Exception as exc:
            failure = self._failure(exc, deadline)
            if failure is None:
                raise
            raise failure from None

    def _failure(self, exc: Exception, deadline: _Deadline) -> DeliveryError | None:
        """What a send's exception means for delivery (None: not a delivery problem, raised as is)."""
        if deadline.expired:  # whatever the cut connection raised
            return DeliveryError(
                f"SMTP took longer than {self.timeout:g} s (the send's time limit)", retryable=True
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"the SMTP server's TLS certificate is not trusted ({exc.verify_message});"
                " SSL_CERT_FILE can name the CA bundle to trust",
                retryable=True,
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return DeliveryError(f"SMTP answered {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            transient = bool(codes) and all(400 <= code < 500 for code in codes)
            return DeliveryError(
                f"SMTP refused the recipient ({', '.join(map(str, codes))})", retryable=transient
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):  # AUTH not offered, SMTPUTF8 needed, …
            return DeliveryError(f"the SMTP server does not support it: {exc}", retryable=False)
        if isinstance(exc, socket.gaierror):  # a resolver outage, or a name not found right now
            return DeliveryError(
                f"cannot resolve SMTP host {self.host!r}: {exc.strerror or exc}", retryable=True
            )
        if isinstance(exc, TimeoutError | smtplib.SMTPException | OSError):
            return DeliveryError(f"SMTP failed: {type(exc).__name__}", retryable=True)
        return None

    def _connect(self, context: ssl.SSLContext, deadline: _Deadline) -> smtplib.SMTP:
        """A connection, encrypted whenever the server can: implicit TLS for smtps://, else STARTTLS
        when offered. Credentials need encryption: without it this raises before any login."""
        smtp = (
            smtplib.SMTP_SSL(timeout=self.timeout, context=context)
            if self.tls
            else smtplib.SMTP(timeout=self.timeout)
        )
        smtp._host = self.host  # type: ignore[attr-defined]  # as the constructor sets it: TLS checks it
        deadline.watch(smtp)  # from the greeting on (connecting in the constructor read it unwatched)
        try:
            smtp.connect(self.host, self.port)
            if deadline.expired:  # it expired while connecting (a slow name lookup): no socket was cut
                raise TimeoutError
            if self.tls:
                return smtp
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif self.user:
                raise DeliveryError(
                    "the SMTP server offers no STARTTLS, so the password is not sent: use smtps://"
                    " or a server with STARTTLS",
                    retryable=True,
                )
        except BaseException:
            smtp.close()
            raise
        return smtp


class _Deadline:
    """The send's time limit: when it is up, the connection's socket is shut down, so whatever
    smtplib waits for fails at once. smtplib's timeout bounds each read, not their sum: a server
    answering a byte at a time held a send (and the worker's delivery loop) for minutes."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._smtp: smtplib.SMTP | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, smtp: smtplib.SMTP) -> None:
        self._smtp = smtp

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        sock = self._smtp.sock if self._smtp is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _item_title(item: Any) -> object:
    if not isinstance(item, dict):
        return item
    return item.get("title") or item.get("id") or ""
