"""The `email` channel: one plain-text mail per message over SMTP (`TAGLOOP_SMTP_URL`,
`smtp://host:port`, or `smtps://` for implicit TLS), `Message-ID` derived from the message id.
Connection problems and 4xx SMTP replies are retryable; 5xx replies (bad address, refused) are not."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from urllib.parse import urlsplit

from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage


class EmailChannel:
    name = "email"

    def __init__(self, smtp_url: str, sender: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"TAGLOOP_SMTP_URL must look like smtp://host:port, got scheme {parts.scheme!r}"
            )
        self.host, self.port = parts.hostname, parts.port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.user, self.password = parts.username, parts.password
        self.sender, self.timeout = sender, timeout

    def __repr__(self) -> str:
        return f"EmailChannel(host={self.host!r}, port={self.port})"

    def build(self, message: OutboundMessage) -> EmailMessage:
        if not message.address:
            raise DeliveryError("the user has no email address", retryable=False)
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.address
        mail["Subject"] = message.title.replace("\n", " ")
        mail["Message-ID"] = f"<{message.message_id}@tagloop>"
        lines = [message.body, ""] + [f"- {item.get('title') or item.get('id')}" for item in message.items]
        mail.set_content("\n".join(lines))
        return mail

    def send(self, message: OutboundMessage) -> None:
        mail = self.build(message)
        smtp_cls = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        try:
            with smtp_cls(self.host, self.port, timeout=self.timeout) as smtp:
                if self.user and self.password:
                    smtp.login(self.user, self.password)
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP answered {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP refused the recipient", retryable=False) from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP failed: {type(exc).__name__}", retryable=True) from None
