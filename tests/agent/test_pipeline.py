"""Chunked batches in pipeline mode (agent/pipeline.py) decide exactly what one graph invocation
over the whole batch decides, write the same rows, and surface a failed write from `decide`
(leaving nothing sent ahead in sources that later batches share)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import load_demo

from tagloop.agent import nodes, runner
from tagloop.agent.runner import decide, make_context
from tagloop.agent.settings import Settings
from tagloop.agent.state import Plan
from tagloop.tools.messaging.channels import FileChannel

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def _decide_all(
    db: psycopg.Connection[Any], tmp_path: Path, users: list[str]
) -> tuple[dict[str, Plan], list[Any]]:
    settings = Settings(home=tmp_path / "home")
    ctx = make_context(
        db, settings, now=NOW, run_key="pipe", channels={"file": FileChannel(tmp_path / "inbox.jsonl")}
    )
    plans = decide(ctx, users + users[:5], trigger="schedule")  # repeated ids: decided once
    rows = db.execute(
        """select d.id, d.user_id, d.chosen, d.propensities, d.candidate_ids, d.channel, d.send_at,
                  d.outcome, m.id as message_id, m.title, m.send_at as message_send_at
           from decisions d left join messages m on m.decision_id = d.id order by d.id"""
    ).fetchall()
    db.rollback()
    return plans, rows


def _next_chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records, each time a chunk's reads are done, the size of the chunk read ahead (0: none)."""
    sizes: list[int] = []
    reads_done = runner.ChunkPipeline.reads_done

    def counting(self: runner.ChunkPipeline) -> None:
        sizes.append(len(self.upcoming[0]) if self.upcoming else 0)
        reads_done(self)

    monkeypatch.setattr(runner.ChunkPipeline, "reads_done", counting)
    return sizes


def test_chunked_batch_decides_and_writes_what_one_invocation_does(
    db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=70)
    monkeypatch.setattr(runner, "CHUNK", 1000)
    whole, whole_rows = _decide_all(db, tmp_path, users)
    monkeypatch.setattr(runner, "CHUNK", 16)  # 5 chunks: tag searches sent ahead, writes held
    sent = _next_chunk_sizes(monkeypatch)
    read_ahead: list[str] = []
    for name in ("users_for", "history_for"):
        method = getattr(runner.ChunkPipeline, name)

        def taken(self: runner.ChunkPipeline, ids: list[str], _m: Any = method, _n: str = name) -> Any:
            found = _m(self, ids)
            if found is not None:
                read_ahead.append(_n)
            return found

        monkeypatch.setattr(runner.ChunkPipeline, name, taken)
    chunked, chunked_rows = _decide_all(db, tmp_path, users)
    assert sorted(read_ahead) == ["history_for"] * 5 + ["users_for"] * 5  # every chunk (`start`: the first)
    assert sent == [16, 16, 16, 14, 0]  # once per chunk (8, 16, 16, 16, 14 users: half a chunk first)
    assert len(whole) == len(users) == len(whole_rows)
    assert sum(p.outcome == "message" for p in whole.values()) > 40
    for user, plan in whole.items():
        other = chunked[user]
        assert [c.item_id for c in other.candidates] == [c.item_id for c in plan.candidates]
        assert [c.item_id for c in other.chosen] == [c.item_id for c in plan.chosen]
        assert other.propensities == plan.propensities
        assert (other.outcome, other.channel, other.send_at, other.message_id) == (
            plan.outcome,
            plan.channel,
            plan.send_at,
            plan.message_id,
        )
    assert chunked_rows == whole_rows


def test_a_failed_write_in_a_chunked_batch_raises_from_decide(
    db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=40)
    monkeypatch.setattr(runner, "CHUNK", 16)
    insert = nodes._insert

    def failing(conn: Any, decisions: Any, outbox: Any) -> None:
        insert(conn, decisions, outbox)
        conn.execute("select 1 / 0")  # sent, not waited for: fails on the server later

    monkeypatch.setattr(nodes, "_insert", failing)
    ctx = make_context(
        db,
        Settings(home=tmp_path / "home"),
        now=NOW,
        run_key="k",
        channels={"file": FileChannel(tmp_path / "f")},
    )
    with pytest.raises(psycopg.errors.DivisionByZero):
        decide(ctx, users, trigger="schedule")
    db.rollback()
    assert db.execute("select count(*) as n from decisions").fetchone() == {"n": 0}
    # the same sources (a worker shares them across batches) hold nothing of the failed pipeline
    monkeypatch.setattr(nodes, "_insert", insert)
    assert len(decide(ctx, users, trigger="schedule")) == 40
    assert db.execute("select count(*) as n from decisions").fetchone() == {"n": 40}


def test_a_worker_batch_larger_than_a_chunk_is_decided_once_and_advanced(
    db: psycopg.Connection[Any], tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's claim, per-user locks, pipelined chunks, schedule advance and commit share one
    transaction: 70 due users in one batch of 100 are decided once each, and nothing is due after."""
    from tagloop.agent.cadence import cadences_from
    from tagloop.agent.worker import Worker, ensure_schedules
    from tagloop.tools.store import db as store_db

    users = load_demo(db, tmp_path / "demo", NOW, users=70)
    ensure_schedules(db, cadences_from({"daily": "1d"}), NOW)
    db.commit()
    settings = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        cadences={"daily": "1d"},
        cadence_spread=0.0,
        run_batch_size=100,
    )
    chunks = _next_chunk_sizes(monkeypatch)
    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        worker = Worker(settings, conn, channels={"file": FileChannel(tmp_path / "inbox.jsonl")}, name="w")
        worker.clock = lambda: NOW + timedelta(hours=1)
        first = worker.run_once(deliver=False).decided
        again = worker.run_once(deliver=False).decided
    finally:
        conn.close()
    assert chunks == [45, 0]  # 70 users: 25, then 45, pipelined inside the worker's transaction
    assert sorted(u for u, _ in first) == sorted(users) and again == []
    rows = db.execute("select count(*) as n, count(distinct user_id) as u from decisions").fetchone()
    assert rows == {"n": 70, "u": 70}
    messages = db.execute(
        "select count(*) as n from messages m join decisions d on d.id = m.decision_id"
    ).fetchone()
    assert (
        messages is not None
        and messages["n"]
        == db.execute("select count(*) as n from decisions where outcome = 'message'").fetchone()["n"]
        > 40
    )
