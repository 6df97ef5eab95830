"""The `webhook` channel (SPEC §5): POST the message JSON to the configured URL, signed with
Standard Webhooks headers (`webhook-id` = message id, so receivers dedupe on it). 2xx is success;
5xx, 429, timeouts, connection errors and a host name that does not resolve (a resolver outage)
are retryable `DeliveryError`s; other 4xx and SSRF refusals are not. The SSRF guard runs before
every request, and (unless private targets are allowed) again on the addresses each connection goes
to (`ssrf.pinned_transport`: no DNS rebinding between check and connect).

The timeout bounds the whole send, check and name lookup included, up to the reply's status; the
reply's body is never needed, so a receiver that answers and then trickles its body does not hold
the send (httpx's timeout alone bounds each read, not their sum)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.endpoints import check_endpoint
from tagloop.tools.messaging.ssrf import (
    UnresolvedHost,
    UnsafeURL,
    check_url,
    pinned_transport,
    unresolved,
)

MAX_IN_FLIGHT = 16  # webhook sends under way in the process, each on its own daemon thread
_IN_FLIGHT = threading.BoundedSemaphore(MAX_IN_FLIGHT)
MAX_REPLY_BYTES = 64 * 1024  # of a reply's body read (and dropped): its status is the answer
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
        self.timeout = timeout
        # Connections pinned to the checked addresses, unless private targets are allowed or the
        # URL goes through the environment's proxy (HTTP(S)_PROXY, the deployment's only way out,
        # which resolves the name itself: the check before each send still applies)
        self._proxied = _proxied(url)
        pinned = not allow_private and not self._proxied
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
        """POST `message`, the whole send (the SSRF check with its name lookup, connecting, the
        request and the reply's status line and headers) within `timeout` seconds, else a retryable
        "timed out". The send runs on a daemon thread the caller stops waiting for at the deadline;
        at most `MAX_IN_FLIGHT` such threads run in the process (a receiver that trickles its
        headers holds one until it stops), and a send that finds none free in time is not made."""
        deadline = time.monotonic() + self.timeout
        in_flight = _IN_FLIGHT  # released by the thread: the same one, whatever the global is then
        if not in_flight.acquire(timeout=self.timeout):
            raise DeliveryError(
                f"webhook timed out (every sender busy for {self.timeout:g} s; the request was not made)",
                retryable=True,
            )
        answer: Future[int] = Future()
        try:
            threading.Thread(
                target=self._post_then_release,
                args=(message, deadline, answer, in_flight),
                name="webhook-send",
                daemon=True,
            ).start()
        except BaseException:
            in_flight.release()
            raise
        try:
            status = answer.result(timeout=max(deadline - time.monotonic(), 0.0))
        except FutureTimeout:
            raise DeliveryError(
                f"webhook timed out (no answer within {self.timeout:g} s)", retryable=True
            ) from None
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in (408, 425, 429)
        raise DeliveryError(f"webhook answered HTTP {status}", retryable=retryable)

    def _post_then_release(
        self, message: OutboundMessage, deadline: float, answer: Future[int], in_flight: threading.Semaphore
    ) -> None:
        try:
            self._post(message, deadline, answer)
        finally:
            in_flight.release()

    def _post(self, message: OutboundMessage, deadline: float, answer: Future[int]) -> None:
        """On a worker thread: the request, its status (or error) set on `answer` as soon as the
        headers are in; then at most `MAX_REPLY_BYTES` of the body, before the deadline, are read and
        dropped (a reply read to its end keeps the connection for the next send; a longer or slower
        one closes it), without changing the answer."""
        if not answer.set_running_or_notify_cancel():
            return
        try:
            check_url(self.url, allow_private=self.allow_private)
            body = json.dumps(message.payload(), ensure_ascii=False, separators=(",", ":"))
            with self._client.stream(
                "POST",
                self.url,
                content=body.encode(),
                headers=self.headers(message.message_id, body, datetime.now(UTC)),
                timeout=max(deadline - time.monotonic(), 0.001),  # each operation; the caller waits no longer
            ) as reply:
                answer.set_result(reply.status_code)
                read = 0
                for chunk in reply.iter_raw():
                    read += len(chunk)
                    if read > MAX_REPLY_BYTES or time.monotonic() > deadline:
                        break
        except Exception as exc:
            if not answer.done():
                answer.set_exception(self._failure(exc))

    def _failure(self, exc: Exception) -> Exception:
        """The `DeliveryError` for a failed request; an unexpected error as it is."""
        if isinstance(exc, UnsafeURL):  # the URL, or the address a connection was about to use (rebinding)
            return DeliveryError(str(exc), retryable=False)
        if isinstance(exc, UnresolvedHost):  # the check's or the connection's own name lookup
            return DeliveryError(str(exc), retryable=True)
        if isinstance(exc, httpx.TimeoutException):
            return DeliveryError(f"webhook timed out ({type(exc).__name__})", retryable=True)
        if isinstance(exc, httpx.HTTPError):
            failure = _lookup_failure(exc)
            if failure is not None and self._proxied:  # the name httpx looked up was the proxy's
                return DeliveryError(
                    f"cannot resolve the outbound proxy's host: {failure.strerror or failure}", retryable=True
                )
            if failure is not None:  # private targets allowed: httpx's own connection resolved the name
                return DeliveryError(str(unresolved(self._host, failure)), retryable=True)
            return DeliveryError(f"webhook request failed: {type(exc).__name__}", retryable=True)
        return exc

    def close(self) -> None:
        self._client.close()
