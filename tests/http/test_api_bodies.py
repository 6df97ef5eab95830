"""Request bodies and paths every route shares: one decoding (bodies.decode) with one 422 shape for
bad bytes, bad JSON, deep nesting, repeated keys; strict types on the run body; path ids that are
not UTF-8; batch limits as published; the webhook-id a batch derives ids from; HEAD /healthz; and an
unexpected error answered as a 500 problem, logged once."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from api_support import AUTH, NEW_SECRET, post_events, seed, signed_headers
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from tagloop.agent.http import bodies, services
from tagloop.tools.ingest.fields import MAX_DEPTH as FIELD_DEPTH

JSON = {"content-type": "application/json"}


def fields(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json()["errors"]]


def count(db: psycopg.Connection[Any], table: str) -> int:
    db.rollback()
    return int(db.execute(f"select count(*) as n from {table}").fetchone()["n"])


DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_CONTEXT = b'{"user_id": "u1", "type": "play", "context": ' + b'{"a": ' * 960 + b"1" + b"}" * 960 + b"}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/events", DEEP_ARRAY),
        ("POST", "/v1/events", DEEP_CONTEXT),
        ("PUT", "/v1/users/u1", b'{"attributes": ' + b'{"a": ' * 960 + b"1" + b"}" * 961),
        ("POST", "/v1/users/u1/runs", DEEP_ARRAY),
        ("POST", "/v1/items", b"[" * 101 + b"]" * 101),  # just past the limit
    ],
)
def test_deeply_nested_bodies_are_422_naming_the_body(
    client: TestClient, db: psycopg.Connection[Any], caplog: Any, method: str, path: str, body: bytes
) -> None:
    seed(client)
    with caplog.at_level(logging.WARNING):
        response = client.request(method, path, content=body, headers={**AUTH, **JSON})
    assert response.status_code == 422, response.text
    assert fields(response) == ["body"]
    assert f"nested deeper than {bodies.MAX_DEPTH} levels" in response.json()["detail"]
    assert not [r for r in caplog.records if r.exc_info]
    assert count(db, "events") == 0


def test_nesting_up_to_the_limit_is_decoded(client: TestClient, db: psycopg.Connection[Any]) -> None:
    """A body nested to the limit is decoded: what answers is the field check (a stored `context`
    holds at most FIELD_DEPTH levels), naming the field; within that it is stored."""
    seed(client)
    levels = bodies.MAX_DEPTH - 3  # the batch, the event, its context
    context = b'{"a": ' * levels + b"1" + b"}" * levels
    body = b'[{"id": "deep", "user_id": "u1", "type": "play", "context": {"n": ' + context + b"}}]"
    refused = client.post("/v1/events", content=body, headers={**AUTH, **JSON})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"].startswith("[0].context.n.a")
    levels = FIELD_DEPTH - 2  # the context object and its "n"
    context = b'{"a": ' * levels + b"1" + b"}" * levels
    body = b'[{"id": "deep", "user_id": "u1", "type": "play", "context": {"n": ' + context + b"}}]"
    assert client.post("/v1/events", content=body, headers={**AUTH, **JSON}).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/events", b'{"id":"dk1","user_id":"u1","type":"play","user_id":"u2"}', "user_id"),
        (
            "POST",
            "/v1/events",
            b'[{"user_id":"u1","type":"play"},{"user_id":"u1","type":"play","type":"like"}]',
            "[1].type",
        ),
        (
            "POST",
            "/v1/events",
            b'[{"user_id":"u1","type":"play","context":{"a":1,"b":2,"a":3}}]',
            "[0].context.a",
        ),
        ("PUT", "/v1/users/u9", b'{"timezone": "UTC", "timezone": "Asia/Tokyo"}', "timezone"),
        ("POST", "/v1/users/u1/runs", b'{"send_now": false, "send_now": true}', "send_now"),
    ],
)
def test_a_key_given_twice_is_422_naming_it(
    client: TestClient, db: psycopg.Connection[Any], method: str, path: str, body: bytes, field: str
) -> None:
    seed(client)
    response = client.request(method, path, content=body, headers={**AUTH, **JSON})
    assert response.status_code == 422, response.text
    assert fields(response) == [field]
    assert "more than once" in response.json()["errors"][0]["reason"]
    assert count(db, "events") == 0 and count(db, "decisions") == 0


HUGE = b"1" + b"0" * 5000  # more digits than Python converts (4,300)
PAST = b"1" + b"0" * 400  # an exact integer past what a double holds


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/users/u1/runs", b'{"send_now": ' + HUGE + b"}", "send_now"),
        ("POST", "/v1/events", b'{"user_id": "u1", "type": "play", "value": ' + HUGE + b"}", "value"),
        ("POST", "/v1/events", b'[{"user_id": "u1", "type": "play", "value": ' + PAST + b"}]", "[0].value"),
        ("PUT", "/v1/users/u9", b'{"attributes": {"n": [' + HUGE + b"]}}", "attributes.n[0]"),
        ("POST", "/v1/events", b"[" + HUGE + b"]", "[0]"),
    ],
)
def test_huge_integers_are_422_naming_the_field(
    client: TestClient, db: psycopg.Connection[Any], method: str, path: str, body: bytes, field: str
) -> None:
    """An integer too long to read (the stdlib parser's ValueError) or past a double (`value` is a
    double: OverflowError) was a 500."""
    seed(client)
    response = client.request(method, path, content=body, headers={**AUTH, **JSON})
    assert response.status_code == 422, response.text
    assert fields(response) == [field]
    assert count(db, "events") == 0 and count(db, "decisions") == 0


def test_a_signed_webhook_with_a_huge_integer_is_422(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    body = b'{"user_id": "u1", "type": "play", "context": {"n": ' + HUGE + b"}}"
    response = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="msg-huge"))
    assert response.status_code == 422, response.text
    assert fields(response) == ["context.n"]
    assert count(db, "events") == 0


def test_repeated_text_inside_strings_is_not_a_repeated_key(client: TestClient) -> None:
    seed(client)
    body = json.dumps({"user_id": "u1", "type": "play", "context": {"note": 'a "b": c, "b": d'}}).encode()
    assert client.post("/v1/events", content=body, headers={**AUTH, **JSON}).status_code == 202


@pytest.mark.parametrize("value", ['"yes"', '"no"', "0", "1", "null", '"true"', "[]"])
def test_send_now_must_be_a_json_boolean(client: TestClient, db: psycopg.Connection[Any], value: str) -> None:
    seed(client)
    response = client.post("/v1/users/u1/runs", content=f'{{"send_now": {value}}}', headers=AUTH)
    assert response.status_code == 422, response.text
    assert fields(response) == ["send_now"]
    assert response.json()["errors"][0]["reason"].startswith("must be true or false")
    assert count(db, "decisions") == 0


def test_run_body_is_decoded_like_every_other_body(client: TestClient, db: psycopg.Connection[Any]) -> None:
    """No content-type needed (as on PUT /v1/users); broken bodies name `body`, not a char offset."""
    seed(client)
    assert client.post("/v1/users/u1/runs", content=b'{"send_now": false}', headers=AUTH).status_code == 200
    assert client.post("/v1/users/u1/runs", headers=AUTH).status_code == 200  # the body is optional
    truncated = client.post("/v1/users/u1/runs", content=b'{"send_now": tr', headers={**AUTH, **JSON})
    assert truncated.status_code == 422 and fields(truncated) == ["body"]
    assert "is not valid JSON" in truncated.json()["errors"][0]["reason"]
    latin1 = client.post("/v1/users/u1/runs", content=b'{"send_now": "\xe9"}', headers={**AUTH, **JSON})
    assert latin1.status_code == 422 and fields(latin1) == ["body"]
    assert "not valid UTF-8" in latin1.json()["errors"][0]["reason"]
    unknown = client.post("/v1/users/u1/runs", json={"send_later": True}, headers=AUTH)
    assert unknown.status_code == 422 and fields(unknown) == ["send_later"]
    same = client.put("/v1/users/u1", content=b'{"timezone": "UTC", ', headers=AUTH)
    assert same.status_code == 422 and fields(same) == ["body"]


def test_path_ids_that_are_not_utf8_are_422(client: TestClient, db: psycopg.Connection[Any]) -> None:
    stored = client.put("/v1/users/%FF", json={"timezone": "UTC"}, headers=AUTH)
    assert stored.status_code == 422 and fields(stored) == ["user_id"]
    assert stored.json()["errors"][0]["reason"] == "path id is not valid UTF-8"
    for method, path in (
        ("GET", "/v1/users/%FE/profile"),
        ("DELETE", "/v1/users/%FE"),
        ("PUT", "/v1/items/%C3"),
    ):
        response = client.request(
            method, path, headers=AUTH, json={"tags": ["a"]} if method == "PUT" else None
        )
        assert response.status_code == 422, (path, response.text)
    assert count(db, "users") == 0 and count(db, "items") == 0
    # a real U+FFFD, percent-encoded as UTF-8, is an id like any other
    assert client.put("/v1/users/%EF%BF%BD", json={"timezone": "UTC"}, headers=AUTH).status_code == 200
    assert client.get("/v1/users/%EF%BF%BD/profile", headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/v1/users", "/v1/items"])
def test_batches_over_the_published_limit_are_413(
    client: TestClient, db: psycopg.Connection[Any], path: str
) -> None:
    limit = client.get("/openapi.json", headers=AUTH).json()["paths"][path]["post"]["requestBody"]
    assert limit["content"]["application/json"]["schema"]["maxItems"] == services.MAX_RECORDS
    too_many = [{"id": f"r{i}", "timezone": "UTC", "tags": ["a"]} for i in range(services.MAX_RECORDS + 1)]
    response = client.post(path, json=too_many, headers=AUTH)
    assert response.status_code == 413, response.text
    assert f"{services.MAX_RECORDS:,}" in response.json()["detail"]
    assert count(db, path.rsplit("/", 1)[1]) == 0
    assert client.post(path, json=too_many[:-1], headers=AUTH).json() == {"stored": services.MAX_RECORDS}


def test_a_too_long_webhook_id_is_named_as_the_header(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    seed(client)
    for msg_id, events in (
        ("w" * 257, {"user_id": "u1", "type": "play"}),
        ("w" * 255, [{"user_id": "u1", "type": "play"}, {"user_id": "u1", "type": "like"}]),
    ):
        body = json.dumps(events).encode()
        response = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id=msg_id))
        assert response.status_code == 422, response.text
        assert fields(response) == ["webhook-id"]
    body = json.dumps([{"id": "own", "user_id": "u1", "type": "play"}]).encode()  # ids given: no matter
    ok = client.post("/v1/events", content=body, headers=signed_headers(body, msg_id="w" * 300))
    assert ok.status_code == 202, ok.text
    assert count(db, "events") == 1


def test_a_signed_body_that_is_not_utf8_is_422_not_401(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    body = b'{"user_id": "u1", "type": "play", "context": {"city": "M\xfcnchen"}}'  # Latin-1
    when = datetime.fromtimestamp(time.time(), tz=UTC)
    headers = {
        "webhook-id": "msg-latin1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(NEW_SECRET).sign("msg-latin1", when, body),
        **JSON,
    }
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert fields(response) == ["body"] and "not valid UTF-8" in response.json()["errors"][0]["reason"]
    headers["webhook-signature"] = Webhook(NEW_SECRET).sign("msg-latin1", when, body + b" ")
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401


def test_head_healthz_is_200_without_a_body(client: TestClient) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""
    assert "/healthz" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_an_unexpected_error_is_a_500_problem_logged_once(
    client: TestClient, caplog: Any, monkeypatch: Any
) -> None:
    """The app answers it itself (nothing re-raised to the server, which would log it again and
    drop the keep-alive connection); the next request on the client works."""
    seed(client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "events_page", broken)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/users/u1/events", headers=AUTH)  # TestClient raises what escapes
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "internal error"
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert post_events(client, {"user_id": "u1", "type": "play"}).status_code == 202
