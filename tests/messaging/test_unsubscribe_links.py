"""Unsubscribe links in mail: the settings that enable them (both or neither, usable values, one
clear error otherwise), tokens bound to one message, and the headers and text of a mail."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import compat32

import pytest
from msg_support import MESSAGE

from tagloop.agent.settings import load_settings
from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.email import EmailChannel
from tagloop.tools.messaging.unsubscribe import UnsubscribeLinks

SECRET = "s3cret-s3cret-s3cret"


def test_links_are_off_without_settings_and_need_both() -> None:
    assert UnsubscribeLinks.of(None, None) is None
    with pytest.raises(ConfigError, match="TAGLOOP_UNSUBSCRIBE_SECRET is not set"):
        UnsubscribeLinks.of("https://notify.example.com", None)
    with pytest.raises(ConfigError, match="TAGLOOP_PUBLIC_URL is not set"):
        UnsubscribeLinks.of(None, SECRET)


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("notify.example.com", SECRET, "must be an http"),
        ("ftp://notify.example.com", SECRET, "must be an http"),
        ("https://notify.example.com/?a=1", SECRET, "no query"),
        ("https://notify.example.com:99999", SECRET, "not a valid URL"),
        ("https://notify.example.com", "short", "at least 16"),
        ("https://notify.exämple.com", SECRET, "ASCII"),  # a mail header carries it as is
        ("https://notify.example.com/ab c", SECRET, "ASCII"),
    ],
)
def test_unusable_settings_are_one_config_error_that_hides_the_secret(
    url: str, secret: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(public_url=url, unsubscribe_secret=secret)
    assert secret not in str(err.value)


def test_a_token_is_bound_to_its_message_and_secret() -> None:
    links = UnsubscribeLinks.of("https://notify.example.com/", SECRET)
    assert links is not None and links.public_url == "https://notify.example.com"
    token = links.token(MESSAGE.message_id)
    assert links.valid(MESSAGE.message_id, token)
    assert not links.valid("7b0c2a8e-0000-5000-8000-000000000002", token)
    assert not links.valid(MESSAGE.message_id, token[:-1])
    assert not links.valid(MESSAGE.message_id, "ü" * 43)
    other = UnsubscribeLinks("https://notify.example.com", b"another-secret-1234")
    assert not other.valid(MESSAGE.message_id, token)
    assert SECRET not in repr(links)


def test_a_mail_carries_the_link_in_its_headers_and_text() -> None:
    links = UnsubscribeLinks.of("https://notify.example.com", SECRET)
    assert links is not None
    mail = EmailChannel("smtp://127.0.0.1:25", "t@example.org", unsubscribe=links).build(MESSAGE)
    link = links.url(MESSAGE.message_id)
    assert mail["List-Unsubscribe"] == f"<{link}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # on the wire the header is the link itself: RFC 2047 encoded words (=?utf-8?q?…) are not
    # allowed in it, and a mail provider looking for <https://…> would find nothing
    raw = message_from_bytes(mail.as_bytes(), policy=compat32)
    assert raw["List-Unsubscribe"] == f"<{link}>", raw["List-Unsubscribe"]
    assert mail.get_content().rstrip().endswith(f"Unsubscribe: {link}")
    # RFC 8058 one-click is for https links only; without links, no header at all
    plain = UnsubscribeLinks("http://localhost:8000", SECRET.encode())
    mail = EmailChannel("smtp://127.0.0.1:25", "t@example.org", unsubscribe=plain).build(MESSAGE)
    assert mail["List-Unsubscribe"] and mail["List-Unsubscribe-Post"] is None
    mail = EmailChannel("smtp://127.0.0.1:25", "t@example.org").build(MESSAGE)
    assert mail["List-Unsubscribe"] is None and "Unsubscribe" not in mail.get_content()
