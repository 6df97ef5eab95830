"""Issue 8 round 2: precomputed co-likes (item_neighbors), the batch history shared by the
table-backed sources, and the compact candidate log that the decision export turns back into
`[{item_id, score, source, provider}]`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from agent_support import load_demo

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.tools import neighbors
from tagloop.tools.candidates import load_history
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.neighbors import CoLikeSource
from tagloop.tools.retrieval import Candidate, CandidateLog
from tagloop.tools.store.decision_log import iter_decision_log

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def _likes(conn: psycopg.Connection[Any], rows: list[tuple[str, str, int]]) -> None:
    """(user, item, minutes before NOW) likes."""
    conn.execute(
        "insert into users (id) select distinct u from unnest(%(u)s::text[]) as u",
        {"u": [r[0] for r in rows]},
    )
    conn.execute(
        "insert into providers (id, name) select distinct 'p-' || i, i from unnest(%(i)s::text[]) as i",
        {"i": [r[1] for r in rows]},
    )
    conn.execute(
        "insert into items (id, title, provider_id) select distinct i, 'title ' || i, 'p-' || i"
        " from unnest(%(i)s::text[]) as i",
        {"i": [r[1] for r in rows]},
    )
    conn.execute(
        """insert into events (id, user_id, item_id, type, ts)
           select u || '-' || i, u, i, 'like', %(now)s - make_interval(mins => m)
           from unnest(%(u)s::text[], %(i)s::text[], %(m)s::int[]) as x(u, i, m)""",
        {"u": [r[0] for r in rows], "i": [r[1] for r in rows], "m": [r[2] for r in rows], "now": NOW},
    )


def test_co_likes_come_from_the_refreshed_neighbour_table_and_skip_seen_items(
    db: psycopg.Connection[Any],
) -> None:
    _likes(
        db,
        [
            ("carol", "x", 50), ("carol", "y", 40), ("dave", "x", 50), ("dave", "y", 45), ("dave", "w", 44),
            ("erin", "x", 30), ("erin", "w", 20), ("bob", "x", 5), ("alice", "x", 5), ("alice", "y", 4),
        ],
    )  # fmt: skip
    assert neighbors.refresh_if_stale(db, NOW) and not neighbors.refresh_if_stale(db, NOW)
    assert neighbors.is_stale(db, NOW + timedelta(days=2), timedelta(hours=24))
    found = CoLikeSource().fetch(db, ["bob", "alice", "nobody"], 10, NOW)
    assert [c.item_id for c in found["bob"]] == ["y", "w"]  # x's neighbours; y shared by 3 likers
    assert found["bob"][0].provider == "p-y" and found["bob"][0].source == "co_likes"
    assert "y" not in {c.item_id for c in found["alice"]} and found["nobody"] == []
    history = load_history(db, ["dave"], NOW)
    assert history.seeds["dave"] == ["w", "y", "x"] and history.seen["dave"] == {"x", "y", "w"}


def test_co_likes_describe_each_item_once_per_run_and_drop_items_deleted_since_the_refresh(
    db: psycopg.Connection[Any],
) -> None:
    _likes(
        db,
        [
            ("carol", "x", 50), ("carol", "y", 40), ("dave", "x", 50), ("dave", "y", 45), ("dave", "w", 44),
            ("erin", "x", 30), ("erin", "w", 20), ("bob", "x", 5), ("fay", "x", 6),
        ],
    )  # fmt: skip
    assert neighbors.refresh_if_stale(db, NOW)
    db.execute("update items set title = 'Why (live)' where id = 'y'")
    source = CoLikeSource()
    first = source.fetch(db, ["bob"], 10, NOW)["bob"]
    assert {(c.item_id, c.title, c.provider) for c in first} == {
        ("y", "Why (live)", "p-y"),
        ("w", "title w", "p-w"),
    }
    db.execute("delete from events where item_id = 'y'")
    db.execute("delete from items where id = 'y'")  # after the refresh: the neighbour row stays
    assert db.execute("select count(*) as n from item_neighbors where neighbor_id = 'y'").fetchone()["n"] > 0
    again = source.fetch(db, ["fay"], 10, NOW)["fay"]  # same run: y was described, so still listed
    assert [c.item_id for c in again] == [c.item_id for c in first]
    fresh = CoLikeSource().fetch(db, ["fay"], 10, NOW)["fay"]  # a new run reads y's row: gone
    assert [(c.item_id, c.title) for c in fresh] == [("w", "title w")]


def test_candidate_log_round_trips_sources_and_providers() -> None:
    log = CandidateLog.of(
        [("a", 0.9, "p", "tags+co_likes"), ("b", 0.5, None, "cf")], ["tags", "trending", "co_likes"]
    )
    assert log.sources == [0b101, 0b1000] and log.source_names == ["tags", "trending", "co_likes", "cf"]
    assert log.records() == [
        {"item_id": "a", "score": 0.9, "source": "tags+co_likes", "provider": "p"},
        {"item_id": "b", "score": 0.5, "source": "cf", "provider": None},
    ]
    from_candidates = CandidateLog.of_candidates(
        [Candidate("a", "A", "p", 0.9, "tags+co_likes"), Candidate("b", "B", None, 0.5, "cf")],
        ["tags", "trending", "co_likes"],
    )
    assert from_candidates == log
    assert CandidateLog.of_candidates([], ["tags"]) == CandidateLog.of([], ["tags"])


def test_export_rebuilds_the_candidate_list_of_compact_decisions(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=8)
    settings = Settings(home=tmp_path / "home")  # the default sources, co_likes included
    channels = {"file": FileChannel(tmp_path / "inbox.jsonl")}
    outcomes = run_users(db, settings, users, send_now=False, now=NOW, run_key="k", channels=channels)
    logged = {r["decision_id"]: r for r in iter_decision_log(db)}
    for o in outcomes:
        if o.outcome != "message":
            continue
        cands = logged[o.decision_id]["candidates"]
        ids = [c["item_id"] for c in cands]
        assert set(ids) >= {c["item_id"] for c in o.chosen} and len(ids) == len(set(ids))
        assert all(set(c["source"].split("+")) <= set(settings.candidate_sources) for c in cands)
        assert {(c["item_id"], c["source"]) for c in o.chosen} <= {(c["item_id"], c["source"]) for c in cands}
    assert (
        db.execute("select count(*) as n from item_neighbors").fetchone()["n"] > 0
    )  # refreshed at run start
