"""The delivery loop over the outbox: claim due messages (SKIP LOCKED, leased), re-check the guards
at send time, send, and record the outcome — each step in its own short transaction.

At send time a message is
- cancelled when the user has no consent for the channel any more, or unsubscribed (an
  `unsubscribe` event, global or for that channel) — also one that arrived after it was enqueued —
  or is in the policy's holdout (a holdout that grew since the message was queued keeps its
  users free of messages, so the experiment stays clean);
- deferred, without spending an attempt, to the end of the user's quiet hours, or to when a
  frequency cap allows it again;
- sent; a retryable `DeliveryError` (5xx, 429, timeouts, connection errors, a host name that does
  not resolve) schedules the next attempt after an exponential backoff with jitter
  (`base · 2^(attempt−1)`, capped, times U[0.5, 1)); a non-retryable one (other 4xx, no address,
  SSRF refusal) or the last allowed attempt dead-letters it (`status = 'dead'`, reported by
  `dead_letters`). Any other exception a channel raises (a bug, data the channel cannot encode)
  dead-letters that message too: it would fail the same way again.
The claim commits before the send. Each message is then handled in a transaction of its own that
first waits for any other sender of the same user (so caps count what they sent), then locks the
message only if it is still this batch's claim, with a fresh lease, and reads the user's consent,
unsubscribes and sends as of that moment (`store.take_claimed`): an unsubscribe stored while the
batch is under way stops the sends after it. A batch renews its lease on the
messages it has not reached yet whenever half of it has passed, so a slow receiver does not let
another worker claim them (which spent an attempt on every claim and dead-lettered messages that
were never sent); a worker that stops renewing (it died, or one send outlasted half a lease) loses
them to the next claim: `lost`, never sent twice. So a message is sent twice only when a worker
dies mid-send; then the lease expires and it is sent again with the same `webhook-id`. A message
claimed again after its last allowed attempt (the worker died or the lease ran out each time) is
dead-lettered without another send, so one poison message cannot crash workers forever.
A worker asked to stop (`stop`, checked before each message) finishes the send under way and
releases the rest of its claim at once (`released`: pending again, due as before, the attempt the
claim counted given back), so another worker can take them without waiting for the lease.
Each claimed message is settled on its own (sent, retrying, dead, cancelled or deferred): an
unexpected error while handling one dead-letters it and the loop goes on with the others; only a lost
database connection stops the round (the leases then expire and the messages are claimed again).
`deliver_due` owns its transactions: pass a connection that is not inside one.

Prometheus metrics (default registry, so any exporter of the process serves them):
`tagloop_messages_total{channel, outcome}` (sent, retrying = failed with a retry due, dead,
cancelled, deferred, lost = claimed by another worker after this one's lease ran out, released =
handed back unsent by a stopping worker),
`tagloop_delivery_latency_seconds{channel}` (scheduled send time → sent) and
`tagloop_delivery_send_seconds{channel}` (the channel call itself).
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cache
from typing import Any

import numpy as np
import psycopg
from prometheus_client import Counter, Histogram

from tagloop.policies import check_caps, check_unsubscribed, has_consent, in_holdout, next_allowed_time
from tagloop.policies.config import ChannelCap
from tagloop.policies.guards import zone
from tagloop.tools.errors import TagloopError
from tagloop.tools.messaging.channels import Channel, DeliveryError, OutboundMessage
from tagloop.tools.store import outbox as store

log = logging.getLogger("tagloop.delivery")


LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class DeliveryMetrics:
    messages: Counter
    latency: Histogram
    send: Histogram


@cache
def delivery_metrics() -> DeliveryMetrics:
    """The process's delivery metrics, registered in the default registry on first use."""
    return DeliveryMetrics(
        Counter(
            "tagloop_messages", "Outbox messages handled, by channel and outcome.", ["channel", "outcome"]
        ),
        Histogram(
            "tagloop_delivery_latency_seconds",
            "Seconds from a message's scheduled send time to its successful send.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
        ),
        Histogram(
            "tagloop_delivery_send_seconds",
            "Seconds spent in the channel's send call.",
            ["channel"],
            buckets=SEND_BUCKETS,
        ),
    )


@dataclass(frozen=True)
class DeliveryConfig:
    max_attempts: int = 6
    backoff: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(minutes=5)
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    quiet_exempt: frozenset[str] = frozenset({"file", "console"})
    caps: Mapping[str, ChannelCap] = field(default_factory=dict)
    holdout_share: float = 0.0  # the policy's holdout, checked again at send time
    holdout_salt: str = "tagloop-holdout-v1"


OUTCOMES = ("sent", "retrying", "dead", "cancelled", "deferred", "lost", "released")  # of a claimed message


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # claimed, then claimed by another worker (lease ran out)
    released: list[str] = field(default_factory=list)  # claimed, handed back unsent (the worker stops)

    def add(self, other: DeliveryReport) -> None:
        """Count `other` (a later round) in this report too."""
        self.claimed += other.claimed
        for outcome in OUTCOMES:
            getattr(self, outcome).extend(getattr(other, outcome))

    def summary(self) -> dict[str, int]:
        return {"claimed": self.claimed, **{outcome: len(getattr(self, outcome)) for outcome in OUTCOMES}}


def backoff(attempt: int, cfg: DeliveryConfig, rng: np.random.Generator) -> timedelta:
    """Wait before attempt `attempt + 1`: min(base · 2^(attempt−1), max) · U[0.5, 1)."""
    raw = min(cfg.backoff * (2 ** max(attempt - 1, 0)), cfg.backoff_max)
    return raw * float(rng.uniform(0.5, 1.0))


def deliver_due(
    conn: psycopg.Connection[Any],
    channels: Mapping[str, Channel],
    cfg: DeliveryConfig,
    *,
    now: datetime,
    rng: np.random.Generator,
    ids: list[str] | None = None,
    limit: int = 100,
    stop: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Claim up to `limit` due messages (only `ids` when given), check guards, send, record; once
    `stop()` is true, release the messages not reached yet instead (see the module docstring)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise TagloopError("deliver_due needs a connection outside a transaction (commit first)")
    report = DeliveryReport()
    metrics = delivery_metrics()
    with conn.transaction():
        # only what this process can send: a worker without email set up dead-lettered every
        # due mail of the deployment ("channel 'email' is not configured") that it claimed
        claimed = store.claim_due(
            conn, now=now, limit=limit, ids=ids, lease=cfg.lease, channels=channels.keys()
        )
    report.claimed = len(claimed)
    claimed.sort(key=lambda r: (r["next_attempt_at"], str(r["id"])))  # oldest due first
    lease_end = claimed[0]["claimed_until"] if claimed else now
    lost: set[str] = set()
    started = clock.monotonic()
    for n, row in enumerate(claimed):
        if stop is not None and stop():
            rest = [str(r["id"]) for r in claimed[n:] if str(r["id"]) not in lost]
            with conn.transaction():
                report.released = store.release_claims(conn, rest, mine=lease_end)
            for r in claimed[n:]:
                if str(r["id"]) in report.released:
                    metrics.messages.labels(r["channel"], "released").inc()
            break
        message_id = str(row["id"])
        at = now + timedelta(seconds=clock.monotonic() - started)  # the batch's sends take time
        if at >= lease_end - cfg.lease / 2:  # half the lease gone: keep the rest of the batch ours
            rest = [str(r["id"]) for r in claimed[n:]]
            with conn.transaction():
                kept = store.renew_claims(conn, rest, mine=lease_end, until=at + cfg.lease)
            lease_end = at + cfg.lease
            lost.update(set(rest) - kept)
        row = {**row, "claimed_until": lease_end}
        try:
            with conn.transaction():
                fresh = (
                    None
                    if message_id in lost
                    else store.take_claimed(conn, row, now=at, lease=cfg.lease, since=at - timedelta(days=8))
                )
                # None: too late, the lease had run out and another worker has the message now
                verdict = (
                    "lost" if fresh is None else _send_one(conn, {**row, **fresh}, channels, cfg, at, rng)
                )
        except psycopg.OperationalError:
            raise  # the connection is gone: nothing more can be recorded in this round
        except Exception as exc:  # one message must not leave the batch claimed
            log.exception("delivery of message %s failed unexpectedly", message_id)
            if not _dead_letter(conn, message_id, f"unexpected {type(exc).__name__}: {exc}", at):
                continue
            verdict = "dead"
        getattr(report, verdict).append(message_id)
        metrics.messages.labels(row["channel"], verdict).inc()
        if verdict == "sent":
            late = (at - row["send_at"]).total_seconds()
            metrics.latency.labels(row["channel"]).observe(max(late, 0.0))
        elif verdict == "dead":  # each one said (its error, which may quote an address, is stored)
            log.warning(
                "event=dead_letter message=%s channel=%s attempts=%d: see tagloop decisions dead-letters",
                message_id,
                row["channel"],
                row["attempts"],
            )
    log.info("delivery %s", " ".join(f"{k}={v}" for k, v in report.summary().items()))
    return report


def _dead_letter(conn: psycopg.Connection[Any], message_id: str, error: str, now: datetime) -> bool:
    """Dead-letter `message_id` in a transaction of its own; False when even that fails (the lease
    then expires and the message is claimed again, past its attempts, and dead-lettered then)."""
    try:
        with conn.transaction():
            store.mark_failed(conn, message_id, error=error, retry_in=None, now=now)
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        log.exception("cannot dead-letter message %s", message_id)
        return False
    return True


def _send_one(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    channels: Mapping[str, Channel],
    cfg: DeliveryConfig,
    now: datetime,
    rng: np.random.Generator,
) -> str:
    """Check, send and record one message, from `row`: the claim with `take_claimed`'s fresh reads."""
    message_id, channel_name, user_id = str(row["id"]), row["channel"], row["user_id"]
    reason = _blocked(row["consent"] or {}, row["unsubscribed"], channel_name, now)
    if not reason and in_holdout(user_id, cfg.holdout_share, cfg.holdout_salt):
        reason = "user is in the holdout (the policy's holdout grew since the message was queued)"
    if reason:
        store.cancel(conn, message_id, reason)
        return "cancelled"
    if row["attempts"] > cfg.max_attempts:  # claimed again after the last attempt never finished
        store.mark_failed(
            conn,
            message_id,
            error=f"gave up after {cfg.max_attempts} attempts (the last did not finish: the sender "
            "died or its lease ran out)",
            retry_in=None,
            now=now,
        )
        return "dead"
    if channel_name not in cfg.quiet_exempt:
        allowed_at = next_allowed_time(now, row["timezone"], cfg.quiet_start, cfg.quiet_end)
        if allowed_at > now:
            store.defer(conn, message_id, until=allowed_at, reason="quiet hours")
            return "deferred"
    cap = check_caps({channel_name: list(row["sent"])}, channel_name, now, cfg.caps)
    if not cap:
        if cap.retry_at is None:
            store.cancel(conn, message_id, cap.reason or "cap reached")
            return "cancelled"
        store.defer(conn, message_id, until=cap.retry_at, reason=cap.reason or "cap reached")
        return "deferred"
    channel = channels.get(channel_name)
    if channel is None:
        store.mark_failed(
            conn, message_id, error=f"channel {channel_name!r} is not configured", retry_in=None, now=now
        )
        return "dead"
    message = OutboundMessage(
        message_id=message_id,
        decision_id=str(row["decision_id"]),
        user_id=user_id,
        channel=channel_name,
        title=row["title"],
        body=row["body"],
        items=row["items"],
        send_at=row["send_at"].isoformat(),
        address=row["address"],
    )
    started = clock.perf_counter()
    try:
        channel.send(message)
    except DeliveryError as exc:
        if exc.retryable and row["attempts"] < cfg.max_attempts:
            store.mark_failed(
                conn, message_id, error=str(exc), retry_in=backoff(row["attempts"], cfg, rng), now=now
            )
            return "retrying"
        store.mark_failed(conn, message_id, error=str(exc), retry_in=None, now=now)
        return "dead"
    except Exception as exc:  # not a network problem: it would fail the same way again
        log.warning(
            "channel %s raised %s for message %s: dead-lettered", channel_name, type(exc).__name__, message_id
        )
        store.mark_failed(
            conn,
            message_id,
            error=f"{channel_name} failed: {type(exc).__name__}: {exc}",
            retry_in=None,
            now=now,
        )
        return "dead"
    finally:
        delivery_metrics().send.labels(channel_name).observe(clock.perf_counter() - started)
    store.mark_sent(conn, message_id, now, _local_hour(now, row["timezone"]))
    return "sent"


def _local_hour(now: datetime, tz: str) -> int | None:
    """The hour of `now` in zone `tz` (None for a zone this machine lacks)."""
    try:
        return now.astimezone(zone(tz)).hour
    except TagloopError:
        return None


def _blocked(
    consent: Mapping[str, bool], unsub: Mapping[str, datetime], channel: str, now: datetime
) -> str | None:
    """Why the user may not get a message on `channel` now (no consent, unsubscribed), or None."""
    for verdict in (
        has_consent(consent, channel),
        check_unsubscribed(unsub.get("*"), channel, now),
        check_unsubscribed(unsub, channel, now),
    ):
        if not verdict:
            return verdict.reason or "blocked"
    return None
