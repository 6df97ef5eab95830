"""Who may call the API and how often: bearer API keys (constant-time comparison against every
configured key), Standard Webhooks signatures for `/v1/events` (any configured secret, so secrets
can rotate; 5-minute timestamp tolerance; HMAC over the raw body bytes), a per-principal token
bucket, and reading a request body under a byte limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Mapping

from fastapi import Request

from tagloop.agent.http.problems import PayloadTooLarge, RateLimited, Unauthorized
from tagloop.agent.settings import Settings
from tagloop.tools.messaging.webhook import signer

TOLERANCE_SECONDS = 5 * 60  # as the standardwebhooks library checks it


class Auth:
    def __init__(self, settings: Settings) -> None:
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys if k.get_secret_value()]
        secrets = [s.get_secret_value() for s in settings.webhook_secrets]
        self._webhooks = [signer(s, "TAGLOOP_WEBHOOK_SECRETS") for s in secrets if s]

    def bearer(self, headers: Mapping[str, str]) -> str:
        """The principal (a hash of the key) of a valid `Authorization: Bearer` header, else 401."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing credentials: send `Authorization: Bearer <api key>`")
        given = token.strip().encode()
        matched = False
        for key in self._keys:  # compare against every key: timing does not reveal which matched
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise Unauthorized("invalid API key")
        return "key:" + hashlib.sha256(given).hexdigest()[:12]

    def webhook_headers(self, headers: Mapping[str, str], now: float | None = None) -> dict[str, str]:
        """The three Standard Webhooks headers, checked as far as they can be without the body (all
        present, a secret configured, the timestamp within the 5-minute tolerance), else 401: a
        request without credentials is refused before its body is read, so it gets 401 however
        large the body is, not 413."""
        wanted = {k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        if not all(wanted.values()) or not self._webhooks:
            raise Unauthorized("missing credentials: send a bearer API key or Standard Webhooks headers")
        try:  # seconds, read as the library reads them (float)
            sent = float(wanted["webhook-timestamp"])
        except ValueError:
            sent = math.nan
        if not math.isfinite(sent):
            raise Unauthorized("invalid webhook signature")
        if abs((time.time() if now is None else now) - sent) > TOLERANCE_SECONDS:
            raise Unauthorized("webhook timestamp outside the 5-minute tolerance")
        return wanted

    def webhook(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The principal of a valid Standard Webhooks signature over `body`, else 401."""
        wanted = self.webhook_headers(headers)
        for number, hook in enumerate(self._webhooks):
            try:  # over the bytes as sent: a body that is not UTF-8 is then a 422 naming the body
                hook.verify(body, wanted, json_parse=False)
            except Exception as exc:  # the library raises several types for bad headers
                if "too old" in str(exc) or "too new" in str(exc):
                    raise Unauthorized("webhook timestamp outside the 5-minute tolerance") from None
                continue
            return f"webhook:{number}"
        raise Unauthorized("invalid webhook signature")

    def either(self, body: bytes, headers: Mapping[str, str]) -> str:
        if "authorization" in headers:
            return self.bearer(headers)
        return self.webhook(body, headers)


class RateLimiter:
    """A token bucket per principal: `per_minute` requests a minute, bursts up to that many."""

    SWEEP_EVERY = 1024  # checks between sweeps of the buckets that have refilled

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._checks = 0

    def check(self, principal: str, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._checks += 1
            if self._checks % self.SWEEP_EVERY == 0:
                self._sweep(now)
            tokens, last = self._buckets.get(principal, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[principal] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise RateLimited(f"rate limit of {int(self.capacity)} requests a minute exceeded", retry)
            self._buckets[principal] = (tokens - 1.0, now)

    def _sweep(self, now: float) -> None:
        """Forget every bucket that has refilled: it is the same as none. Principals are many and
        short-lived for unsubscribe links (one per message), and the dict grew for the process's
        whole life (~240 bytes a link a mail scanner fetched)."""
        full = [
            p
            for p, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.capacity
        ]
        for principal in full:
            del self._buckets[principal]

    def __len__(self) -> int:
        return len(self._buckets)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) a declared or actual length over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared):,} bytes is over the {limit:,}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
