"""One-click unsubscribe links for mail (RFC 8058 and RFC 2369's `List-Unsubscribe`).

With `TAGLOOP_PUBLIC_URL` (where mail readers reach this tagloop's HTTP API) and
`TAGLOOP_UNSUBSCRIBE_SECRET` set, every mail carries a link
`{public_url}/v1/unsubscribe/{message_id}?token=…`, in its headers and at the end of its body. The
token is an HMAC-SHA256 of the message id under the secret, so a link names one message and cannot
be made up for another; the API turns a POST to it into an `unsubscribe` event of that message's
user and channel (agent/http/unsubscribe.py). No user id or address appears in the link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from tagloop.tools.errors import ConfigError

PATH = "/v1/unsubscribe/"
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Makes and checks the links; `secret` is never shown by `repr`."""

    public_url: str
    secret: bytes = field(repr=False)

    @classmethod
    def of(cls, public_url: str | None, secret: str | None) -> UnsubscribeLinks | None:
        """The links the settings ask for: None when neither is set; a `ConfigError` naming the
        setting when only one is, or when either is unusable."""
        if not public_url and not secret:
            return None
        if not public_url or not secret:
            missing = "TAGLOOP_PUBLIC_URL" if not public_url else "TAGLOOP_UNSUBSCRIBE_SECRET"
            raise ConfigError(
                "unsubscribe links need both TAGLOOP_PUBLIC_URL and TAGLOOP_UNSUBSCRIBE_SECRET;"
                f" {missing} is not set"
            )
        try:
            parts = urlsplit(public_url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError("TAGLOOP_PUBLIC_URL is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(
                "TAGLOOP_PUBLIC_URL must be an http(s) URL with a host and no query, e.g. https://notify.example.com"
            )
        if not public_url.isascii() or any(ch.isspace() for ch in public_url):
            raise ConfigError(
                "TAGLOOP_PUBLIC_URL must be ASCII without spaces (it goes into mail headers as is):"
                " write an international host name in its xn-- form and percent-encode the path"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"TAGLOOP_UNSUBSCRIBE_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return cls(public_url.rstrip("/"), secret.encode())

    @property
    def one_click(self) -> bool:
        """RFC 8058 one-click needs an https link."""
        return self.public_url.startswith("https://")

    def token(self, message_id: str) -> str:
        digest = hmac.new(self.secret, message_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, message_id: str) -> str:
        return f"{self.public_url}{PATH}{quote(message_id, safe='')}?token={self.token(message_id)}"

    def valid(self, message_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(message_id).encode(), token.encode("utf-8", "replace"))
