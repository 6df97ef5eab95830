"""The email channel against a local SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from msg_support import MESSAGE, Inbox

from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.email import EmailChannel


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


def _with(**changes: object) -> OutboundMessage:
    return OutboundMessage(**{**MESSAGE.__dict__, **changes})


@pytest.mark.parametrize(
    "address",
    [
        "e2@example.test\r\nBcc: evil@attacker.test",  # header injection
        "e3@example.test, victim@attacker.test",  # a second recipient
        "e3@example.test,victim@attacker.test",
        "Listener <victim@attacker.test>",  # a display name
        "listener@example.org <victim@attacker.test>",
        "(comment) listener@example.org",
    ],
)
def test_a_to_that_is_not_exactly_one_plain_address_is_refused_before_sending(
    smtp: tuple[str, Inbox], address: str
) -> None:
    """Defence in depth behind the import validation: rows stored before it, or written directly."""
    url, inbox = smtp
    with pytest.raises(DeliveryError) as err:
        EmailChannel(url, "tagloop@example.org", timeout=5).send(_with(address=address))
    assert not err.value.retryable and "email address" in str(err.value)
    assert inbox.mails == []


def test_mail_has_a_date_a_stable_message_id_and_an_ascii_idna_recipient(smtp: tuple[str, Inbox]) -> None:
    url, inbox = smtp
    before = datetime.now(UTC).replace(microsecond=0)
    channel = EmailChannel(url, "tagloop@example.org", timeout=5)
    channel.send(_with(address="listener@exämple.test"))
    channel.send(_with(address="listener@exämple.test"))  # a resend: the same Message-ID
    first, second = (message_from_bytes(m.content, policy=policy.default) for m in inbox.mails)
    sent_at = parsedate_to_datetime(first["Date"])
    assert sent_at.tzinfo is not None and before <= sent_at <= datetime.now(UTC)
    assert first["Message-ID"] == second["Message-ID"] == f"<{MESSAGE.message_id}@tagloop>"
    assert inbox.mails[0].rcpt_tos == ["listener@xn--exmple-cua.test"]


@pytest.mark.parametrize(
    "title",
    [
        "=?utf-8?q?encoded?= word",
        "=?utf-8?b?SGVsbG8=?=",
        "Grüße =?iso-8859-1?q?caf=E9?= " + "long " * 30,
        "New for you: Ünïcode",
    ],
)
def test_subject_arrives_as_the_literal_title_even_when_it_looks_encoded(
    smtp: tuple[str, Inbox], title: str
) -> None:
    """The email package decodes an encoded word in a header value it is given and then sends the
    decoded text: a client would show "encoded word" for the title "=?utf-8?q?encoded?= word"."""
    url, inbox = smtp
    EmailChannel(url, "tagloop@example.org", timeout=5).send(_with(title=title))
    raw = inbox.mails[0].content
    mail = message_from_bytes(raw, policy=policy.default)
    assert str(mail["Subject"]) == " ".join(title.split())
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_control_characters_in_titles_are_flattened_in_subject_and_body(smtp: tuple[str, Inbox]) -> None:
    url, inbox = smtp
    items = [{"id": "i1", "title": "Song\tA\u2028Bcc: x\x85y\r\nz"}, {"id": "i2", "title": ""}]
    EmailChannel(url, "tagloop@example.org", timeout=5).send(_with(title="New\r\nBcc: evil", items=items))
    mail = message_from_bytes(inbox.mails[0].content, policy=policy.default)
    assert str(mail["Subject"]) == "New Bcc: evil" and mail["Bcc"] is None
    lines = mail.get_content().splitlines()
    assert "- Song A Bcc: x y z" in lines and "- i2" in lines
    assert not any(ch in mail.get_content() for ch in "\t\u2028\x85")


@pytest.mark.parametrize(
    "url",
    [
        "smtp://user:s3cret-pw@127.0.0.1:notaport",
        "smtp://user:s3cret-pw@127.0.0.1:99999",
        "smtp://user:s3cret-pw@[::1:25",
        "smtp://user:s3cret-pw@127.0.0.1:0",
    ],
)
def test_a_malformed_smtp_url_is_a_config_error_that_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        EmailChannel(url, "tagloop@example.org")
    assert "TAGLOOP_SMTP_URL" in str(err.value) and "s3cret" not in str(err.value)


def test_smtp_credentials_are_percent_decoded() -> None:
    channel = EmailChannel("smtp://me%40example.org:p%40ss%3Aw@127.0.0.1:2525", "t@example.org")
    assert (channel.user, channel.password, channel.port) == ("me@example.org", "p@ss:w", 2525)


def test_tagloop_run_with_a_bad_smtp_port_prints_one_error_line_and_exits_2(
    tagloop_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGLOOP_SMTP_URL", "smtp://user:s3cret-pw@127.0.0.1:notaport")
    tagloop = Path(sys.executable).with_name("tagloop")
    done = subprocess.run(
        [str(tagloop), "run", "--all"], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: TAGLOOP_SMTP_URL")
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_a_server_answering_a_byte_at_a_time_cannot_hold_a_send_past_its_timeout() -> None:
    """smtplib's timeout bounds each read: a greeting trickled a byte every 0.2 s held a 1 s send
    for as long as the server liked (here ~8 s; the worker's delivery loop with it)."""
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    done = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            for byte in b"220 slow.example ESMTP ready, eventually, if you wait long enough\r\n":
                if done.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match="longer than 1 s") as err:
            EmailChannel(f"smtp://127.0.0.1:{port}", "t@example.org", timeout=1).send(MESSAGE)
    finally:
        done.set()
        listener.close()
    assert err.value.retryable
    assert time.monotonic() - started < 4  # the trickle alone lasts ~13 s
