"""POST /v1/users/{id}/runs: the agent decides for one user now and the decision comes back;
a second run of the same user while one holds the user's run lock is refused with 409."""

from __future__ import annotations

from typing import Any

import psycopg
from api_support import AUTH, post_events, seed
from fastapi.testclient import TestClient

from tagloop.tools import triggers


def test_manual_run_returns_the_decision(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    post_events(
        client,
        [
            {"user_id": "u1", "type": "like", "item_id": "i1"},
            {"user_id": "u1", "type": "play", "item_id": "i2"},
        ],
    )
    response = client.post("/v1/users/u1/runs", json={"send_now": False}, headers=AUTH)
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["user_id"] == "u1" and decision["decision_id"]
    assert decision["policy"] and decision["policy_version"]
    assert len(decision["propensities"]) == len(decision["chosen"])
    assert all(0 < p <= 1 for p in decision["propensities"])
    db.rollback()
    stored = db.execute(
        "select outcome, trigger from decisions where id = %(id)s", {"id": decision["decision_id"]}
    ).fetchone()
    assert stored == {"outcome": decision["outcome"], "trigger": "manual"}


def test_run_of_unknown_user_is_404(client: TestClient) -> None:
    response = client.post("/v1/users/nobody/runs", headers=AUTH)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_run_while_the_user_is_locked_is_409(client: TestClient, db: psycopg.Connection[Any]) -> None:
    seed(client)
    db.rollback()
    with triggers.run_lock(db, "u1") as got:
        assert got
        response = client.post("/v1/users/u1/runs", headers=AUTH)
    assert response.status_code == 409
    assert client.post("/v1/users/u1/runs", headers=AUTH).status_code == 200
