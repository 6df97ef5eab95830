"""`tagloop serve` stopping: the scheduler's sweep gets a stop event that `shutdown` sets, so a
sweep draining a backlog towards a hanging receiver ends after the send under way (as a
`tagloop worker` does), instead of holding the shutdown until everything due is tried."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tagloop.agent.scheduler import Scheduler
from tagloop.agent.settings import Settings


class RecordingWorker:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.conn = self

    def run_cycle(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def close(self) -> None:
        pass


def test_shutdown_sets_the_stop_event_every_sweep_was_given(tmp_path: Path) -> None:
    scheduler = Scheduler(Settings(home=tmp_path))
    worker = RecordingWorker()
    scheduler._worker = worker  # type: ignore[assignment]  # no database needed for this
    scheduler.sweep()
    (call,) = worker.calls
    stop = call.get("stop")
    assert isinstance(stop, threading.Event) and not stop.is_set()
    scheduler.shutdown()
    assert stop.is_set()
