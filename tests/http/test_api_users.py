"""User endpoints: upserts validated like imports, the events page, the profile view (online
updates visible at once), recommendations with explanations, manual runs, erasure, metrics."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from api_support import AUTH, ITEMS, fold_all, make_settings, post_events, seed
from fastapi.testclient import TestClient

from tagloop.agent.http import create_app
from tagloop.tools import neighbors
from tagloop.tools.store import db as store_db
from tagloop.tools.store.users import tables_with_user_rows


def test_put_user_and_item_validate_like_imports(client: TestClient) -> None:
    ok = client.put("/v1/users/u9", json={"timezone": "Asia/Tokyo", "consent": {"email": True}}, headers=AUTH)
    assert ok.status_code == 200 and ok.json() == {"stored": 1}
    bad = client.put("/v1/users/u9", json={"timezone": "Mars/Olympus"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timezone"
    mismatch = client.put("/v1/items/i9", json={"id": "other", "tags": ["a"]}, headers=AUTH)
    assert mismatch.status_code == 422 and mismatch.json()["errors"][0]["field"] == "id"
    # a numeric id is the id as text, as in POST and imports: PUT /v1/users/5 with {"id": 5} matches
    numeric = client.put("/v1/users/5", json={"id": 5, "timezone": "UTC"}, headers=AUTH)
    assert numeric.status_code == 200, numeric.text
    batch = client.post("/v1/items", json=[ITEMS[0], {"id": "x", "tags": {"rock": 3}}], headers=AUTH)
    assert batch.status_code == 422 and batch.json()["errors"][0]["field"] == "[1].tags.rock"


def test_events_page_is_newest_first_and_pages_without_gaps(client: TestClient) -> None:
    seed(client)
    events = [
        {
            "id": f"p{i}",
            "user_id": "u1",
            "type": "play",
            "item_id": "i1",
            "ts": f"2026-03-0{1 + i // 3}T10:00:00Z",
        }
        for i in range(7)
    ]  # ties of three on each ts
    assert post_events(client, events).status_code == 202
    seen: list[str] = []
    before = None
    for _ in range(10):
        params = {"limit": 2, **({"before": before} if before else {})}
        page = client.get("/v1/users/u1/events", params=params, headers=AUTH).json()
        seen += [e["id"] for e in page["events"]]
        before = page["next_before"]
        if before is None:
            break
    assert sorted(seen) == sorted(e["id"] for e in events) and len(seen) == 7
    first = client.get("/v1/users/u1/events", headers=AUTH).json()["events"]
    assert [e["ts"][:10] for e in first] == sorted((e["ts"][:10] for e in first), reverse=True)
    assert client.get("/v1/users/nobody/events", headers=AUTH).status_code == 404
    naive = client.get("/v1/users/u1/events", params={"before": "2026-03-02T10:00:00"}, headers=AUTH)
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "before"
    assert "stored" not in naive.json()["detail"]  # a read stores nothing anyway
    # `before` is read as an event's ts is: what POST /v1/events takes, GET takes (a unix number
    # was taken here and this refused)
    compact = client.get("/v1/users/u1/events", params={"before": "2026-03-02 10:00:00+00"}, headers=AUTH)
    assert compact.status_code == 200 and {e["ts"][:10] for e in compact.json()["events"]} == {"2026-03-01"}
    unix = client.get("/v1/users/u1/events", params={"before": "1772445600"}, headers=AUTH)
    assert unix.status_code == 422 and unix.json()["errors"][0]["field"] == "before"


def test_profile_shows_tags_timing_devices_sources_at_once(client: TestClient) -> None:
    seed(client)
    events = [
        # Saturday 22:00 in Berlin (21:00 UTC): weekend evening listening on the phone from a playlist
        {
            "user_id": "u1",
            "type": "like",
            "item_id": "i1",
            "ts": "2026-02-28T21:00:00Z",
            "context": {"device": "phone", "source": "playlist", "region": "DE"},
        },
        {
            "user_id": "u1",
            "type": "play",
            "item_id": "i3",
            "ts": "2026-02-28T21:05:00Z",
            "context": {"device": "phone", "source": "search"},
        },
        {"user_id": "u1", "type": "dislike", "item_id": "i2", "ts": "2026-02-28T21:10:00Z"},
    ]
    assert post_events(client, events).status_code == 202
    profile = client.get("/v1/users/u1/profile", headers=AUTH).json()
    tags = dict((t["tag"], t["weight"]) for t in profile["top_tags"])
    assert tags["synthwave"] > tags["electronic"] > 0
    assert "jazz" not in tags  # disliked
    assert profile["n_events"] == 3
    assert profile["timing"]["timezone"] == "Europe/Berlin"
    assert profile["timing"]["weekend_share"] == 1.0
    assert profile["timing"]["best_hours"][0] == "Sat 22:00"
    assert profile["devices"] == {"phone": 1.0}
    assert profile["sources"] == {"playlist": 0.5, "search": 0.5}
    assert profile["regions"] == {"DE": 1.0}
    assert profile["source_tags"]["playlist"][0]["tag"] in {"synthwave", "electronic"}
    assert {c["channel"]: c["consent"] for c in profile["channels"]} == {"webhook": True, "email": False}


def test_recommendations_are_unseen_and_explained(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    db.execute("select 1")
    post_events(client, [{"user_id": "u1", "type": "like", "item_id": "i1"}])
    recs = client.get("/v1/users/u1/recommendations", params={"k": 3}, headers=AUTH).json()["items"]
    assert recs and "i1" not in [r["item_id"] for r in recs]
    assert recs[0]["item_id"] in {"i3", "i5"}
    assert recs[0]["explanation"].startswith("because you play a lot of ")
    assert client.get("/v1/users/nobody/recommendations", headers=AUTH).status_code == 404


JAZZ_FAN_AND_OTHERS = [
    {"user_id": "u1", "type": "like", "item_id": "i2"},  # jazz, piano
    {"user_id": "u2", "type": "play", "item_id": "i1"},
    {"user_id": "u2", "type": "play", "item_id": "i5"},
]


def test_without_a_model_items_sharing_no_tag_are_popular_not_tag_matches(client: TestClient) -> None:
    """Before any training the tag search padded the list with items sharing no tag, at score 0,
    "because it is close to the tags you listen to"; a user without events got nothing."""
    seed(client)
    post_events(client, JAZZ_FAN_AND_OTHERS)
    recs = client.get("/v1/users/u1/recommendations", params={"k": 4}, headers=AUTH).json()["items"]
    assert recs[0] == {
        "item_id": "i4",
        "title": "Late Set",
        "provider": "a3",
        "score": recs[0]["score"],
        "explanation": "because you play a lot of jazz",
        "cold": False,
    }
    assert recs[0]["score"] > 0
    rest = recs[1:]  # no other item shares a tag with u1's: the popular ones, said so
    assert [r["item_id"] for r in rest] == ["i1", "i5"]
    assert all(r["explanation"] == "popular with listeners" and r["score"] == 0.0 for r in rest)
    assert client.put("/v1/users/u9", json={"timezone": "UTC"}, headers=AUTH).status_code == 200
    newcomer = client.get("/v1/users/u9/recommendations", params={"k": 2}, headers=AUTH).json()["items"]
    assert [(r["item_id"], r["explanation"]) for r in newcomer] == [
        ("i1", "popular with listeners"),
        ("i2", "popular with listeners"),
    ]


def test_without_a_model_a_new_user_is_served_their_declared_interests(client: TestClient) -> None:
    """A user without events but with declared interests got the popular list before any training
    (the trained model used them: "because you like jazz")."""
    seed(client)
    post_events(client, [{"user_id": "u2", "type": "play", "item_id": i} for i in ("i1", "i5")])
    newcomer = {"timezone": "UTC", "attributes": {"interests": ["Jazz"]}}
    assert client.put("/v1/users/u9", json=newcomer, headers=AUTH).status_code == 200
    recs = client.get("/v1/users/u9/recommendations", params={"k": 3}, headers=AUTH).json()["items"]
    assert [(r["item_id"], r["explanation"]) for r in recs[:2]] == [
        ("i2", "because you like jazz"),
        ("i4", "because you like jazz"),
    ]
    assert recs[0]["score"] > 0 and recs[2]["explanation"] == "popular with listeners"
    post_events(client, [{"user_id": "u9", "type": "like", "item_id": "i2"}])  # seen: not again
    again = client.get("/v1/users/u9/recommendations", params={"k": 3}, headers=AUTH).json()["items"]
    assert "i2" not in {r["item_id"] for r in again}


def test_erasure_leaves_zero_rows_of_the_user_in_every_table(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        db_url,
        tmp_path,
        outbound_webhook_url="https://example.test/hook",
        outbound_webhook_secret="whsec_" + "QUJDREVGR0hJSktMTU5PUA==",
    )
    with TestClient(create_app(settings, pool_size=2)) as client:  # a webhook channel: a message is queued
        _erase_u1(client, db)


def _erase_u1(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    post_events(
        client,
        [
            {"user_id": "u1", "type": "like", "item_id": "i1"},
            {"user_id": "u2", "type": "like", "item_id": "i2"},
        ],
    )
    db.rollback()
    db.execute("insert into user_schedules (user_id, cadence, next_run_at) values ('u1', 'weekly', now())")
    db.commit()
    run = client.post("/v1/users/u1/runs", json={"send_now": False}, headers=AUTH)
    assert run.status_code == 200 and run.json()["message_id"], run.text

    def counts() -> dict[str, int]:
        found = {}
        for table in tables_with_user_rows(db):
            column = "id" if table == "users" else "user_id"
            row = db.execute(f"select count(*) as n from {table} where {column} = 'u1'").fetchone()
            found[table] = row["n"] if row else 0
        return found

    db.rollback()
    before = counts()
    assert before["events"] == 1 and before["decisions"] == 1 and before["messages"] == 1
    response = client.delete("/v1/users/u1", headers=AUTH)
    assert response.status_code == 200 and response.json()["deleted"] == before
    db.rollback()
    left = counts()
    assert set(left) >= {
        "users",
        "events",
        "user_profiles",
        "decisions",
        "messages",
        "run_queue",
        "user_schedules",
        "decision_feedback",
    }
    assert all(n == 0 for n in left.values()), left
    assert db.execute("select count(*) as n from events where user_id = 'u2'").fetchone() == {"n": 1}
    assert client.delete("/v1/users/u1", headers=AUTH).status_code == 404


def test_erasure_marks_the_co_likes_derived_from_the_user_stale(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """`item_neighbors` has no user_id column: i3's neighbours, liked by u1 alone, were u1's other
    likes, and stayed until the daily refresh after u1 was erased."""
    seed(client)
    post_events(client, [{"user_id": "u1", "type": "like", "item_id": i} for i in ("i1", "i3", "i5")])
    post_events(client, [{"user_id": "u2", "type": "like", "item_id": i} for i in ("i1", "i2")])
    db.rollback()
    now = datetime.now(UTC)
    neighbors.refresh_neighbors(db, now)
    db.commit()

    def neighbours_of(item: str) -> set[str]:
        rows = db.execute("select neighbor_id from item_neighbors where item_id = %(i)s", {"i": item})
        return {r["neighbor_id"] for r in rows}

    assert neighbours_of("i3") == {"i1", "i5"} and not neighbors.is_stale(db, now, timedelta(days=1))
    assert client.delete("/v1/users/u1", headers=AUTH).status_code == 200
    db.rollback()
    assert neighbors.is_stale(db, now, timedelta(days=1))  # what a run or a worker's renewal checks
    assert neighbors.refresh_if_stale(db, now)
    db.commit()
    assert neighbours_of("i3") == set() and neighbours_of("i1") == {"i2"}


def test_metrics_count_accepted_duplicate_rejected_and_queue(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    seed(client)
    post_events(client, [{"id": "m1", "user_id": "u1", "type": "like", "item_id": "i1"}])
    post_events(client, [{"id": "m1", "user_id": "u1", "type": "like", "item_id": "i1"}])
    post_events(client, [{"user_id": "u1", "type": "bogus"}])
    good = {"user_id": "u1", "type": "play", "item_id": "i2"}
    assert post_events(client, [good, {"user_id": "u1", "type": "bogus"}, good]).status_code == 422
    fold_all(db)  # the folder enqueues the like's run
    text = client.get("/metrics", headers=AUTH).text
    assert 'tagloop_events_total{outcome="accepted"} 1.0' in text
    assert 'tagloop_events_total{outcome="duplicate"} 1.0' in text
    # the refused batch's good events were counted nowhere (one bad event, nothing stored)
    assert 'tagloop_events_total{outcome="rejected"} 4.0' in text
    assert "tagloop_run_queue_depth 1.0" in text
    assert 'route="/v1/events"' in text
    # the process-wide registry too: delivery metrics (tools/messaging/delivery.py) and process stats
    assert "# HELP tagloop_messages_total" in text and "process_cpu_seconds_total" in text


def test_metrics_labels_stay_bounded_whatever_method_a_client_sends(client: TestClient) -> None:
    """Anyone can send a request (no credentials needed for a 401): label values must not be theirs."""
    for n in range(5):
        assert client.request(f"ALICE{n}ATEXAMPLE", "/healthz").status_code in (401, 405)
    assert client.request("GET", "/nowhere/ann").status_code in (401, 404)
    text = client.get("/metrics", headers=AUTH).text
    assert "ALICE" not in text and "/nowhere" not in text
    assert 'method="other",route="/healthz"' in text


def test_ids_with_a_slash_work_in_every_user_and_item_path(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Ids are any string up to 256 characters (SPEC §3), so `a/b` is one, sent raw or as %2F."""
    user = {"id": "team/ann", "timezone": "UTC"}
    assert client.put("/v1/users/team/ann", json=user, headers=AUTH).status_code == 200
    item = {"id": "label/x/1", "title": "Slash", "provider": "p", "tags": ["rock"]}
    assert client.put("/v1/items/label%2Fx%2F1", json=item, headers=AUTH).status_code == 200
    assert (
        post_events(client, [{"user_id": "team/ann", "type": "like", "item_id": "label/x/1"}]).status_code
        == 202
    )
    events = client.get("/v1/users/team%2Fann/events", headers=AUTH)
    assert events.status_code == 200 and [e["item_id"] for e in events.json()["events"]] == ["label/x/1"]
    assert client.get("/v1/users/team/ann/profile", headers=AUTH).status_code == 200
    assert client.get("/v1/users/team/ann/recommendations", headers=AUTH).status_code == 200
    assert client.post("/v1/users/team/ann/runs", headers=AUTH).status_code == 200
    assert client.get("/v1/users/team/nobody/events", headers=AUTH).status_code == 404
    erased = client.delete("/v1/users/team%2Fann", headers=AUTH)
    assert erased.status_code == 200 and erased.json()["user_id"] == "team/ann"
    db.rollback()
    assert db.execute("select count(*) as n from users where id = 'team/ann'").fetchone() == {"n": 0}


def test_an_id_with_a_line_break_reaches_its_route(client: TestClient) -> None:
    """The router used to answer 404 Not Found for such a path (the `path` convertor stops at a
    line break), an undocumented status; now the route validates it like any other id."""
    put = client.put("/v1/items/a%0Ab", json={"id": "a\nb", "title": "x"}, headers=AUTH)
    assert put.status_code in (200, 422) and put.json().get("detail") != "Not Found", put.text
    events = client.get("/v1/users/a%0Ab/events", headers=AUTH)
    assert events.status_code == 404 and "unknown user" in events.json()["detail"]


def test_an_erasure_during_a_co_likes_refresh_waits_and_its_mark_stays(
    client: TestClient, db: psycopg.Connection[Any], db_url: str
) -> None:
    """The refresh wrote its state row at its end: an erasure committed while it computed had its
    stale mark overwritten, leaving the erased user's co-likes marked fresh until the daily refresh."""
    seed(client)
    post_events(client, [{"user_id": "u1", "type": "like", "item_id": i} for i in ("i1", "i3", "i5")])
    db.rollback()
    now = datetime.now(UTC)
    neighbors.refresh_neighbors(db, now)  # a state row to mark
    db.commit()
    erased: list[int] = []
    erasure = threading.Thread(
        target=lambda: erased.append(client.delete("/v1/users/u1", headers=AUTH).status_code)
    )
    refreshing = store_db.connect(db_url, migrate_schema=False)
    execute = refreshing.execute

    def erase_before_the_save(query: Any, *args: Any, **kwargs: Any) -> Any:
        # the neighbours are computed; the users' top providers (which lock the users they name)
        # and the state are not yet saved: erase now
        if query == "delete from user_top_providers":
            erasure.start()
            erasure.join(1.0)
        return execute(query, *args, **kwargs)

    refreshing.execute = erase_before_the_save  # type: ignore[method-assign]
    try:
        neighbors.refresh_neighbors(refreshing, now)
        assert erasure.is_alive()  # the erasure waits for the refresh
        refreshing.commit()
        erasure.join(10)
        assert erased == [200]
    finally:
        refreshing.close()
    db.rollback()
    assert neighbors.is_stale(db, now, timedelta(days=1))


def test_without_a_model_reasons_speak_of_the_items_kind(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """A shop's untrained recommendations said "because you play a lot of jazz" and "popular with
    listeners" of its products."""
    seed(client)
    db.execute("update items set kind = case when id = 'i4' then 'article' else 'product' end")
    db.commit()
    post_events(client, JAZZ_FAN_AND_OTHERS)
    recs = client.get("/v1/users/u1/recommendations", params={"k": 4}, headers=AUTH).json()["items"]
    assert [(r["item_id"], r["explanation"]) for r in recs] == [
        ("i4", "because you read a lot of jazz"),
        ("i1", "popular with other users"),
        ("i5", "popular with other users"),
    ]


def test_tags_put_over_http_are_merged_with_their_variants_by_the_worker(
    client: TestClient, db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """`tagloop import items` merges spelling variants (glitchwave / glitch wave) after storing;
    PUT and POST /v1/items did not, so the two spellings stayed two tags (and two profile
    dimensions) until someone ran `tagloop tag vocab`. The worker now syncs the vocabulary when it
    renews its run facts and new tags exist; with none, it does nothing."""
    from tagloop.agent.settings import Settings
    from tagloop.agent.worker import Worker
    from tagloop.tools.store import db as store_db

    items = [
        {"id": "g1", "title": "G1", "provider": "p", "tags": ["glitchwave", "synth"]},
        {"id": "g2", "title": "G2", "provider": "p", "tags": ["Glitch Wave"]},
        {"id": "g3", "title": "G3", "provider": "p", "tags": ["glitchwave"]},
    ]
    assert client.post("/v1/items", json=items, headers=AUTH).status_code == 200
    db.rollback()
    names = "select name from tags where name like 'glitch%' order by name"
    assert [r["name"] for r in db.execute(names)] == ["glitch-wave", "glitchwave"]
    db.rollback()
    conn = store_db.connect(db_url, migrate_schema=False)
    try:
        worker = Worker(Settings(home=tmp_path / "w", database_url=db_url), conn, name="w")
        worker.facts(datetime.now(UTC))
        assert [r["name"] for r in db.execute(names)] == ["glitchwave"]  # the most used spelling
        tagged = db.execute(
            "select count(distinct it.item_id) as n from item_tags it join tags t on t.id = it.tag_id"
            " where t.name = 'glitchwave'"
        ).fetchone()
        assert tagged == {"n": 3}
        unclassified = "select count(*) as n from tags where taxonomy_at is null"
        assert db.execute(unclassified).fetchone() == {"n": 0}  # so the next renewal does nothing
    finally:
        conn.close()
