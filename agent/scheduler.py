"""The in-process scheduler behind `tagloop serve`: APScheduler runs a periodic sweep that gives
new users their cadence rows, then drains due runs (`run_queue`, `user_schedules`) and the outbox
through a `Worker`. Sweeps never overlap (max_instances=1) and sweeps missed while the process was
down or busy coalesce into one; missed cadence periods coalesce too (agent/cadence.py). Any number
of `tagloop worker` processes can share the same database alongside.

`tagloop serve` starts it next to the HTTP app: `scheduler = Scheduler(settings); scheduler.start()`
… `scheduler.shutdown()`; and next to it a `FolderThread`, which folds committed events into
profiles (`tools.profile_folder`) every `interval` seconds on its own connection, and on shutdown
folds what is left (bounded). Both outlive a lost connection (a database restart): the next cycle
reconnects (`agent.database.recovered`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler

from tagloop.agent.database import connect, recovered
from tagloop.agent.settings import Settings
from tagloop.agent.worker import Worker
from tagloop.tools.messaging.channels import Channel
from tagloop.tools.profile_folder import FoldOptions, FoldReport, fold_pending

log = logging.getLogger("tagloop.scheduler")
MAX_BACKOFF = 30.0  # seconds between the profile folder's tries while its folds keep failing


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        decide_runs: bool = True,
        deliver: bool = True,
    ) -> None:
        self.settings = settings
        self.channels = channels
        self.flags = {"decide_runs": decide_runs, "deliver": deliver}
        self._aps = BackgroundScheduler(timezone="UTC")
        self._worker: Worker | None = None
        self._stop = threading.Event()  # set by `shutdown`: a sweep under way stops early (Worker.run_once)
        self.sweeps = 0

    def start(self) -> None:
        """Open the connection (failing now if the database is unreachable) and start sweeping."""
        conn = connect(self.settings)
        conn.commit()
        self._worker = Worker(self.settings, conn, channels=self.channels, name="scheduler")
        self._aps.add_job(
            self.sweep,
            "interval",
            seconds=self.settings.sweep_interval_seconds,
            id="sweep",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._aps.start()

    def sweep(self) -> None:
        assert self._worker is not None
        self._worker.run_cycle(stop=self._stop, **self.flags)  # users added since their cadence rows first
        self.sweeps += 1

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        if self._aps.running:
            self._aps.shutdown(wait=wait)
        if self._worker is not None:
            self._worker.conn.close()  # the worker's: a new one if it had to reconnect
            self._worker = None


class FolderThread:
    """The profile folder on a daemon thread: `fold_pending` until caught up, then every `interval`."""

    def __init__(self, settings: Settings, *, interval: float = 0.15, drain_seconds: float = 10.0) -> None:
        self.settings, self.interval, self.drain_seconds = settings, interval, drain_seconds
        self.options = FoldOptions.from_settings(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.folded = 0

    def start(self) -> None:
        self._conn = connect(self.settings)  # fails now if the database is unreachable
        self._conn.commit()
        self._thread = threading.Thread(target=self._run, name="profile-folder", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def backend_pid(self) -> int | None:
        """The server process of the folder's connection (None while it has none)."""
        conn = self._conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    def _fold(self, conn: Any) -> FoldReport:
        report = fold_pending(conn, self.options, now=datetime.now(UTC))
        self.folded += report.events
        return report

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # background work: requests come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # (Linux: this thread)
        failures = 0  # folds failed in a row: the wait before the next one doubles, up to MAX_BACKOFF
        try:
            while not self._stop.is_set():
                try:
                    report = self._fold(self._conn)
                except Exception as exc:  # a failed fold must not stop the next one
                    failures += 1
                    quiet = failures > 1 and failures % 20 != 0  # an outage is said once (and every 20th)
                    if not quiet:
                        self._failed(exc, failures)
                    self._conn = recovered(self._conn, self.settings, "profile-folder", quiet=quiet)
                    self._stop.wait(min(self.interval * 2 ** min(failures, 16), MAX_BACKOFF))
                    continue
                if failures:
                    log.info("event=folder_resumed failed_folds=%d", failures)
                    failures = 0
                if report.events < self.options.max_events:  # caught up (or busy elsewhere): rest
                    self._stop.wait(self.interval)
            deadline = time.monotonic() + self.drain_seconds
            with contextlib.suppress(psycopg.OperationalError):  # shutting down: what is left waits
                while time.monotonic() < deadline and self._fold(self._conn).events:
                    pass
        finally:
            self._conn.close()

    @staticmethod
    def _failed(exc: Exception, failures: int) -> None:
        """Say a failed fold (the caller says only the first of a run of them, and every 20th: a
        database outage retried every 0.15 s wrote ~47,000 warnings an hour)."""
        if isinstance(exc, psycopg.OperationalError):  # the database went away
            log.warning(
                "profile fold failed: database error: %s (failure %d in a row; retrying, up to every %g s)",
                type(exc).__name__,
                failures,
                MAX_BACKOFF,
            )
        else:
            log.exception("profile fold failed (failure %d in a row)", failures)

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.drain_seconds + 5)
            self._thread = None
