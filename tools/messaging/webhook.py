"""The `webhook` channel (SPEC §5): POST the message JSON to the configured URL, signed with
Standard Webhooks headers (`webhook-id` = message id, so receivers dedupe on it). 2xx is success;
5xx, 429, timeouts, connection errors and a host name that does not resolve (a resolver outage)
are retryable `DeliveryError`s; other 4xx and SSRF refusals are not. The SSRF guard runs before
every request, and (unless private targets are allowed) again on the addresses each connection goes
to (`ssrf.pinned_transport`: no DNS rebinding between check and connect)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.ssrf import (
    UnresolvedHost,
    UnsafeURL,
    check_url,
    pinned_transport,
    unresolved,
)

MIN_SECRET_BYTES = 16  # Standard Webhooks recommends 24 to 64 random bytes; 3 were accepted


def signer(secret: str, setting: str) -> Webhook:
    """The Standard Webhooks signer of `secret` (`whsec_<base64>` or bare base64); a `ConfigError`
    naming `setting`, never quoting the secret, when it is empty, not base64 or shorter than
    `MIN_SECRET_BYTES` (a guessable key)."""
    try:
        webhook = Webhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError, …: the library's own types
        raise ConfigError(
            f"{setting} is not a Standard Webhooks secret (whsec_ followed by base64)"
        ) from None
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # as Webhook decoded it
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{setting} is too short: its key has {len(key)} bytes, at least"
            f" {MIN_SECRET_BYTES} are needed (Standard Webhooks recommends 24 to 64 random bytes)"
        )
    return webhook


def check_endpoint(url: str, setting: str) -> None:
    """A `ConfigError` naming `setting` unless `url` is http(s)://host… (what the SSRF guard
    checks at send time, without resolving the host)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(
            f"{setting} must be an http(s)://host/… URL; its host or port is not valid"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:  # the URL may hold credentials
        got = f"scheme {parts.scheme!r}" if parts.scheme not in ("http", "https") else "no host"
        raise ConfigError(f"{setting} must be an http(s)://host/… URL, got {got}")


def _proxied(url: str) -> bool:
    """Does the environment send `url` through a proxy (HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, minus
    NO_PROXY), as httpx would?"""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _lookup_failure(exc: BaseException) -> socket.gaierror | None:
    """The failed name lookup behind `exc` (httpx's ConnectError, raised from httpcore's), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, socket.gaierror):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        client: httpx.Client | None = None,
    ) -> None:
        check_endpoint(url, "the webhook URL")
        self.url = url
        self._host = urlsplit(url).hostname or ""
        self._signer = signer(secret, "the webhook secret")
        self.allow_private = allow_private
        # Connections pinned to the checked addresses, unless private targets are allowed or the
        # URL goes through the environment's proxy (HTTP(S)_PROXY, the deployment's only way out,
        # which resolves the name itself: the check before each send still applies)
        pinned = not allow_private and not _proxied(url)
        self._client = client or httpx.Client(
            timeout=timeout, follow_redirects=False, transport=pinned_transport() if pinned else None
        )

    def __repr__(self) -> str:
        parts = urlsplit(self.url)  # scheme and host only: the path, query or userinfo may hold a token
        return f"WebhookChannel(url='{parts.scheme}://{parts.hostname}…')"

    def headers(self, message_id: str, body: str, now: datetime) -> dict[str, str]:
        now = now.astimezone(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(message_id, now, body),
        }

    def send(self, message: OutboundMessage) -> None:
        try:
            check_url(self.url, allow_private=self.allow_private)
        except UnsafeURL as exc:
            raise DeliveryError(str(exc), retryable=False) from None
        except UnresolvedHost as exc:
            raise DeliveryError(str(exc), retryable=True) from None
        body = json.dumps(message.payload(), ensure_ascii=False, separators=(",", ":"))
        try:
            reply = self._client.post(
                self.url,
                content=body.encode(),
                headers=self.headers(message.message_id, body, datetime.now(UTC)),
            )
        except UnsafeURL as exc:  # the address the connection was about to use (rebinding)
            raise DeliveryError(str(exc), retryable=False) from None
        except UnresolvedHost as exc:  # the connection's own resolution failed
            raise DeliveryError(str(exc), retryable=True) from None
        except httpx.TimeoutException:
            raise DeliveryError("webhook timed out", retryable=True) from None
        except httpx.HTTPError as exc:
            failure = _lookup_failure(exc)
            if failure is not None:  # private targets allowed: httpx's own connection resolved the name
                raise DeliveryError(str(unresolved(self._host, failure)), retryable=True) from None
            raise DeliveryError(f"webhook request failed: {type(exc).__name__}", retryable=True) from None
        if reply.is_success:
            return
        retryable = reply.status_code >= 500 or reply.status_code in (408, 425, 429)
        raise DeliveryError(f"webhook answered HTTP {reply.status_code}", retryable=retryable)

    def close(self) -> None:
        self._client.close()
