"""POST /v1/users/{id}/runs: the agent decides for one user now and the decision comes back;
a second run of the same user while one holds the user's run lock is refused with 409; run
requests share the run facts (agent/runshare.py) and leave the co-likes refresh to the workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_support import AUTH, afternoon_zone, make_settings, post_events, seed
from fastapi.testclient import TestClient

from tagloop.agent import runner
from tagloop.agent.http import create_app
from tagloop.tools import triggers
from tagloop.tools.errors import ConfigError


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


def test_run_requests_share_the_run_facts_and_do_not_refresh_co_likes(
    client: TestClient, db: psycopg.Connection[Any], monkeypatch: Any
) -> None:
    seed(client)
    post_events(client, [{"user_id": "u1", "type": "like", "item_id": "i1"}])
    reads: list[int] = []
    load_facts = runner.load_facts
    monkeypatch.setattr(runner, "load_facts", lambda *a: reads.append(1) or load_facts(*a))
    db.rollback()
    assert db.execute("select count(*) as n from item_neighbors_state").fetchone() == {"n": 0}
    assert client.post("/v1/users/u1/runs", headers=AUTH).status_code == 200
    db.rollback()
    as_of = db.execute("select as_of from item_neighbors_state").fetchone()
    assert as_of is not None  # computed once: it was missing
    db.execute("update item_neighbors_state set as_of = as_of - interval '30 days'")  # stale now
    db.commit()
    assert client.post("/v1/users/u1/runs", headers=AUTH).status_code == 200
    db.rollback()
    stale = db.execute("select as_of from item_neighbors_state").fetchone()
    assert stale is not None and as_of["as_of"] - stale["as_of"] == timedelta(days=30)  # not refreshed
    assert reads == [1]  # the second request used the first one's facts


@contextmanager
def webhook_client(db_url: str, home: Path, users: list[str]) -> Iterator[TestClient]:
    """An app whose webhook channel points at this host (refused by the SSRF guard at send time),
    seeded, with `users` consenting to webhooks in a zone where it is early afternoon now."""
    settings = make_settings(
        db_url,
        home,
        outbound_webhook_url="http://127.0.0.1:9/hook",
        outbound_webhook_secret="whsec_" + "QUJD" * 8,
    )
    with TestClient(create_app(settings, pool_size=2)) as client:
        seed(client)
        user = {"timezone": afternoon_zone(), "channels": {"webhook": "hooks"}, "consent": {"webhook": True}}
        for user_id in users:
            assert client.put(f"/v1/users/{user_id}", json=user, headers=AUTH).status_code == 200
        yield client


def test_send_now_says_what_became_of_the_message(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A webhook URL on this host is refused by the SSRF guard: the response says the message is
    dead and why, rather than only `delivered: false`; a run without send_now says it is queued."""
    with webhook_client(db_url, tmp_path, ["w1", "w2"]) as client:
        post_events(client, [{"user_id": u, "type": "like", "item_id": "i1"} for u in ("w1", "w2")])
        sent = client.post("/v1/users/w1/runs", json={"send_now": True}, headers=AUTH).json()
        queued = client.post("/v1/users/w2/runs", json={"send_now": False}, headers=AUTH).json()
        # the profile counts what was sent, not every message row: the dead one and the queued one
        profiles = {u: client.get(f"/v1/users/{u}/profile", headers=AUTH).json() for u in ("w1", "w2")}
    webhook = {u: next(c for c in p["channels"] if c["channel"] == "webhook") for u, p in profiles.items()}
    assert (webhook["w1"]["sent"], webhook["w1"]["queued"]) == (0, 0)
    assert (webhook["w2"]["sent"], webhook["w2"]["queued"]) == (0, 1)
    assert sent["channel"] == "webhook" and sent["delivered"] is False
    assert sent["delivery"] == "dead" and "private or loopback" in sent["delivery_error"]
    assert queued["channel"] == "webhook" and queued["delivery"] == "pending"
    assert queued["delivery_error"] is None
    db.rollback()
    stored = db.execute(
        "select status from messages where id = %(id)s", {"id": sent["message_id"]}
    ).fetchone()
    assert stored == {"status": "dead"}


def test_a_run_held_back_by_a_cap_says_so(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> None:
    """send_now asks for now; the webhook cap (3 a day by default) moves the message to when it
    allows: the response says what held it back, and so does a repeat of the run (stored decision)."""
    from tests.messaging.msg_support import queue_messages

    with webhook_client(db_url, tmp_path, ["w3"]) as client:
        post_events(client, [{"user_id": "w3", "type": "like", "item_id": "i1"}])
        db.rollback()
        now = datetime.now(UTC)
        for hours in (1, 2, 3):  # three webhook messages sent in the last day
            (mid,) = queue_messages(db, ["w3"], send_at=now - timedelta(hours=hours))
            db.execute(
                "update messages set status = 'sent', sent_at = send_at where id = %(id)s", {"id": mid}
            )
        db.commit()
        held = client.post("/v1/users/w3/runs", json={"send_now": True}, headers=AUTH).json()
        again = client.post("/v1/users/w3/runs", json={"send_now": True}, headers=AUTH).json()
    assert held["channel"] == "webhook" and held["delivery"] == "pending" and held["delivered"] is False
    assert held["held_back"] == "webhook cap of 3 per day reached"
    assert datetime.fromisoformat(held["send_at"]) > now + timedelta(hours=20)
    # the same minute: the stored decision, read back with its words (else a new one, held alike)
    assert again["held_back"] == held["held_back"]


def test_before_any_training_a_new_user_is_sent_their_declared_interests(client: TestClient) -> None:
    """A user without events but with declared interests was served them by the recommendations
    endpoint, while a run of the same user decided "nothing to send: no unseen candidates"."""
    seed(client)
    newcomer = {
        "timezone": afternoon_zone(),
        "consent": {"file": True},
        "attributes": {"interests": ["Jazz"]},
    }
    assert client.put("/v1/users/u9", json=newcomer, headers=AUTH).status_code == 200
    decision = client.post("/v1/users/u9/runs", json={"send_now": False}, headers=AUTH).json()
    assert decision["outcome"] == "message", decision
    assert {c["item_id"] for c in decision["chosen"]} == {"i2", "i4"}  # the two jazz items
    assert decision["explanation"].startswith("Because you like jazz: "), decision["explanation"]
    bare = {
        "timezone": "UTC",
        "consent": {"webhook": True},
        "channels": {"webhook": "https://example.test/h"},
    }
    assert client.put("/v1/users/u8", json=bare, headers=AUTH).status_code == 200
    nothing = client.post("/v1/users/u8/runs", headers=AUTH).json()  # no events, no interests, no trend
    assert nothing["outcome"] == "nothing_to_send"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"smtp_url": "smtp://mail.example:0"}, "TAGLOOP_SMTP_URL must look like smtp://"),
        ({"candidate_sources": ["tags", "trendng"]}, "TAGLOOP_CANDIDATE_SOURCES names unknown"),
        ({"policy_file": Path("/nonexistent/POLICY.toml")}, "TAGLOOP_POLICY_FILE: /nonexistent/POLICY"),
    ],
)
def test_the_app_refuses_what_a_run_could_not_build(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    """Checked when the worker or scheduler was built only: `serve --no-scheduler --no-delivery`
    started, and the first run requested failed (a 500, or a 422 blaming the client)."""
    with pytest.raises(ConfigError, match=message):
        create_app(make_settings("postgresql://nobody@127.0.0.1:1/none", tmp_path, **overrides))


def test_a_policy_file_gone_after_start_up_is_a_configuration_error(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "POLICY.toml"
    policy.write_text('name = "p"\n', encoding="utf-8")
    with TestClient(create_app(make_settings(db_url, tmp_path, policy_file=policy), pool_size=2)) as client:
        seed(client)
        policy.unlink()
        response = client.post("/v1/users/u1/runs", headers=AUTH)
    assert response.status_code == 500, response.text  # was 422 "invalid input"
    assert response.json()["title"] == "configuration error"
    assert "TAGLOOP_POLICY_FILE" in response.json()["detail"]
