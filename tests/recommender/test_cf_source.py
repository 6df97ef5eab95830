"""The CF candidate source as the agent uses it, on both of its paths (`path` fixture): the exact
scan in this process (exact.py, the default for small catalogues) and the HNSW search on the server.
Fresh stored user vectors are used without folding anyone in, a user with new events is folded in
again, users whose seen items crowd their top still get k unseen items, and a chunked run (pipeline
mode) sends the users' statement ahead and places items added after training."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from test_pg import NOW, PARAMS, _items, add_new_release_fan, load_world

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.tools.candidates import load_history
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import parse_event, parse_user
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.recommender import exact, fold_batch, serving
from tagloop.tools.recommender import history as user_history
from tagloop.tools.recommender import source as cf_source
from tagloop.tools.recommender.source import CFSource
from tagloop.tools.recommender.train import train


@pytest.fixture(params=["exact", "hnsw"], autouse=True)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which path the CF source takes: `hnsw` makes every catalogue too large to scan here."""
    if request.param == "hnsw":
        monkeypatch.setattr(cf_source, "fits", lambda served, cells, cold=None: False)
    return str(request.param)


def _expected(db: psycopg.Connection[Any], served: serving.Served, user: str, k: int) -> set[str]:
    """The exact top k unseen items of the user folded in from their events now (numpy scan)."""
    history = serving.histories(db, served, [user])[user]
    scores = served.model.item_vectors() @ serving.user_vector(served, history)
    scores[history.item_idx] = -np.inf
    return {str(served.model.item_ids[i]) for i in np.argsort(-scores, kind="stable")[:k]}


def _count_folds(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Users folded in with a read of their own (not sent ahead with the search)."""
    folded: list[list[str]] = []
    read = fold_batch.read

    def counting(conn: Any, served: Any, user_ids: list[str]) -> Any:
        folded.append(list(user_ids))
        return read(conn, served, user_ids)

    monkeypatch.setattr(fold_batch, "read", counting)
    return folded


def test_fresh_stored_vectors_are_searched_without_folding_anyone_in(
    db: psycopg.Connection[Any], trained: serving.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    folded = _count_folds(monkeypatch)
    users = ["u0", "u1", "u5", "u8"]
    found = CFSource().fetch(db, users, 5, NOW)
    assert folded == []  # train stored every user's vector, and nobody has played since
    for u in users:
        assert {c.item_id for c in found[u]} == _expected(db, trained, u, 5)
        assert [c.score for c in found[u]] == sorted((c.score for c in found[u]), reverse=True)


def test_a_user_with_new_events_is_folded_in_again(
    db: psycopg.Connection[Any], trained: serving.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = CFSource().fetch(db, ["u0", "u1"], 5, NOW)
    liked = sorted(before["u0"], key=lambda c: c.item_id)[0].item_id  # proposed before, seen now
    event = {"id": "late", "user_id": "u0", "type": "like", "item_id": liked, "ts": NOW.isoformat()}
    loader.store_events(db, [parse_event(event, now=NOW)])
    db.commit()
    folded = _count_folds(monkeypatch)
    after = CFSource().fetch(db, ["u0", "u1"], 5, NOW)
    assert folded == [["u0"]]  # u1's stored vector is still fresh
    assert liked not in {c.item_id for c in after["u0"]}
    assert {c.item_id for c in after["u0"]} == _expected(db, trained, "u0", 5)
    assert after["u1"] == before["u1"]


def test_a_user_the_search_returned_short_of_is_asked_again_with_the_filter(
    db: psycopg.Connection[Any], trained: serving.Served, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """HNSW is approximate: the unfiltered search may return fewer rows than asked, and fewer than
    the model has items. Such a user kept fewer than k once their seen items were dropped."""
    if path == "exact":
        pytest.skip("the exact scan returns every row it is asked for")
    read, calls = cf_source._read, []

    def stopping_early(conn: Any, query: Any, params: dict[str, Any], k: int, scan: str, ef: int = 0) -> Any:
        rows = read(conn, query, params, k, scan, ef)
        calls.append(scan)
        return rows[:5] if len(calls) == 1 else rows  # the first, unfiltered search stops at 5 rows

    monkeypatch.setattr(cf_source, "_read", stopping_early)
    history = load_history(db, ["u0"], NOW)
    found = CFSource().fetch_for(db, history, 5, NOW)["u0"]
    assert calls[0] == "off" and "relaxed_order" in calls[1:]  # asked again, filtered on the server
    assert len(found) == 5 and not {c.item_id for c in found} & history.seen["u0"]
    assert {c.item_id for c in found} == _expected(db, trained, "u0", 5)


def test_a_huge_value_stored_before_imports_refused_it_does_not_break_the_fold(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    """An event value of 1e308 (accepted before) overflowed the float8 sum of the user's weights:
    "value out of range: overflow" failed every fold, run and training that read the user."""
    item = sorted(trained.model.item_ids)[0]
    db.execute(
        "insert into events (id, user_id, type, item_id, ts, value) values ('huge', 'u0', 'convert', %(i)s,"
        " %(t)s, 1e308)",
        {"i": str(item), "t": NOW},
    )
    db.commit()
    found = CFSource().fetch(db, ["u0"], 5, NOW)
    assert len(found["u0"]) == 5 and all(np.isfinite(c.score) for c in found["u0"])
    train(db, params=PARAMS, seed=1)  # the training reads the same weights


def test_users_whose_seen_items_crowd_their_top_still_get_k_unseen(db: psycopg.Connection[Any]) -> None:
    load_world(db)
    heavy = [
        parse_event(
            {
                "id": f"h{n}",
                "user_id": "fan",
                "type": "play",
                "item_id": f"jazz-{n % 10}" if n < 10 else f"techno-{n - 10}",
                "value": 5.0,
                "ts": (NOW - timedelta(days=3, minutes=n)).isoformat(),
            },
            now=NOW,
        )
        for n in range(20)
    ]
    loader.store_users(db, [parse_user({"id": "fan", "timezone": "UTC"})])
    loader.store_events(db, heavy)
    train(db, params=PARAMS, seed=0)
    db.commit()
    served = serving.active(db)
    assert served is not None
    # k = 5: the unfiltered top 13 holds mostly the 20 played jazz and techno items
    found = CFSource().fetch_for(db, load_history(db, ["fan"], NOW), 5, NOW)["fan"]
    assert len(found) == 5
    assert {c.item_id for c in found} == _expected(db, served, "fan", 5)
    assert all(c.item_id.startswith("shoegaze") for c in found)  # the only unseen genre


def test_a_chunked_run_sends_the_users_statement_ahead_and_places_new_items(
    db: psycopg.Connection[Any],
    trained: serving.Served,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    loader.store_items(db, _items(["jazz-new"], NOW - timedelta(days=1)))  # after training
    liked = "shoegaze-9"  # u55 (second chunk) plays it after training: a stale stored vector
    event = {"id": "late", "user_id": "u55", "type": "like", "item_id": liked, "ts": NOW.isoformat()}
    loader.store_events(db, [parse_event(event, now=NOW)])
    db.commit()
    folded = _count_folds(monkeypatch)
    ahead: list[list[str]] = []  # the users' statements sent a chunk ahead (send_ahead)
    spot: list[list[str]] = []  # ... sent and read on the spot
    given: list[list[str]] = []  # searches with vectors folded here (the HNSW path)
    sending = [False]
    send_ahead = CFSource.send_ahead

    def marking(self: CFSource, *args: Any) -> None:
        sending[0] = True
        try:
            send_ahead(self, *args)
        finally:
            sending[0] = False

    def counting(send: Any) -> Any:
        def wrapped(conn: Any, query: Any, params: dict[str, Any], *args: Any) -> Any:
            users = list(params["users"])
            (given if "vecs" in params else ahead if sending[0] else spot).append(users)
            return send(conn, query, params, *args)

        return wrapped

    monkeypatch.setattr(CFSource, "send_ahead", marking)
    monkeypatch.setattr(cf_source, "_plain", counting(cf_source._plain))  # every users statement
    settings = Settings(home=tmp_path / "home", database_url=db_url, candidate_sources=["cf"])
    users = [f"u{n}" for n in range(60)]
    outcomes = run_users(
        db, settings, users, send_now=False, now=NOW, channels={"file": FileChannel(tmp_path / "out")}
    )
    assert len(outcomes) == 60
    placed = db.execute(
        "select cold from item_vectors where model_id = %(m)s and item_id = 'jazz-new'", {"m": trained.row.id}
    ).fetchone()
    assert placed is not None and placed["cold"]  # inserted in pipeline mode (COPY is not allowed there)
    assert len(spot) == 1 and len(spot[0]) < 60  # only the first chunk was read on the spot
    assert sorted(u for chunk in spot + ahead for u in chunk) == sorted(users)  # each user once
    logged = db.execute(
        "select count(*) as n from decisions, unnest(candidate_ids) as c(item) where c.item = 'jazz-new'"
    ).fetchone()
    assert logged is not None and logged["n"] > 0  # the jazz fans were offered the new item
    assert folded == []  # u55's history came with its chunk's statement, sent ahead
    assert given == ([["u55"]] if path == "hnsw" else [])
    offered = db.execute("select candidate_ids from decisions where user_id = 'u55'").fetchone()
    assert offered is not None and liked not in offered["candidate_ids"]
    assert set(offered["candidate_ids"]) >= _expected(db, trained, "u55", 5)


def test_the_history_read_looks_up_each_users_last_event_once(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    users = ["u0", "u1", "u2"]
    params = {"weights": user_history.WEIGHTS_JSON, "users": users}
    row = db.execute("explain (analyze, format json) " + user_history.HISTORY, params).fetchone()
    assert row is not None

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node] + [n for child in node.get("Plans", []) for n in nodes(child)]

    on_events = [n for n in nodes(row["QUERY PLAN"][0]["Plan"]) if n.get("Relation Name") == "events"]
    assert on_events
    # once per user, not once per row of the history (5 items each: the max(seq) used to run 15 times)
    assert max(n["Actual Loops"] for n in on_events) == len(users)


def test_the_batch_fold_in_equals_serving_s_for_every_kind_of_user(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    users = ["u0", "u7", "fresh", "nobody", "missing"]  # played, played, interests only, nothing, unknown
    folded = fold_batch.read(db, trained, users)
    found = serving.histories(db, trained, users)
    for u in users:
        assert folded[u] == pytest.approx(serving.user_vector(trained, found[u]), abs=1e-6)
    assert np.any(folded["fresh"] != folded["nobody"])  # the declared interests count
    with fold_batch.send(db, trained, users, stale_only=True) as cur:
        # train stored a fresh vector for every user with events; the two without have none
        assert sorted(r[0] for r in cur.fetchall()) == ["fresh", "nobody"]


def test_the_agents_fold_counts_plays_of_items_added_after_training(
    db: psycopg.Connection[Any], trained: serving.Served, db_url: str, tmp_path: Path
) -> None:
    """The agent's batch fold gives a user the vector serving gives them: plays of items the model
    does not know speak through the items' tags (they were left out, so a fan of new releases only
    got the popularity list from the agent while the HTTP API served them their genre)."""
    add_new_release_fan(db, trained)
    expected = serving.user_vector(trained, serving.histories(db, trained, ["newfan", "u1"])["newfan"])
    folded = fold_batch.read(db, trained, ["newfan", "u1"])
    np.testing.assert_allclose(folded["newfan"], expected, rtol=1e-5, atol=1e-7)
    top = _expected(db, trained, "newfan", 5)
    assert all(i.startswith("techno-") for i in top), top
    assert {c.item_id for c in CFSource().fetch(db, ["newfan"], 5, NOW)["newfan"]} == top
    # the same in a chunked run (pipeline mode: the fold-in rows were sent ahead with the search)
    settings = Settings(home=tmp_path / "home", database_url=db_url, candidate_sources=["cf"])
    users = [f"u{n}" for n in range(60)] + ["newfan"]  # more than a chunk
    run_users(db, settings, users, send_now=False, now=NOW, channels={"file": FileChannel(tmp_path / "out")})
    logged = db.execute("select candidate_ids from decisions where user_id = 'newfan'").fetchone()
    assert logged is not None
    assert set(logged["candidate_ids"][:5]) == top


def test_an_item_deleted_since_training_is_not_proposed_and_the_user_still_gets_k(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    """Deleted after the source proposed it (the same source, as a worker or `run --all` keeps it):
    the HNSW path loses it with its vector row at once, the exact scan at its next read of the
    catalogue (`max_age` later); either way the user still gets k, from a top wider than k."""
    source = CFSource()
    before = source.fetch(db, ["u0"], 5, NOW)["u0"]
    gone = before[0].item_id
    db.execute("delete from items where id = %(i)s", {"i": gone})
    db.commit()
    after = source.fetch(db, ["u0"], 5, NOW + source.max_age)["u0"]
    assert len(after) == 5 and gone not in {c.item_id for c in after}
    assert [c.item_id for c in after[:4]] == [c.item_id for c in before[1:]]


def test_the_catalogue_is_read_once_per_process_for_every_source(
    db: psycopg.Connection[Any], trained: serving.Served, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The HTTP API builds new sources for each run request: they share the process's catalogue."""
    reads: list[int] = []
    read = exact.Catalogue.read
    monkeypatch.setattr(exact.Catalogue, "read", lambda conn, served: reads.append(1) or read(conn, served))
    exact._SHARED.clear()
    for _ in range(3):
        assert CFSource().fetch(db, ["u0"], 5, NOW)["u0"]
    assert len(reads) == (1 if path == "exact" else 0)


def test_a_catalogue_too_large_to_scan_here_goes_to_the_server(trained: serving.Served) -> None:
    trained_items = len(trained.model.item_ids)
    assert exact.fits(trained, cold=0)
    assert not exact.fits(trained, cold=exact.EXACT_MAX_ITEMS - trained_items + 1)  # items, at any width
    assert not exact.fits(trained, max_cells=trained_items * trained.model.dim - 1, cold=0)
