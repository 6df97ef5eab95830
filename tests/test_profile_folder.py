"""The profile folder: committed events are folded once each from the checkpoint, never past an
ingest transaction still in flight (whose seq is lower than committed ones), triggered runs are
enqueued by the fold, a read-your-writes fold of one user is not repeated by the folder, and events
a rebuild already counted are skipped."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools import profile_folder
from tagloop.tools import profiles as rebuild
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import EventRecord, parse_event, parse_item, parse_user
from tagloop.tools.profiles import load_profiles, rebuild_profiles
from tagloop.tools.store import db as store_db
from tagloop.tools.store import users as store

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
OPTIONS = profile_folder.FoldOptions()


@pytest.fixture
def catalogue(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    loader.store_users(db, [parse_user({"id": u, "timezone": "UTC"}) for u in ("a", "b")])
    loader.store_items(db, [parse_item({"id": f"s{i}", "tags": ["shoegaze"]}) for i in range(3)])
    db.commit()
    return db


def ev(id_: str, user: str, type_: str = "play", item: str = "s0", hours: int = 0) -> EventRecord:
    at = (NOW - timedelta(hours=hours)).isoformat()
    return parse_event({"id": id_, "user_id": user, "type": type_, "item_id": item, "ts": at}, now=NOW)


def ingest(conn: psycopg.Connection[Any], events: list[EventRecord]) -> None:
    """What POST /v1/events does: the shared ingest lock, then one insert, in one transaction."""
    with conn.transaction():
        profile_folder.hold_ingest_lock(conn)
        store.insert_new_events(conn, events)


def test_old_events_are_folded_but_trigger_no_run(catalogue: psycopg.Connection[Any]) -> None:
    """A backfill of yesterday's likes is history: folded into the profile, no real-time run."""
    ingest(catalogue, [ev("old1", "a", "like", hours=30), ev("old2", "b", "like", hours=7)])
    report = profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
    assert (report.events, report.enqueued) == (2, 0)
    ingest(catalogue, [ev("new1", "b", "save", hours=1)])
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).enqueued == 1
    assert catalogue.execute("select user_id, reason from run_queue").fetchall() == [
        {"user_id": "b", "reason": "save"}
    ]


def n_events(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {r["user_id"]: r["n_events"] for r in conn.execute("select user_id, n_events from user_profiles")}


def test_each_committed_event_is_folded_once(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("e1", "a"), ev("e2", "b"), ev("e3", "a", "like")])
    report = profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
    assert (report.events, report.users, report.enqueued) == (3, 2, 1)  # the like triggers a run
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 0
    assert n_events(catalogue) == {"a": 2, "b": 1}
    assert catalogue.execute("select user_id, reason from run_queue").fetchall() == [
        {"user_id": "a", "reason": "like"}
    ]
    assert profile_folder.checkpoint(catalogue) == report.last_seq == 3


def test_folder_waits_for_an_ingest_in_flight_with_a_lower_seq(
    catalogue: psycopg.Connection[Any], db_url: str
) -> None:
    slow = store_db.connect(db_url, migrate_schema=False)
    try:
        profile_folder.hold_ingest_lock(slow)
        store.insert_new_events(slow, [ev("early", "a")])  # seq 1, not committed yet
        ingest(catalogue, [ev("late", "b")])  # seq 2, committed
        started = datetime.now(UTC)
        report = profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
        assert report.events == 0 and report.last_seq == 0  # never past seq 1 while it may commit
        assert datetime.now(UTC) - started >= timedelta(seconds=profile_folder.SETTLE_TIMEOUT_S)
        slow.commit()
    finally:
        slow.close()
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 2
    assert n_events(catalogue) == {"a": 1, "b": 1}


def test_a_file_import_in_flight_is_waited_for_too(
    catalogue: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """`tagloop import events` while `serve` runs: the import's insert took seqs long before its
    commit, and the folder moved its checkpoint past them — those events were never folded."""
    path = tmp_path / "events.jsonl"
    rows = [
        {"id": f"imp{i}", "user_id": "a", "type": "play", "item_id": "s1", "ts": NOW.isoformat()}
        for i in range(5)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    importer = store_db.connect(db_url, migrate_schema=False)
    try:
        with importer.transaction():
            assert loader.import_file(importer, "events", path, now=NOW).stored == 5  # seqs 1-5, in flight
            ingest(catalogue, [ev("late", "b")])  # seq 6, committed
            report = profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
            assert report.events == 0 and report.last_seq == 0
    finally:
        importer.close()
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 6
    assert n_events(catalogue) == {"a": 5, "b": 1}


def test_rolled_back_and_duplicate_seqs_do_not_stall_the_folder(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("e1", "a")])
    with pytest.raises(RuntimeError), catalogue.transaction():
        profile_folder.hold_ingest_lock(catalogue)
        store.insert_new_events(catalogue, [ev("gone", "a")])
        raise RuntimeError("client went away")
    ingest(catalogue, [ev("e1", "a"), ev("e2", "b")])  # e1 again: a seq taken and skipped
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 2
    assert n_events(catalogue) == {"a": 1, "b": 1}


def test_read_your_writes_fold_is_not_repeated_by_the_folder(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("e1", "a"), ev("e2", "b")])
    assert profile_folder.fold_user(catalogue, "a", OPTIONS, now=NOW) == 1
    assert profile_folder.fold_user(catalogue, "a", OPTIONS, now=NOW) == 0
    assert n_events(catalogue) == {"a": 1}
    ingest(catalogue, [ev("e3", "a")])
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 2  # e2 and e3, not e1
    assert n_events(catalogue) == {"a": 2, "b": 1}


def test_events_counted_by_a_rebuild_are_skipped(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("e1", "a", hours=2), ev("e2", "a", "like", "s1", hours=1)])
    with catalogue.transaction():
        rebuild_profiles(catalogue, now=NOW, half_life_days=30.0)
    rebuilt = load_profiles(catalogue, ["a"])["a"]
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 0
    assert load_profiles(catalogue, ["a"])["a"].tags == rebuilt.tags
    assert n_events(catalogue) == {"a": 2}


def likes(prefix: str, hours: int) -> list[EventRecord]:
    return [ev(f"{prefix}{n}", "a", "like", f"s{n % 3}", hours=hours) for n in range(5)]


@pytest.mark.parametrize("hook", ["_tag_weights", "SparseVector"])  # after its first read, its last
def test_events_folded_while_a_rebuild_reads_are_not_lost(
    catalogue: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    """A rebuild took no folder lock and read in statements of their own: events the folder folded
    between its reads and its write vanished from the profile for good (5 → 10 → 5 of 10 stored).
    The folder now waits for the rebuild, which marks only what it read, then folds the rest."""
    ingest(catalogue, likes("old", hours=2))
    profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
    real = getattr(rebuild, hook)
    during: list[profile_folder.FoldReport] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if not during:  # once, in the middle of the rebuild: events arrive and the folder runs
            with store_db.connect(db_url, migrate_schema=False) as other:
                ingest(other, likes("new", hours=1))
                during.append(profile_folder.fold_pending(other, OPTIONS, now=NOW))
        return result

    monkeypatch.setattr(rebuild, hook, racing)
    rebuild_profiles(catalogue, now=NOW, half_life_days=30.0)
    catalogue.commit()
    monkeypatch.undo()
    profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)  # what the rebuild did not read
    assert n_events(catalogue) == {"a": 10}
    folded = load_profiles(catalogue, ["a"])["a"].tags
    rebuild_profiles(catalogue, now=NOW, half_life_days=30.0)
    catalogue.commit()
    assert folded == pytest.approx(load_profiles(catalogue, ["a"])["a"].tags, rel=1e-6)
    assert during[0].last_seq is None  # the folder waited for the rebuild


def test_a_rebuild_does_not_mark_an_ingest_in_flight_as_folded(
    catalogue: psycopg.Connection[Any], db_url: str
) -> None:
    """The rebuild marked the highest seq it read as folded, past a lower one still in flight,
    which the folder then skipped for good. Now it reads up to a settled horizon (the checkpoint
    when an ingest stays in flight) and the folder folds the rest."""
    ingest(catalogue, [ev("e1", "a")])
    profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)  # checkpoint 1
    slow = store_db.connect(db_url, migrate_schema=False)
    try:
        profile_folder.hold_ingest_lock(slow)
        store.insert_new_events(slow, [ev("e2", "a")])  # seq 2, not committed yet
        ingest(catalogue, [ev("e3", "a")])  # seq 3, committed
        rebuild_profiles(catalogue, now=NOW, half_life_days=30.0)
        slow.commit()
    finally:
        slow.close()
    assert n_events(catalogue) == {"a": 1}  # up to the checkpoint only
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 2
    assert n_events(catalogue) == {"a": 3}


def test_a_rebuild_of_everyone_commits_batch_by_batch(
    catalogue: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an idle connection each batch of users is rebuilt and committed under the folder lock of
    its own, so folds and profile reads wait for one batch, not for the whole rebuild."""
    ingest(catalogue, [ev("e1", "a"), ev("e2", "b"), ev("e3", "a", "like")])
    real = rebuild._profile_rows
    seen: list[tuple[list[str], dict[str, int], int | None]] = []

    def watched(conn: psycopg.Connection[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
        with store_db.connect(db_url, migrate_schema=False) as other:
            seen.append(
                (
                    params["users"],
                    n_events(other),
                    profile_folder.fold_pending(other, OPTIONS, now=NOW).last_seq,
                )
            )
        return real(conn, params)

    monkeypatch.setattr(rebuild, "_profile_rows", watched)
    assert rebuild_profiles(catalogue, now=NOW, half_life_days=30.0, batch_users=1) == 2
    assert seen == [(["a"], {}, None), (["b"], {"a": 2}, None)]  # a committed before b's batch
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 0
    assert n_events(catalogue) == {"a": 2, "b": 1}
    with pytest.raises(ValueError, match="batch_users must be at least 1, not 0"):
        rebuild_profiles(catalogue, now=NOW, half_life_days=30.0, batch_users=0)


def test_hour_of_week_lives_in_its_own_column_and_reads_as_before(catalogue: psycopg.Connection[Any]) -> None:
    ingest(catalogue, [ev("e1", "a", hours=0), ev("e2", "a", hours=0), ev("e3", "a", hours=25)])
    profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
    row = catalogue.execute("select hour_of_week, stats from user_profiles where user_id = 'a'").fetchone()
    assert row is not None and "hour_of_week" not in row["stats"]
    histogram = load_profiles(catalogue, ["a"])["a"].stats["hour_of_week"]
    assert histogram == row["hour_of_week"] and len(histogram) == 168
    assert histogram[0 * 24 + 12] == 2 and histogram[6 * 24 + 11] == 1  # Monday 12:00, Sunday 11:00


def test_folder_waits_for_a_batch_up_to_max_wait(catalogue: psycopg.Connection[Any]) -> None:
    """With min_events the folder waits for that many pending events, but never longer than
    max_wait after the oldest pending one arrived; with nothing pending it returns at once."""
    batching = profile_folder.FoldOptions(min_events=3, max_wait=timedelta(seconds=1.5))
    started = time.monotonic()
    assert profile_folder.fold_pending(catalogue, batching, now=NOW).events == 0
    assert time.monotonic() - started < 1.0  # nothing pending: nothing to wait for
    ingest(catalogue, [ev("e1", "a"), ev("e2", "b")])
    started = time.monotonic()
    assert profile_folder.fold_pending(catalogue, batching, now=NOW).events == 2  # after max_wait
    assert time.monotonic() - started >= 1.2  # 1.5 s after e1 and e2 arrived, less the ingest
    ingest(catalogue, [ev("e3", "a"), ev("e4", "b"), ev("e5", "a")])
    patient = profile_folder.FoldOptions(min_events=3, max_wait=timedelta(seconds=600))
    assert profile_folder.fold_pending(catalogue, patient, now=NOW).events == 3  # a batch: at once
    assert n_events(catalogue) == {"a": 3, "b": 2}


def test_a_run_triggered_after_a_wait_for_a_batch_is_due_a_full_delay_later(
    catalogue: psycopg.Connection[Any],
) -> None:
    """The folder's clock was read before it waited for a batch, so a like that arrived during the
    wait queued its run up to `max_wait` earlier than the trigger delay."""
    batching = profile_folder.FoldOptions(min_events=5, max_wait=timedelta(seconds=1.0))
    ingest(catalogue, [ev("like1", "a", "like")])
    start = NOW  # the event's clock (its ts is NOW)
    assert profile_folder.fold_pending(catalogue, batching, now=start).enqueued == 1
    row = catalogue.execute("select due_at from run_queue where user_id = 'a'").fetchone()
    assert row is not None and row["due_at"] >= start + batching.trigger_delay + timedelta(seconds=0.8)


def test_folder_reads_contexts_with_numbers_beyond_64_bits(catalogue: psycopg.Connection[Any]) -> None:
    """A context integer beyond 64 bits is stored (jsonb numeric) and still folded."""
    big = {"id": "big", "user_id": "a", "type": "play", "context": {"device": "tv", "n": 2**70}}
    with catalogue.transaction():  # as a file import stores it
        loader.store_events(catalogue, [parse_event(big, now=NOW)])
    assert catalogue.execute("select context->>'n' as n from events").fetchone() == {"n": str(2**70)}
    assert profile_folder.fold_pending(catalogue, OPTIONS, now=NOW).events == 1
    stats = load_profiles(catalogue, ["a"])["a"].stats
    assert stats["devices"] == {"tv": 1}


def test_a_niced_folder_thread_nices_its_local_backend(db_url: str) -> None:
    """The folder thread of `tagloop serve` runs at nice 10; its backend's half of a fold should
    not compete with the requests' backends either."""
    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        if not conn.info.host.startswith("/"):
            pytest.skip("the backend is not on this machine (TCP)")
        backend = conn.info.backend_pid
        assert os.getpriority(os.PRIO_PROCESS, backend) < 10

        def folder() -> None:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            profile_folder.fold_pending(conn, OPTIONS, now=NOW)

        thread = threading.Thread(target=folder)
        thread.start()
        thread.join()
        assert os.getpriority(os.PRIO_PROCESS, backend) == 10
    finally:
        conn.close()


def test_a_user_in_a_zone_this_machine_lacks_stops_no_ones_profile(
    catalogue: psycopg.Connection[Any],
) -> None:
    """A stored zone Python's tz database lacks (a newer tagloop's tzdata, an edit by hand) raised
    in the fold: the batch rolled back, the checkpoint stayed, and the folder retried it forever,
    updating no profile of anyone. That user's events now fold without their hour of week."""
    catalogue.execute("update users set timezone = 'Mars/Olympus' where id = 'a'")
    catalogue.commit()
    ingest(catalogue, [ev("m1", "a", "like"), ev("m2", "b", "like")])
    report = profile_folder.fold_pending(catalogue, OPTIONS, now=NOW)
    assert report.events == 2 and profile_folder.checkpoint(catalogue) == report.last_seq
    assert n_events(catalogue) == {"a": 1, "b": 1}
    profiles = load_profiles(catalogue, ["a", "b"])
    assert profiles["a"].tags and profiles["b"].tags  # both liked shoegaze
    hours = {
        r["user_id"]: r["h"]
        for r in catalogue.execute("select user_id, hour_of_week::text as h from user_profiles")
    }
    assert "1" in hours["b"] and "1" not in hours["a"]  # b's like at Monday 12:00 UTC; a's unplaced


def test_an_imports_statistics_leave_its_connection_idle(db: psycopg.Connection[Any]) -> None:
    """`analyze` after a large import opened a transaction it left open: every later
    `conn.transaction()` became a savepoint, so `import lastfm`'s profile rebuild held the folder's
    lock batch after batch until the import ended (folds and profile reads waited for all of it)."""
    from tagloop.tools.ingest import loader as ingest_loader

    db.commit()
    ingest_loader._analyze_if_large(db, ingest_loader.ANALYZE_AFTER, ["events"])
    assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
