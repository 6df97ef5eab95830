"""The in-process scheduler behind `tagloop serve`: APScheduler runs a periodic sweep that gives
new users their cadence rows, then drains due runs (`run_queue`, `user_schedules`) and the outbox
through a `Worker`. Sweeps never overlap (max_instances=1) and sweeps missed while the process was
down or busy coalesce into one; missed cadence periods coalesce too (agent/cadence.py). Any number
of `tagloop worker` processes can share the same database alongside.

The HTTP app starts it from its lifespan: `scheduler = Scheduler(settings); scheduler.start()` …
`scheduler.shutdown()`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from tagloop.agent.database import connect
from tagloop.agent.settings import Settings
from tagloop.agent.worker import Worker, ensure_schedules
from tagloop.tools.messaging.channels import Channel

log = logging.getLogger("tagloop.scheduler")


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
        self._conn: Any = None
        self._worker: Worker | None = None
        self.sweeps = 0

    def start(self) -> None:
        """Open the connection (failing now if the database is unreachable) and start sweeping."""
        self._conn = connect(self.settings)
        self._conn.commit()
        self._worker = Worker(self.settings, self._conn, channels=self.channels, name="scheduler")
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
        assert self._worker is not None and self._conn is not None
        try:
            with self._conn.transaction():
                ensure_schedules(self._conn, self._worker.cadences, self._worker.clock())
            self._worker.run_once(**self.flags)
        except Exception:  # a failed sweep must not stop the next one
            log.exception("sweep failed")
            self._conn.rollback()
        self.sweeps += 1

    def shutdown(self, wait: bool = True) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=wait)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
