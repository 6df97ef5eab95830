"""Only a database that is unavailable for now is a 503 with Retry-After (a client retries it);
any other database error is a 500 logged with its reason — a ProgramLimitExceeded (an OperationalError
subclass) was a 503 "database unavailable", retried for ever. The errors come from the real test
database, through a route added to the app for the test. And an item past the title/tag bounds is
a 422 naming the field, before the database sees it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_support import AUTH, make_settings
from fastapi import Request
from fastapi.testclient import TestClient

from tagloop.agent.http import create_app
from tagloop.tools.ingest.fields import MAX_TAGS
from tagloop.tools.ingest.records import MAX_TITLE

STATEMENTS = {
    # 54000 program_limit_exceeded: retrying cannot help
    "limit": "select array_fill(1, array[400000000])",
    # 57P01 admin_shutdown: the server ended this connection; the next one may work
    "shutdown": "select pg_terminate_backend(pg_backend_pid())",
}


@pytest.fixture
def app_client(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(db_url, tmp_path), pool_size=2)

    def fail(name: str, request: Request) -> None:
        with request.app.state.tagloop.pool.connection() as conn:
            conn.execute(STATEMENTS[name])

    app.add_api_route("/test/fail/{name}", fail)
    with TestClient(app) as client:
        yield client


def test_a_program_limit_is_a_logged_500_not_a_503(app_client: TestClient, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="tagloop.http"):
        response = app_client.get("/test/fail/limit")
    assert response.status_code == 500, response.text
    assert "retry-after" not in response.headers
    assert response.json()["title"] == "internal error"
    logged = [r.getMessage() for r in caplog.records if "event=database_error" in r.getMessage()]
    assert logged and "ProgramLimitExceeded" in logged[0] and "sqlstate=54000" in logged[0]


def test_a_connection_ended_by_the_server_is_a_503(app_client: TestClient) -> None:
    response = app_client.get("/test/fail/shutdown")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert app_client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"title": "x" * (MAX_TITLE + 1)}, "title"),
        ({"title": "\U0001f600" * 700}, "title"),  # 700 characters, 2,800 bytes
        ({"tags": [f"t{n}" for n in range(MAX_TAGS + 1)]}, "tags"),
    ],
)
def test_an_item_past_the_bounds_is_422(app_client: TestClient, item: dict[str, Any], field: str) -> None:
    response = app_client.put("/v1/items/i9", json=item, headers=AUTH)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
