"""Several worker processes on one database: a simulated week of daily cadences is decided exactly
once per user and period, and a worker killed with SIGKILL mid-batch loses nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import load_demo, stalled_worker, week_of_workers

from tagloop.agent.cadence import cadences_from
from tagloop.agent.worker import ensure_schedules

START = datetime(2026, 5, 4, 0, tzinfo=UTC)
DAYS = 7


def _schedule(db: psycopg.Connection[Any], now: datetime) -> None:
    ensure_schedules(db, cadences_from({"daily": "1d"}), now)
    db.commit()


@pytest.mark.slow
def test_three_workers_decide_every_due_user_exactly_once_per_day_for_a_week(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", START)
    _schedule(db, START)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=week_of_workers, args=(db_url, str(tmp_path), f"w{i}", START, DAYS, barrier, out))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=240) for _ in range(3 * DAYS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    runs = Counter((user, key) for _, _, decided in reports for user, key in decided)
    assert all(n == 1 for n in runs.values()), "a user ran twice in one period"
    assert len(runs) == len(users) * DAYS  # every due user, every day
    per_day = Counter(day for _, day, decided in reports for _ in decided)
    assert all(per_day[d] == len(users) for d in range(DAYS))
    assert len({name for name, _, decided in reports if decided}) >= 2  # the work was shared
    rows = db.execute(
        "select user_id, count(*) as n, count(distinct run_key) as k from decisions group by 1"
    ).fetchall()
    assert len(rows) == len(users) and all(r["n"] == r["k"] == DAYS for r in rows)


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", START, users=20)
    _schedule(db, START)
    now = START + timedelta(hours=1)
    ready = tmp_path / "claimed.json"
    proc = mp.get_context("spawn").Process(
        target=stalled_worker, args=(db_url, str(tmp_path), now, str(ready))
    )
    proc.start()
    deadline = time.monotonic() + 90
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    held = json.loads(ready.read_text())
    assert held
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    assert db.execute("select count(*) as n from decisions").fetchone()["n"] == 0
    db.commit()

    from agent_support import _worker

    survivor = _worker(db_url, str(tmp_path), "survivor")
    survivor.clock = lambda: now
    decided: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    while len(decided) < len(users) and time.monotonic() < deadline:  # the dead backend may linger briefly
        decided += survivor.run_once(deliver=False).decided
        time.sleep(0.2)
    assert sorted(u for u, _ in decided) == sorted(users)
    assert set(held) <= {u for u, _ in decided}
    rows = db.execute("select count(*) as n, count(distinct user_id) as u from decisions").fetchone()
    assert rows["n"] == rows["u"] == len(users)
    nxt = {r["next_run_at"] for r in db.execute("select next_run_at from user_schedules")}
    assert nxt == {START + timedelta(days=1)}


def test_a_running_worker_schedules_users_added_after_it_started_and_survives_a_poison_user(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """`tagloop worker` gave cadence rows only at start-up (users added later never ran), and one
    user the graph could not decide failed the whole batch every cycle, and delivery with it."""
    from agent_support import _worker

    users = load_demo(db, tmp_path / "demo", START, users=12)
    worker = _worker(db_url, str(tmp_path), "w")
    worker.clock = lambda: START + timedelta(hours=1)
    try:
        first = worker.run_once(deliver=False).decided
        assert sorted(u for u, _ in first) == users
        db.execute(
            """insert into users (id, timezone, channels, consent) values
               ('late', 'UTC', '{}', '{"file": true}'), ('poison', 'UTC', '{}', '{"file": true}')"""
        )
        db.commit()
        worker.run_once(deliver=False)  # gives both their rows (due next period, as for everyone)
        db.execute("update users set timezone = 'Mars/Base' where id = 'poison'")  # no such zone
        db.commit()
        worker.clock = lambda: START + timedelta(days=1, hours=1)
        report = worker.run_once()
    finally:
        worker.conn.close()
    decided = {u for u, _ in report.decided}
    assert "late" in decided and set(users) <= decided and "poison" not in decided
    assert report.delivery.claimed > 0  # the day's messages still went out
    row = db.execute("select next_run_at from user_schedules where user_id = 'poison'").fetchone()
    assert row is not None and row["next_run_at"] > START + timedelta(days=1, hours=1)  # skipped, not stuck


def test_a_new_schedule_does_not_message_again_a_user_just_messaged(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """`tagloop run --all` and then the first `serve`: the weekly schedule of a user the manual run
    messaged starts at a later period, not at once (every user got a second message right away)."""
    from tagloop.agent.runner import run_users
    from tagloop.agent.settings import Settings
    from tagloop.tools.messaging.channels import FileChannel

    users = load_demo(db, tmp_path / "demo", START, users=12)
    outcomes = run_users(
        db, Settings(home=tmp_path), users[:6], now=START, channels={"file": FileChannel(tmp_path / "i")}
    )
    sends = {
        o.user_id: datetime.fromisoformat(o.send_at) for o in outcomes if o.outcome == "message" and o.send_at
    }
    assert sends
    weekly = cadences_from({"weekly": "7d"})
    later = START + timedelta(minutes=5)
    ensure_schedules(db, weekly, later)
    db.commit()
    due = {
        r["user_id"]: r["next_run_at"]
        for r in db.execute("select user_id, next_run_at from user_schedules where cadence = 'weekly'")
    }
    assert set(due) == set(users)
    cadence = weekly["weekly"]
    for user in users:
        if user in sends:
            assert due[user] == cadence.next_run_after(user, sends[user]) and due[user] > later
        else:  # never messaged (or only decided without a message): due now, as before
            assert due[user] == cadence.period_start(user, cadence.period(user, later)) <= later


def test_scheduled_runs_are_counted_and_exported(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A worker's runs, sends and dead letters appeared in no metric: `tagloop worker` had no
    exporter and the API's tagloop_runs_total counts only runs asked over HTTP."""
    import socket
    import subprocess
    import sys
    import time

    import httpx
    from agent_support import _worker
    from prometheus_client import REGISTRY

    def counted() -> float:
        return sum(
            s.value
            for m in REGISTRY.collect()
            if m.name == "tagloop_scheduled_runs"
            for s in m.samples
            if s.name == "tagloop_scheduled_runs_total"
        )

    users = load_demo(db, tmp_path / "demo", START, users=5)
    worker = _worker(db_url, str(tmp_path), "w")
    worker.clock = lambda: START + timedelta(hours=1)
    before = counted()
    try:
        assert len(worker.run_once(deliver=False).decided) == len(users)
    finally:
        worker.conn.close()
    assert counted() - before == len(users)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TAGLOOP_DATABASE_URL": db_url, "TAGLOOP_HOME": str(tmp_path / "home")}
    env.pop("DATABASE_URL", None)
    tagloop = Path(sys.executable).parent / "tagloop"
    proc = subprocess.Popen(
        [str(tagloop), "worker", "--metrics-port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline, text = time.monotonic() + 60, ""
        while "tagloop_scheduled_runs_total" not in text and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
        assert "# HELP tagloop_scheduled_runs_total" in text and "# HELP tagloop_messages_total" in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
