"""The loop behind `tagloop worker` (and the scheduler's sweep): claim due runs, decide, commit;
then deliver due messages. Any number of workers on one database share the work.

One decision cycle is one transaction: claim due `user_schedules` rows (or `run_queue` requests)
with SKIP LOCKED, take the per-user advisory locks, run the batch through the graph, advance the
schedules / delete the requests, commit. A worker killed mid-batch rolls all of it back, so the
users are claimed again by the next sweep; and since a decision id is uuid5(user, period), a user
gets at most one decision per cadence period whatever happens. A cadence run after an outage
belongs to the current period, so missed periods coalesce into one run.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import psycopg
from prometheus_client import Counter

from tagloop.agent.cadence import Cadence, cadences_from
from tagloop.agent.context import RunCache, RunFacts
from tagloop.agent.database import recovered
from tagloop.agent.runner import (
    decide,
    default_channels,
    delivery_config,
    load_facts,
    make_context,
    policy_of,
    sources_of,
)
from tagloop.agent.settings import Settings
from tagloop.tools import neighbors
from tagloop.tools.logsafe import hashed
from tagloop.tools.messaging.channels import Channel
from tagloop.tools.messaging.delivery import DeliveryReport, deliver_due
from tagloop.tools.profile_folder import FoldOptions, fold_pending
from tagloop.tools.store import runs
from tagloop.tools.store.db import first_line
from tagloop.tools.tagging.store import sync_new_tags
from tagloop.tools.timed import Timed

log = logging.getLogger("tagloop.worker")


@cache
def run_metrics() -> Counter:
    """Runs this process's workers decided, in the default registry (served by `serve`'s /metrics
    and by `--metrics-port`): the API's `tagloop_runs_total` counts only the runs asked over HTTP."""
    return Counter(
        "tagloop_scheduled_runs",
        "Runs decided by workers and the scheduler (cadences, queued triggers), by trigger and outcome.",
        ["trigger", "outcome"],
    )


Clock = Callable[[], datetime]
FACTS_TTL = timedelta(minutes=10)


@dataclass
class CycleReport:
    decided: list[tuple[str, str]] = field(default_factory=list)  # (user id, run key)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Worker:
    """Decides due runs and delivers due messages on one connection (`conn` or one it opens)."""

    def __init__(
        self,
        settings: Settings,
        conn: psycopg.Connection[Any],
        *,
        channels: Mapping[str, Channel] | None = None,
        clock: Clock = _utcnow,
        name: str = "worker",
        on_claimed: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.settings, self.conn, self.clock, self.name = settings, conn, clock, name
        self.channels = channels if channels is not None else default_channels(settings)
        self.policy = policy_of(settings)
        self.cadences: dict[str, Cadence] = cadences_from(settings.cadences, settings.cadence_spread)
        self.delivery = delivery_config(settings, self.policy)
        self.on_claimed = on_claimed
        self._facts: Timed[RunFacts] = Timed()
        self._cache = RunCache()  # item tags and Thompson propensities, renewed with the facts
        self._sources = sources_of(settings)  # their per-run reads, likewise
        self._seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")

    def facts(self, now: datetime) -> RunFacts:
        """The run facts, renewed every `FACTS_TTL` together with the run cache, the candidate
        sources, (when stale) the co-likes table and (when tags were created) the tag vocabulary,
        committed before the next claim."""

        def renew() -> RunFacts:
            if "co_likes" in self.settings.candidate_sources:  # before any claim: the daily
                neighbors.refresh_if_stale(self.conn, now)  # refresh holds no claimed user
            sync_new_tags(self.conn)  # tags PUT over HTTP since: variants merged, families set
            facts = load_facts(self.conn, now, self.policy)
            self._cache = RunCache()
            self._sources = sources_of(self.settings)
            self.conn.commit()
            return facts

        return self._facts.get(now, FACTS_TTL, renew)

    def decide_schedules(self, now: datetime) -> list[tuple[str, str]]:
        """One claim → decide → advance → commit cycle over due cadence rows."""
        facts = self.facts(now)
        done: list[tuple[str, str]] = []
        with self.conn.transaction():
            rows = self._claimed(runs.claim_schedules(self.conn, now=now, limit=self.settings.run_batch_size))
            advance = []
            for name in sorted({r["cadence"] for r in rows}):
                users = [r["user_id"] for r in rows if r["cadence"] == name]
                cadence = self.cadences.get(name)
                if cadence is None:  # a cadence removed from settings: look again tomorrow
                    advance += [(u, name, now + timedelta(days=1)) for u in users]
                    continue
                keys = {u: cadence.run_key(u, now) for u in users}
                failed = self._decide(now, facts, name, users, "schedule", keys)
                done += [(u, keys[u]) for u in users if u not in failed]
                advance += [(u, name, cadence.next_run_after(u, now)) for u in users]
            runs.advance_schedules(self.conn, advance, now)
        return done

    def decide_queue(self, now: datetime) -> list[tuple[str, str]]:
        """One claim → decide → delete → commit cycle over due run requests."""
        facts = self.facts(now)
        done: list[tuple[str, str]] = []
        with self.conn.transaction():
            rows = self._claimed(runs.claim_queue(self.conn, now=now, limit=self.settings.run_batch_size))
            for trigger in sorted({r["trigger"] for r in rows}):
                batch = [r for r in rows if r["trigger"] == trigger]
                keys = {r["user_id"]: f"{trigger}|{r['due_at'].isoformat()}" for r in batch}
                failed = self._decide(now, facts, trigger, list(keys), trigger, keys)
                done += [(u, k) for u, k in keys.items() if u not in failed]
            if rows:
                runs.delete_queued(
                    self.conn, [r["user_id"] for r in rows], due_before=max(r["due_at"] for r in rows)
                )
        return done

    def _claimed(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The claimed rows whose users this worker could lock (another worker or an API run may be
        deciding one of them right now; its row is claimed again later)."""
        locked = runs.lock_users(self.conn, [r["user_id"] for r in rows])
        rows = [r for r in rows if r["user_id"] in locked]
        if self.on_claimed and rows:
            self.on_claimed(rows)
        return rows

    def _decide(
        self,
        now: datetime,
        facts: RunFacts,
        run_key: str,
        users: list[str],
        trigger: str,
        keys: dict[str, str],
    ) -> set[str]:
        """Decide `users`; returns those that could not be decided (see `_one_by_one_on_failure`)."""

        def run(batch: list[str]) -> None:
            ctx = make_context(
                self.conn,
                self.settings,
                now=now,
                run_key=run_key,
                channels=self.channels,
                policy=self.policy,
                facts=facts,
                cache=self._cache,
                sources=self._sources,
                refresh_neighbors=False,  # done with the facts, outside this transaction
            )
            plans = decide(ctx, batch, trigger=trigger, run_keys=keys)
            counted = run_metrics()
            for plan in plans.values():
                counted.labels(trigger, plan.outcome).inc()

        return _one_by_one_on_failure(self.conn, users, run, self.name)

    def deliver(self, now: datetime, limit: int = 100, stop: threading.Event | None = None) -> DeliveryReport:
        rng = np.random.default_rng([self._seed, int(now.timestamp())])
        return deliver_due(
            self.conn,
            self.channels,
            self.delivery,
            now=now,
            rng=rng,
            limit=limit,
            stop=stop.is_set if stop is not None else None,
        )

    def run_once(
        self,
        *,
        decide_runs: bool = True,
        deliver: bool = True,
        max_cycles: int = 1000,
        stop: threading.Event | None = None,
    ) -> CycleReport:
        """Drain what is due now: decision cycles until none is claimed, then delivery rounds. Each
        cycle reads the clock afresh. Once `stop` is set, no further cycle or round starts, and a
        delivery round finishes the send under way and releases the rest of its claim."""
        report = CycleReport()
        stopping = stop.is_set if stop is not None else (lambda: False)
        now = self.clock()
        fold = FoldOptions.from_settings(self.settings)  # committed events → profiles, triggered runs
        while decide_runs and not stopping():
            if fold_pending(self.conn, fold, now=now).events < fold.max_events:
                break
        if decide_runs and not stopping():
            with self.conn.transaction():  # users added since the last cycle get their cadences
                ensure_schedules(self.conn, self.cadences, now)
        try:
            for _ in range(max_cycles if decide_runs else 0):
                if stopping():
                    break
                now = self.clock()  # a long drain must not decide (guards, run keys) at a stale time
                got = self.decide_schedules(now) + self.decide_queue(now)
                report.decided += got
                if not got:
                    break
        except psycopg.OperationalError:
            raise
        except Exception:  # deciding failed: what is due in the outbox still goes out
            if not deliver:
                raise
            log.exception("worker=%s deciding failed; delivering anyway", self.name)
            self._rollback()
        for _ in range(max_cycles if deliver else 0):
            if stopping():
                break
            round_ = self.deliver(self.clock(), stop=stop)
            report.delivery.add(round_)
            if round_.claimed == 0:
                break
        if report.decided or report.delivery.claimed:
            log.info(
                "worker=%s decided=%d %s",
                self.name,
                len(report.decided),
                " ".join(f"{k}={v}" for k, v in report.delivery.summary().items()),
            )
        return report

    def run_forever(self, stop: threading.Event, interval: float, **kwargs: Any) -> None:
        """`run_cycle` every `interval` seconds until `stop` is set; a cycle under way when it is set
        stops early (see `run_once`)."""
        while not stop.is_set():
            self.run_cycle(stop=stop, **kwargs)
            stop.wait(interval)

    def run_cycle(self, **kwargs: Any) -> CycleReport | None:
        """`run_once`, never raising: a failed cycle is logged (with its traceback when it is not a
        database outage) and rolled back, or, when the connection was lost, the worker reconnects
        (`recover`); None then. The loop of `tagloop worker` and the sweep of `tagloop serve`."""
        try:
            return self.run_once(**kwargs)
        except psycopg.OperationalError as exc:  # an outage, a full disk, a limit: what, not values
            log.warning(
                "worker=%s database error: %s (%s): %s",
                self.name,
                type(exc).__name__,
                exc.sqlstate or "no SQLSTATE",
                first_line(exc),
            )
        except Exception:  # a bug in one cycle must not stop the worker for good
            log.exception("worker=%s cycle failed", self.name)
        self.recover()
        return None

    def recover(self) -> None:
        """After a failed cycle: roll back, or reconnect when the connection is lost. A new
        connection starts with fresh run facts, cache and candidate sources (they may hold
        statements sent on the old one)."""
        conn = recovered(self.conn, self.settings, f"worker={self.name}")
        if conn is not self.conn:
            self.conn = conn
            self._facts = Timed()

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except psycopg.Error as exc:
            log.warning("worker=%s rollback failed: %s", self.name, type(exc).__name__)


def ensure_schedules(conn: psycopg.Connection[Any], cadences: Mapping[str, Cadence], now: datetime) -> int:
    """Give every user without a row for a cadence one, due at the start of the current period, or,
    when a message to the user is sent (or due) in this period already (`tagloop run --all` just
    before the first `serve`, an HTTP run), at the next period after it: not a second one at once."""
    added = 0
    for name, cadence in cadences.items():
        users = runs.users_without_schedule(conn, name)
        starts = {u: cadence.period_start(u, cadence.period(u, now)) for u in users}
        last = runs.last_messaged(conn, users, since=min(starts.values())) if users else {}
        added += runs.ensure_schedules(
            conn, name, [(u, _first_run(cadence, u, starts[u], last.get(u))) for u in users]
        )
    return added


def _first_run(cadence: Cadence, user: str, start: datetime, sent: datetime | None) -> datetime:
    """The current period's `start`, or the next period after a message `sent` in it."""
    return cadence.next_run_after(user, sent) if sent is not None and sent >= start else start


def _one_by_one_on_failure(
    conn: psycopg.Connection[Any], users: list[str], run: Callable[[list[str]], None], worker: str
) -> set[str]:
    """`run(users)` in a savepoint; when it fails, `run([user])` for each user in a savepoint of its
    own, so one user the graph cannot decide (e.g. a time zone this machine's tzdata lacks) does not
    hold back the batch for good. Returns the users that failed alone (logged; their run is skipped
    this period). A lost connection is raised at once."""
    try:
        with conn.transaction():
            run(users)
        return set()
    except psycopg.OperationalError:
        raise
    except Exception:
        log.warning("worker=%s batch of %d failed: deciding its users one by one", worker, len(users))
    failed = set()
    for user in users:
        try:
            with conn.transaction():
                run([user])
        except psycopg.OperationalError:
            raise
        except Exception:
            log.exception("worker=%s user=%s cannot be decided: skipped", worker, hashed(user))
            failed.add(user)
    return failed
