"""Background loops outlive a lost database connection (a restart of the server, a failover): the
worker loop (`tagloop worker`, and the scheduler of `tagloop serve`) and the profile folder thread
reconnect and go on. Before, each kept its one dead connection: every later cycle failed with
'the connection is lost' and the folder thread died, while the HTTP API looked healthy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import _worker, load_demo

from tagloop.agent.scheduler import FolderThread
from tagloop.agent.settings import Settings

START = datetime(2026, 5, 4, 0, tzinfo=UTC)


def _kill(db: psycopg.Connection[Any], conn: psycopg.Connection[Any]) -> None:
    """Terminate `conn`'s server process, as a database restart does."""
    db.execute("select pg_terminate_backend(%(pid)s)", {"pid": conn.info.backend_pid})
    db.commit()


def _until(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_the_worker_loop_reconnects_after_its_connection_is_lost(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = load_demo(db, tmp_path / "demo", START, users=6)
    worker = _worker(db_url, str(tmp_path), "w")
    worker.clock = lambda: START + timedelta(hours=1)
    first = worker.conn
    _kill(db, first)
    decided: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()
    run_once = worker.run_once

    def counting(**kwargs: Any) -> Any:
        try:
            report = run_once(**kwargs)
        except psycopg.OperationalError as exc:
            failures.append(type(exc).__name__)
            raise
        decided.extend(report.decided)
        if report.decided:
            stop.set()
        return report

    worker.run_once = counting
    loop = threading.Thread(target=worker.run_forever, args=(stop, 0.05), kwargs={"deliver": False})
    loop.start()
    try:
        assert _until(stop.is_set), f"no cycle decided anything after the connection was lost: {failures}"
    finally:
        stop.set()
        loop.join(10)
        worker.conn.close()
    assert failures and worker.conn is not first and first.closed
    assert sorted(u for u, _ in decided) == users
    # the log says why, not just the error's class
    (warning,) = [r.getMessage() for r in caplog.records if "database error" in r.getMessage()][:1]
    assert warning.split("database error: ")[1] not in failures, warning


def test_the_profile_folder_reconnects_after_its_connection_is_lost(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    load_demo(db, tmp_path / "demo", START, users=3)
    folder = FolderThread(Settings(home=tmp_path / "home", database_url=db_url), interval=0.05)

    def folded_all() -> bool:
        row = db.execute(
            "select (select coalesce(max(seq), 0) from events) <= coalesce(max(last_seq), 0) as done"
            " from profile_fold_state"
        ).fetchone()
        db.commit()
        return bool(row and row["done"])

    folder.start()
    try:
        assert _until(folded_all)
        pid = folder.backend_pid()
        db.execute("select pg_terminate_backend(%(pid)s)", {"pid": pid})
        db.execute(
            """insert into events (id, user_id, type, item_id, ts)
               select 'after-restart', u.id, 'like', i.id, now() from users u, items i limit 1"""
        )
        db.commit()
        assert _until(folded_all), "the folder stopped folding after its connection was lost"
        assert folder.backend_pid() not in (None, pid) and folder.alive()
    finally:
        folder.shutdown()
