"""Sources shared across runs (a worker keeps them, with its run cache, for its facts' lifetime):
the trending ranking is read once and reused for `max_age`, the newest items per provider are kept
for one clock reading only, and the worker renews its sources with its facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from agent_support import load_demo

from tagloop.agent.settings import Settings
from tagloop.agent.worker import FACTS_TTL, Worker
from tagloop.tools import neighbors
from tagloop.tools.candidates import NewFromProvidersSource, TrendingSource, load_history
from tagloop.tools.messaging.channels import FileChannel

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def test_trending_is_reused_within_its_max_age_and_read_again_after(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=20)
    history = load_history(db, users, NOW)
    source = TrendingSource()
    first = source.fetch_for(db, history, 10, NOW)
    assert any(first.values())
    db.execute("delete from events")  # nothing trends any more
    later = NOW + source.max_age - timedelta(seconds=1)
    assert source.fetch_for(db, history, 10, later) == first  # the ranking read at NOW
    assert source.fetch_for(db, history, 10, NOW - timedelta(minutes=1)) == {
        u: [] for u in users
    }  # earlier: read
    assert source.fetch_for(db, history, 10, NOW + source.max_age) == {u: [] for u in users}


def test_newest_items_are_kept_for_one_clock_reading(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=20)
    neighbors.refresh_if_stale(db, NOW)  # fills the users' top providers
    history = load_history(db, users, NOW)
    source = NewFromProvidersSource()
    source.fetch_for(db, history, 10, NOW)
    providers = {p for _, p in source._newest}
    assert providers and {at for at, _ in source._newest} == {NOW}
    source.fetch_for(db, history, 10, NOW + timedelta(minutes=1))
    assert {at for at, _ in source._newest} == {NOW + timedelta(minutes=1)}  # the old reading dropped
    assert {p for _, p in source._newest} == providers


def test_the_worker_shares_its_sources_until_it_renews_its_facts(
    db: psycopg.Connection[Any], tmp_path: Path, db_url: str
) -> None:
    from tagloop.tools.store import db as store_db

    load_demo(db, tmp_path / "demo", NOW, users=5)
    db.commit()
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        worker = Worker(settings, conn, channels={"file": FileChannel(tmp_path / "inbox.jsonl")}, name="w")
        worker.facts(NOW)
        shared = worker._sources
        worker.facts(NOW + FACTS_TTL - timedelta(seconds=1))
        assert worker._sources is shared
        worker.facts(NOW + FACTS_TTL)
        assert worker._sources is not shared and [s.name for s in worker._sources] == [s.name for s in shared]
    finally:
        conn.close()


def test_a_run_share_keeps_facts_for_its_ttl_and_shares_only_trending(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    from tagloop.agent.runner import policy_of
    from tagloop.agent.runshare import RunShare

    load_demo(db, tmp_path / "demo", NOW, users=5)
    share, policy = RunShare(), policy_of(Settings(home=tmp_path / "home"))
    facts = share.facts(db, NOW, policy)
    assert share.facts(db, NOW + share.ttl - timedelta(seconds=1), policy) is facts
    assert share.facts(db, NOW + share.ttl, policy) is not facts
    names = ["tags", "trending", "co_likes"]
    first, second = share.sources(names), share.sources(names)
    assert [s.name for s in first] == names
    assert first[1] is second[1] and first[0] is not second[0] and first[2] is not second[2]


def test_the_worker_refreshes_co_likes_before_it_claims_anyone(
    db: psycopg.Connection[Any], tmp_path: Path, db_url: str
) -> None:
    from tagloop.agent.cadence import cadences_from
    from tagloop.agent.worker import ensure_schedules
    from tagloop.tools.store import db as store_db

    users = load_demo(db, tmp_path / "demo", NOW, users=8)
    ensure_schedules(db, cadences_from({"daily": "1d"}), NOW)
    db.commit()
    settings = Settings(
        home=tmp_path / "home", database_url=db_url, cadences={"daily": "1d"}, cadence_spread=0.0
    )
    seen_at_claim: list[Any] = []

    def claimed(rows: list[Any]) -> None:  # what another session sees while the batch is claimed
        with psycopg.connect(db_url) as other:
            seen_at_claim.append(other.execute("select as_of from item_neighbors_state").fetchone())

    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        worker = Worker(
            settings,
            conn,
            channels={"file": FileChannel(tmp_path / "inbox.jsonl")},
            name="w",
            on_claimed=claimed,
        )
        worker.clock = lambda: NOW + timedelta(hours=1)
        decided = worker.run_once(deliver=False).decided
    finally:
        conn.close()
    assert sorted(u for u, _ in decided) == sorted(users)
    assert seen_at_claim and all(row is not None for row in seen_at_claim)  # committed before the claim


def test_a_timed_value_is_reused_only_for_later_clocks_within_its_max_age() -> None:
    from tagloop.tools.timed import Timed

    reads: list[datetime] = []

    def at(now: datetime) -> int:
        return timed.get(now, timedelta(minutes=10), lambda: reads.append(now) or len(reads))

    timed: Timed[int] = Timed()
    assert [at(NOW), at(NOW + timedelta(minutes=9)), at(NOW - timedelta(seconds=1))] == [1, 1, 2]
    assert at(NOW) == 2 and at(NOW + timedelta(minutes=10)) == 3  # read at NOW - 1 s: too old now
    assert reads == [NOW, NOW - timedelta(seconds=1), NOW + timedelta(minutes=10)]
