"""POST /v1/events: durable, idempotent, all-or-nothing ingest with bearer keys or Standard
Webhooks signatures; every bad request gets its status and a problem+json body naming the field,
and nothing of it is stored."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from api_support import AUTH, OLD_SECRET, fold_all, post_events, seed, signed_headers
from fastapi.testclient import TestClient


def count(db: psycopg.Connection[Any], sql: str = "select count(*) as n from events") -> int:
    db.rollback()
    row = db.execute(sql).fetchone()
    return int(row["n"]) if row else 0


def test_batch_is_accepted_and_stored_once_committed(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    events = [
        {"id": f"e{i}", "user_id": "u1", "type": "play", "item_id": "i1", "ts": "2026-03-02T20:00:00Z"}
        for i in range(3)
    ]
    response = post_events(client, events)
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert count(db) == 3


def test_a_context_with_a_big_integer_is_stored_and_folded(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    seed(client)
    event = {"id": "big-1", "user_id": "u1", "type": "play", "item_id": "i1", "ts": "2026-03-02T20:00:00Z"}
    event["context"] = {"source": "radio", "n": 2**70}  # beyond 64 bits: orjson refuses it
    response = post_events(client, [event])
    assert response.status_code == 202, response.text
    row = db.execute("select context, ts from events where id = 'big-1'").fetchone()
    assert row["context"]["n"] == 2**70 and row["ts"].isoformat() == "2026-03-02T20:00:00+00:00"
    fold_all(db)
    assert count(db, "select n_events as n from user_profiles where user_id = 'u1'") == 1


def test_duplicate_event_id_is_stored_once(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    event = {"id": "dup-1", "user_id": "u1", "type": "like", "item_id": "i1"}
    assert post_events(client, [event, event]).json() == {"accepted": 1, "duplicates": 1}
    assert post_events(client, event).json() == {"accepted": 0, "duplicates": 1}
    assert count(db) == 1
    fold_all(db)  # profiles are folded from the event log after the 202
    assert count(db, "select n_events as n from user_profiles where user_id = 'u1'") == 1


def test_identical_events_without_ts_in_one_batch_are_each_stored(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Three real plays of one item, sent without ts: three events (their ts is the request's
    time, the same for all); with one ts they are one event sent three times."""
    seed(client)
    play = {"user_id": "u1", "type": "play", "item_id": "i1"}
    assert post_events(client, [play, play, play]).json() == {"accepted": 3, "duplicates": 0}
    timed = {**play, "ts": "2026-03-02T20:00:00Z"}
    assert post_events(client, [timed, timed, timed]).json() == {"accepted": 1, "duplicates": 2}
    assert count(db) == 4


def test_concurrent_identical_requests_store_each_event_once(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    seed(client)
    batch = [
        {"id": f"c{i}", "user_id": "u1" if i % 2 else "u2", "type": "play", "item_id": f"i{1 + i % 5}"}
        for i in range(40)
    ]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: post_events(client, batch), range(6)))
    assert all(r.status_code == 202 for r in results)
    assert sum(r.json()["accepted"] for r in results) == 40
    assert sum(r.json()["duplicates"] for r in results) == 5 * 40
    assert count(db) == 40
    fold_all(db)
    assert count(db, "select sum(n_events) as n from user_profiles") == 40  # each folded in exactly once


def test_a_webhook_event_with_a_time_gets_the_id_an_import_gives_it(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """A webhook event without `id` took the `webhook-id` even when it had a `ts`: backfilling the
    same history with `tagloop import events` (or an API-key request) stored every event twice."""
    seed(client)
    event = {"user_id": "u1", "type": "like", "item_id": "i2", "ts": "2026-03-01T09:00:00Z"}
    body = json.dumps(event).encode()
    first = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="msg_abc"))
    again = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="msg_abc"))
    backfill = post_events(client, [event])  # what an import of the same line does
    assert (first.json(), again.json()) == (
        {"accepted": 1, "duplicates": 0},
        {"accepted": 0, "duplicates": 1},
    )
    assert backfill.json() == {"accepted": 0, "duplicates": 1}
    db.rollback()
    assert db.execute("select count(*) as n from events").fetchone() == {"n": 1}


def test_signed_webhook_is_accepted_with_either_rotated_secret(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    seed(client)
    body = json.dumps({"user_id": "u1", "type": "save", "item_id": "i2"}).encode()
    new = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="msg_new"))
    old = client.post(
        "/v1/events", content=body, headers=signed_headers(body, msg_id="msg_old", secret=OLD_SECRET)
    )
    again = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="msg_new"))
    assert (new.status_code, old.status_code) == (202, 202)
    assert again.json() == {"accepted": 0, "duplicates": 1}  # a redelivery: the webhook-id is the event id
    db.rollback()
    ids = sorted(r["id"] for r in db.execute("select id from events"))
    assert ids == ["msg_new", "msg_old"]


def _webhook_cases(body: bytes) -> list[tuple[str, dict[str, str]]]:
    good = signed_headers(body, msg_id="m1")
    return [
        ("no credentials", {"content-type": "application/json"}),
        ("wrong signature", {**good, "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
        ("body changed after signing", {**good, "webhook-id": "m2"}),
        ("stale timestamp", signed_headers(body, msg_id="m3", at=time.time() - 6 * 60)),
        ("future timestamp", signed_headers(body, msg_id="m4", at=time.time() + 6 * 60)),
        (
            "unknown secret",
            signed_headers(body, msg_id="m5", secret="whsec_" + "c2VjcmV0LW5vdC1jb25maWd1cmVk"),
        ),
        ("malformed signature", {**good, "webhook-signature": "garbage"}),
        ("wrong api key", {"Authorization": "Bearer not-a-key", "content-type": "application/json"}),
        ("not bearer", {"Authorization": "Basic dTpw", "content-type": "application/json"}),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_credentials_get_401_and_store_nothing(
    client: TestClient, db: psycopg.Connection[Any], case: int
) -> None:
    seed(client)
    body = json.dumps({"user_id": "u1", "type": "like", "item_id": "i1"}).encode()
    name, headers = _webhook_cases(body)[case]
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 401, name
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert count(db) == 0


BAD_BATCHES: list[tuple[str, Any, str]] = [
    (
        "unknown event type",
        [{"user_id": "u1", "type": "play", "item_id": "i1"}, {"user_id": "u1", "type": "teleport"}],
        "[1].type",
    ),
    ("wrong JSON type", [{"user_id": "u1", "type": "play", "value": "lots"}], "[0].value"),
    ("timestamp without zone", [{"user_id": "u1", "type": "play", "ts": "2026-03-02T10:00:00"}], "[0].ts"),
    # u1 lives in Europe/Berlin: 9999-12-31T23:00Z is in year 10000 there (the fold crashed on it,
    # stopping the profile folder for everyone); u2 in New York: year 0 for 0001-01-01T00:00Z
    (
        "timestamp at the end of time",
        [{"user_id": "u1", "type": "like", "ts": "9999-12-31T23:00:00Z"}],
        "[0].ts",
    ),
    (
        "timestamp at the start of time",
        [{"user_id": "u2", "type": "like", "ts": "0001-01-01T00:00:00Z"}],
        "[0].ts",
    ),
    (
        "unknown user",
        [{"user_id": "u1", "type": "play"}, {"user_id": "nobody", "type": "like"}],
        "[1].user_id",
    ),
    ("unknown item", [{"user_id": "u1", "type": "play", "item_id": "i404"}], "[0].item_id"),
    ("missing user", {"type": "play"}, "user_id"),
    ("not an object", [{"user_id": "u1", "type": "play"}, 7], "[1]"),
    ("context not an object", [{"user_id": "u1", "type": "play", "context": [1]}], "[0].context"),
    (
        "field also in context",
        [
            {"user_id": "u1", "type": "play"},
            {"user_id": "u1", "type": "play", "context": {"app": "a"}, "app": "b"},
        ],
        "[1].app",
    ),
]


@pytest.mark.parametrize(("name", "payload", "field"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_invalid_events_get_422_naming_index_and_field(
    client: TestClient, db: psycopg.Connection[Any], name: str, payload: Any, field: str
) -> None:
    seed(client)
    response = post_events(client, payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "invalid input"
    assert field in [e["field"] for e in problem["errors"]]
    assert count(db) == 0
    assert count(db, "select count(*) as n from user_profiles") == 0


def test_every_unknown_reference_of_a_batch_is_named(client: TestClient, db: psycopg.Connection[Any]) -> None:
    """The foreign keys refuse the insert; the 422 still names each unknown user and item."""
    seed(client)
    batch = [
        {"id": "ok", "user_id": "u1", "type": "play", "item_id": "i1"},
        {"id": "who", "user_id": "nobody", "type": "like", "item_id": "i1"},
        {"id": "what", "user_id": "u2", "type": "play", "item_id": "i404"},
    ]
    response = post_events(client, batch)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["[1].user_id", "[2].item_id"]
    assert count(db) == 0
    assert post_events(client, batch[:1]).json() == {"accepted": 1, "duplicates": 0}


def test_a_422_names_bad_fields_and_unknown_references_together(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Unknown users and items were not named when another event of the batch did not parse."""
    seed(client)
    batch = [
        {"id": "ok", "user_id": "u1", "type": "play", "item_id": "i1"},
        {"id": "who", "user_id": "nobody", "type": "like", "item_id": "i1"},
        {"id": "when", "user_id": "u1", "type": "play", "ts": "yesterday"},
        {"id": "what", "user_id": "u2", "type": "play", "item_id": "i404"},
        "not an event",
    ]
    response = post_events(client, batch)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["[1].user_id", "[2].ts", "[3].item_id", "[4]"]
    assert count(db) == 0


def test_a_context_string_is_refused_as_not_an_object(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """The reason was a CSV cell's ("must be a JSON object (Expecting value at column 1)")."""
    seed(client)
    response = post_events(client, {"user_id": "u1", "type": "play", "context": "phone"})
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert (error["field"], error["reason"]) == ("context", "must be an object, got a string ('phone')")


def test_invalid_json_is_422_naming_the_body(client: TestClient, db: psycopg.Connection[Any]) -> None:
    response = client.post(
        "/v1/events", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


def test_oversize_body_and_too_many_events_get_413(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    big = [{"user_id": "u1", "type": "play", "context": {"pad": "x" * 2000}} for _ in range(600)]
    response = post_events(client, big)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    many = [{"user_id": "u1", "type": "play"} for _ in range(1001)]
    response = post_events(client, many)
    assert response.status_code == 413
    assert "1,000" in response.json()["detail"]
    assert count(db) == 0


def test_rate_limit_answers_429_with_retry_after(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Any
) -> None:
    from api_support import make_settings

    from tagloop.agent.http import create_app

    with TestClient(create_app(make_settings(db_url, tmp_path, rate_limit_per_minute=3), pool_size=2)) as c:
        codes = [c.get("/v1/users/u1/profile", headers=AUTH).status_code for _ in range(4)]
        limited = c.get("/v1/users/u1/profile", headers=AUTH)
    assert codes[:3] == [404, 404, 404] and codes[3] == 429
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"


def test_only_healthz_is_open(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    for path in ("/metrics", "/v1/users/u1/profile", "/v1/users/u1/events", "/v1/users/u1/recommendations"):
        assert client.get(path).status_code == 401, path
    assert client.delete("/v1/users/u1").status_code == 401
    assert client.post("/v1/users/u1/runs").status_code == 401


def test_without_credentials_a_huge_body_is_401_not_413(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """No bearer key and no (or stale) webhook headers: refused before the body is read, so the size
    of the body does not turn a missing credential into a 413."""
    seed(client)
    big = b"[" + b",".join([b'{"user_id": "u1", "type": "play"}'] * 40_000) + b"]"  # ~1.4 MB
    stale = signed_headers(b"[]", msg_id="m-stale", at=time.time() - 3600)
    for headers in ({"content-type": "application/json"}, stale):
        response = client.post("/v1/events", content=big, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert "tolerance" in response.json()["detail"]
    signed = signed_headers(big, msg_id="m-big")  # credentials present: the size is what is wrong
    assert client.post("/v1/events", content=big, headers=signed).status_code == 413
    assert count(db) == 0


def test_the_openapi_document_offers_a_webhook_signature_or_a_bearer_key_for_events(
    client: TestClient,
) -> None:
    """A client generated from /openapi.json learns both ways in: a bearer key, or the three
    Standard Webhooks headers together; the other endpoints take the bearer key only."""
    spec = client.get("/openapi.json", headers=AUTH).json()
    schemes = spec["components"]["securitySchemes"]
    events = spec["paths"]["/v1/events"]["post"]["security"]
    assert {"HTTPBearer": []} in events
    (webhook,) = [s for s in events if "HTTPBearer" not in s]
    assert sorted(schemes[n]["name"] for n in webhook) == [
        "webhook-id",
        "webhook-signature",
        "webhook-timestamp",
    ]
    assert all(schemes[n]["in"] == "header" and schemes[n]["type"] == "apiKey" for n in webhook)
    assert spec["paths"]["/v1/items"]["post"]["security"] == [{"HTTPBearer": []}]
