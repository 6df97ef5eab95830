"""Background loops outlive a lost database connection (a restart of the server, a failover): the
worker loop (`tagloop worker`, and the scheduler of `tagloop serve`) and the profile folder thread
reconnect and go on. Before, each kept its one dead connection: every later cycle failed with
'the connection is lost' and the folder thread died, while the HTTP API looked healthy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import _worker, load_demo

from tagloop.agent.database import recovered
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_worker_outlives_a_database_that_stays_down_for_several_cycles(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reconnecting to a database still down raised tagloop's DatabaseError ("cannot connect to the
    database"), which `recovered` did not catch: `tagloop worker` exited and the profile folder
    thread of `serve` died for good after any outage longer than one cycle."""
    users = load_demo(db, tmp_path / "demo", START, users=4)
    worker = _worker(db_url, str(tmp_path), "w")
    worker.clock = lambda: START + timedelta(hours=1)
    up = worker.settings
    worker.settings = up.model_copy(update={"database_url": f"postgresql://a:b@127.0.0.1:{_closed_port()}/x"})
    _kill(db, worker.conn)
    try:
        for _ in range(3):  # the outage: every cycle fails and every reconnect is refused
            assert worker.run_cycle(deliver=False) is None
        assert worker.conn.closed or worker.conn.broken
        assert sum("database unreachable (DatabaseError)" in r.getMessage() for r in caplog.records) == 3
        worker.settings = up  # the database is back
        assert worker.run_cycle(deliver=False) is None  # this cycle still had the dead connection
        report = worker.run_cycle(deliver=False)
        assert report is not None and sorted(u for u, _ in report.decided) == users
    finally:
        worker.conn.close()


def test_recovering_while_the_database_is_still_down_keeps_the_broken_connection(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    load_demo(db, tmp_path / "demo", START, users=2)
    down = f"postgresql://a:b@127.0.0.1:{_closed_port()}/x"
    conn = psycopg.connect(db_url)
    conn.close()
    assert recovered(conn, Settings(home=tmp_path / "home", database_url=down), "test") is conn
    fresh = recovered(conn, Settings(home=tmp_path / "home", database_url=db_url), "test")
    try:
        assert fresh is not conn and fresh.execute("select 1").fetchone() is not None
    finally:
        fresh.close()


def test_the_profile_folder_backs_off_while_the_database_is_down(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retried every 0.15 s with a warning each time: ~47,000 log lines an hour of outage and a
    connection attempt every 150 ms. The wait doubles per failure and the outage is said once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"postgresql://nobody@127.0.0.1:{s.getsockname()[1]}/none?connect_timeout=1"
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    folder = FolderThread(settings, interval=0.05)
    folder.start()
    try:
        pid = folder.backend_pid()
        folder.settings = Settings(home=tmp_path / "home", database_url=closed)  # reconnects fail
        with caplog.at_level("INFO", logger="tagloop"):
            _kill(db, folder._conn)
            time.sleep(3.0)
            failed = [r for r in caplog.records if "profile fold failed" in r.getMessage()]
            unreachable = [r for r in caplog.records if "database unreachable" in r.getMessage()]
            assert len(failed) == 1, [r.getMessage() for r in failed]  # once per outage
            assert len(unreachable) == 1  # its reconnects too; was one per 0.05 s
            folder.settings = settings  # the database is back
            assert _until(lambda: folder.backend_pid() not in (None, pid), seconds=40)
            assert _until(lambda: any("folder_resumed" in r.getMessage() for r in caplog.records), seconds=40)
    finally:
        folder.shutdown()


def test_the_profile_folders_backoff_never_overflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`interval * 2**failures` raised OverflowError at the 1,024th failure in a row (8.5 hours of
    outage at 30 s), inside the except block: the folder thread ended and nothing restarted it."""
    from tagloop.agent import scheduler

    folder = FolderThread(Settings(home=tmp_path / "home"), interval=0.15)
    waits: list[float] = []
    calls = iter(range(1_100))

    def fold(conn: Any) -> Any:
        if next(calls, None) is None:
            folder._stop.set()
        raise psycopg.OperationalError("down")

    monkeypatch.setattr(folder, "_fold", fold)
    monkeypatch.setattr(scheduler, "recovered", lambda conn, settings, who, quiet=False: conn)
    monkeypatch.setattr(folder._stop, "wait", lambda seconds: waits.append(seconds))

    class _Closing:
        def close(self) -> None:
            pass

    folder._conn = _Closing()
    folder._run()  # returns (the stop set after 1,100 failures) instead of dying at 1,024
    assert len(waits) >= 1_100 and max(waits) == scheduler.MAX_BACKOFF
