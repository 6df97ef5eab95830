"""Event-triggered runs: strong signals enqueue one run a configurable delay later, bursts coalesce
to the earliest due time, ordinary plays do not trigger, a burst of plays of a new tag does, and
the per-user run lock admits one session at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tagloop.tools import online, triggers
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import EventRecord, parse_event, parse_item, parse_user
from tagloop.tools.store import users as store

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
DELAY = timedelta(seconds=45)


@pytest.fixture
def catalogue(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    loader.store_users(db, [parse_user({"id": u, "timezone": "UTC"}) for u in ("a", "b")])
    loader.store_items(
        db,
        [parse_item({"id": f"x{i}", "tags": ["krautrock"]}) for i in range(4)]
        + [parse_item({"id": "y", "tags": ["polka"]})],
    )
    db.commit()
    return db


def ev(user: str, type_: str, item: str, minutes: int = 0) -> EventRecord:
    return parse_event(
        {
            "user_id": user,
            "type": type_,
            "item_id": item,
            "ts": (NOW + timedelta(minutes=minutes)).isoformat(),
        },
        now=NOW,
    )


def ingest(db: psycopg.Connection[Any], events: list[EventRecord], now: datetime = NOW) -> int:
    with db.transaction():
        new = store.insert_new_events(db, events)
        folded = online.apply_events(db, new, now=now, config=online.OnlineConfig())
        return triggers.enqueue_runs(db, triggers.strong_signals(new, folded.bursts), now=now, delay=DELAY)


def queue(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    return {r["user_id"]: r for r in db.execute("select user_id, due_at, trigger, reason from run_queue")}


def test_a_like_schedules_one_run_after_the_delay(catalogue: psycopg.Connection[Any]) -> None:
    assert ingest(catalogue, [ev("a", "like", "y")]) == 1
    row = queue(catalogue)["a"]
    assert row["due_at"] == NOW + DELAY and row["trigger"] == "event" and row["reason"] == "like"


def test_a_burst_of_signals_coalesces_into_the_earliest_run(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("a", "like", "y")])
    ingest(catalogue, [ev("a", "save", "x0", 1)], now=NOW + timedelta(minutes=1))
    ingest(catalogue, [ev("a", "share", "x1", 2), ev("a", "like", "x2", 2)], now=NOW + timedelta(minutes=2))
    rows = queue(catalogue)
    assert list(rows) == ["a"] and rows["a"]["due_at"] == NOW + DELAY


def test_a_like_without_an_item_does_not_trigger(catalogue: psycopg.Connection[Any]) -> None:
    """It adds nothing to the profile, so a client that forgot `item_id` would set off messages on
    no signal at all."""
    liked_nothing = parse_event({"user_id": "a", "type": "like", "ts": NOW.isoformat()}, now=NOW)
    assert liked_nothing.item_id is None
    assert ingest(catalogue, [liked_nothing]) == 0 and queue(catalogue) == {}
    assert ingest(catalogue, [ev("a", "like", "y")]) == 1  # with its item it does


def test_ordinary_plays_and_skips_do_not_trigger(catalogue: psycopg.Connection[Any]) -> None:
    assert (
        ingest(catalogue, [ev("b", "play", "y"), ev("b", "skip", "x0", 1), ev("b", "impression", "x1", 2)])
        == 0
    )
    assert queue(catalogue) == {}


def test_a_burst_of_plays_of_a_new_tag_triggers(catalogue: psycopg.Connection[Any]) -> None:
    for minute in range(2):  # one play per request: the burst spans requests
        assert (
            ingest(catalogue, [ev("b", "play", f"x{minute}", minute)], now=NOW + timedelta(minutes=minute))
            == 0
        )
    assert ingest(catalogue, [ev("b", "play", "x2", 2)], now=NOW + timedelta(minutes=2)) == 1
    assert queue(catalogue)["b"]["reason"].startswith("burst:tag:")


def test_the_run_lock_admits_one_session_per_user(catalogue: psycopg.Connection[Any], db_url: str) -> None:
    from tagloop.tools.store import db as store_db

    with store_db.connect(db_url, migrate_schema=False) as other:
        with (
            triggers.run_lock(catalogue, "a") as first,
            triggers.run_lock(other, "a") as second,
            triggers.run_lock(other, "b") as different_user,
        ):
            assert (first, second, different_user) == (True, False, True)
        with triggers.run_lock(other, "a") as after_release:
            assert after_release
