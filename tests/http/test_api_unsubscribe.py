"""The unsubscribe link of a mail, end to end over the API: a run enqueues an email, the link of
that message records one `unsubscribe` event for its user and channel, which runs and the
send-time checks read; a link without a valid token is a 401 and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from api_support import AUTH, ITEMS, make_settings, post_events
from fastapi.testclient import TestClient

from tagloop.agent.http import create_app
from tagloop.tools.messaging.unsubscribe import UnsubscribeLinks
from tagloop.tools.store import runs

PUBLIC_URL = "https://notify.example.test"
SECRET = "unsubscribe-secret-0123456789"
READER = {
    "id": "reader",
    "timezone": "Europe/Berlin",
    "channels": {"email": "reader@example.org"},
    "consent": {"email": True},
}


@pytest.fixture
def mail_client(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Any:
    settings = make_settings(
        db_url, tmp_path, smtp_url="smtp://127.0.0.1:9", public_url=PUBLIC_URL, unsubscribe_secret=SECRET
    )
    with TestClient(create_app(settings, pool_size=2)) as client:
        assert client.put("/v1/users/reader", json=READER, headers=AUTH).status_code == 200
        assert client.post("/v1/items", json=ITEMS, headers=AUTH).status_code == 200
        post_events(client, [{"user_id": "reader", "type": "like", "item_id": "i1"}])
        yield client


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_the_link_of_a_mail_unsubscribes_its_user_from_that_channel(
    mail_client: TestClient, db: psycopg.Connection[Any]
) -> None:
    before = mail_client.get("/v1/users/reader/profile", headers=AUTH).json()["channels"]
    assert before == [
        {
            "channel": "email",
            "consent": True,
            "sent": 0,
            "queued": 0,
            "engagement": {},
            "unsubscribed_at": None,
            "configured": True,
            "reachable": True,
        }
    ]
    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    assert decision["outcome"] == "message" and decision["channel"] == "email", decision
    link = UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).url(decision["message_id"])
    assert link.startswith(f"{PUBLIC_URL}/v1/unsubscribe/{decision['message_id']}?token=")

    page = mail_client.get(_path(link))  # what a mail reader's link preview does: changes nothing
    assert page.status_code == 200 and "<form method='post'" in page.text
    assert _unsubscribes(mail_client) == []

    first = mail_client.post(_path(link), content=b"List-Unsubscribe=One-Click")
    assert first.status_code == 200, first.text
    assert first.json() == {"channel": "email", "already": False}
    again = mail_client.post(_path(link))
    assert again.json() == {"channel": "email", "already": True}
    stored = _unsubscribes(mail_client)
    assert len(stored) == 1 and stored[0]["message_id"] == decision["message_id"]
    assert stored[0]["context"]["channel"] == "email"

    # what runs and the send-time check read: the user is unsubscribed from email, not from all
    db.rollback()
    assert set(runs.unsubscribes(db, ["reader"])["reader"]) == {"email"}
    # and the profile says so: consent alone read as reachable, though nothing could be sent
    profile = mail_client.get("/v1/users/reader/profile", headers=AUTH).json()
    channels = {c["channel"]: c for c in profile["channels"]}
    assert channels["email"]["consent"] is True and channels["email"]["unsubscribed_at"] is not None
    assert channels["email"]["reachable"] is False


def test_the_link_clicked_again_after_the_user_opted_in_again_unsubscribes_again(
    mail_client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """The event's id was the link's message id alone: after a PUT with consent (opting in again), a
    second click was a duplicate of the unsubscribe that no longer counts, answered `already`, and
    the user kept getting mail."""
    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    link = _path(UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).url(decision["message_id"]))
    assert mail_client.post(link).json() == {"channel": "email", "already": False}
    assert mail_client.put("/v1/users/reader", json=READER, headers=AUTH).status_code == 200  # opts in
    db.rollback()
    assert "reader" not in runs.unsubscribes(db, ["reader"])  # reachable again, as the README says
    assert mail_client.post(link).json() == {"channel": "email", "already": False}
    assert mail_client.post(link).json() == {"channel": "email", "already": True}  # the same click twice
    db.rollback()
    assert set(runs.unsubscribes(db, ["reader"])["reader"]) == {"email"}
    assert len(_unsubscribes(mail_client)) == 2


def test_a_click_stored_by_an_earlier_version_is_still_the_same_click(
    mail_client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Earlier versions stored the link's event as `unsubscribe:{message_id}`: clicking it again is
    `already`, not a second event, until the user opts in again."""
    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    message_id = decision["message_id"]
    db.execute(
        """insert into events (id, user_id, type, ts, message_id, context)
           values (%(id)s, 'reader', 'unsubscribe', now(), %(m)s, '{"channel": "email"}')""",
        {"id": f"unsubscribe:{message_id}", "m": message_id},
    )
    db.commit()
    link = _path(UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).url(message_id))
    assert mail_client.post(link).json() == {"channel": "email", "already": True}
    assert len(_unsubscribes(mail_client)) == 1
    assert mail_client.put("/v1/users/reader", json=READER, headers=AUTH).status_code == 200  # opts in
    assert mail_client.post(link).json() == {"channel": "email", "already": False}
    assert len(_unsubscribes(mail_client)) == 2


def test_a_link_without_a_valid_token_is_401_and_stores_nothing(mail_client: TestClient) -> None:
    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    message_id = decision["message_id"]
    other = UnsubscribeLinks(PUBLIC_URL, b"another-secret-0123456789").token(message_id)
    for query in ("", "?token=", f"?token={other}", "?token=" + "A" * 43):
        response = mail_client.post(f"/v1/unsubscribe/{message_id}{query}")
        assert response.status_code == 401, query
        assert response.headers["content-type"] == "application/problem+json"
        assert mail_client.get(f"/v1/unsubscribe/{message_id}{query}").status_code == 401
    # a valid token names one message: it is not valid for another id
    token = UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).token(message_id)
    elsewhere = f"/v1/unsubscribe/00000000-0000-5000-8000-000000000000?token={token}"
    assert mail_client.post(elsewhere).status_code == 401
    assert _unsubscribes(mail_client) == []


def test_a_valid_link_of_an_erased_user_is_404(mail_client: TestClient) -> None:
    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    link = UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).url(decision["message_id"])
    assert mail_client.delete("/v1/users/reader", headers=AUTH).status_code == 200
    response = mail_client.post(_path(link))
    assert response.status_code == 404 and "no longer exists" in response.json()["detail"]


def test_without_the_settings_every_link_is_401(client: TestClient) -> None:
    response = client.post("/v1/unsubscribe/00000000-0000-5000-8000-000000000000?token=abc")
    assert response.status_code == 401 and "not enabled" in response.json()["detail"]


def _unsubscribes(client: TestClient) -> list[dict[str, Any]]:
    events = client.get("/v1/users/reader/events", headers=AUTH).json()["events"]
    return [e for e in events if e["type"] == "unsubscribe"]


def test_without_smtp_settings_email_is_neither_reachable_nor_blamed_on_consent(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    with TestClient(create_app(make_settings(db_url, tmp_path), pool_size=2)) as client:
        assert client.put("/v1/users/reader", json=READER, headers=AUTH).status_code == 200
        assert client.post("/v1/items", json=ITEMS, headers=AUTH).status_code == 200
        post_events(client, [{"user_id": "reader", "type": "like", "item_id": "i1"}])
        (email,) = client.get("/v1/users/reader/profile", headers=AUTH).json()["channels"]
        assert (email["consent"], email["configured"], email["reachable"]) == (True, False, False)
        decision = client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    assert decision["outcome"] == "no_channel", decision
    assert decision["explanation"] == (
        "the user's consented channels are not configured here: email (needs TAGLOOP_SMTP_URL)"
    )


def test_the_profile_reads_reachable_as_a_run_decides_it(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """An unsubscribe stamped ahead of the sender's clock (accepted up to a day ahead) blocks at
    once, from when it arrived: a run sends nothing there, and the profile says the same."""
    settings = make_settings(db_url, tmp_path, smtp_url="smtp://127.0.0.1:9")
    ahead = datetime.now(UTC) + timedelta(hours=2)
    with TestClient(create_app(settings, pool_size=2)) as client:
        assert client.put("/v1/users/reader", json=READER, headers=AUTH).status_code == 200
        assert client.post("/v1/items", json=ITEMS, headers=AUTH).status_code == 200
        like = {"user_id": "reader", "type": "like", "item_id": "i1"}
        unsubscribe = {"user_id": "reader", "type": "unsubscribe", "context": {"channel": "email"}}
        post_events(client, [like, {**unsubscribe, "ts": ahead.isoformat()}])
        (email,) = client.get("/v1/users/reader/profile", headers=AUTH).json()["channels"]
        decision = client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    assert datetime.fromisoformat(email["unsubscribed_at"]) < ahead
    assert (email["consent"], email["configured"], email["reachable"]) == (True, True, False)
    assert decision["outcome"] == "no_consent", decision


def test_the_link_of_a_mail_purged_since_still_unsubscribes(
    mail_client: TestClient, db: psycopg.Connection[Any]
) -> None:
    """`tagloop db purge` deletes old sent messages; their links never expire, so the recipient is kept."""
    from tagloop.tools.store import retention

    decision = mail_client.post("/v1/users/reader/runs", json={}, headers=AUTH).json()
    assert decision["channel"] == "email", decision
    old = datetime.now(UTC) - timedelta(days=200)
    db.execute(
        "update messages set status = 'sent', created_at = %(t)s, sent_at = %(t)s where id = %(m)s",
        {"t": old, "m": decision["message_id"]},
    )
    db.execute(
        "update decisions set created_at = %(t)s where id = %(d)s", {"t": old, "d": decision["decision_id"]}
    )
    db.commit()
    now = datetime.now(UTC)
    purged = retention.purge(db, now - timedelta(days=120), now)
    assert (purged.messages, purged.decisions) == (1, 1)
    link = UnsubscribeLinks(PUBLIC_URL, SECRET.encode()).url(decision["message_id"])
    assert mail_client.get(_path(link)).status_code == 200
    done = mail_client.post(_path(link))
    assert done.status_code == 200, done.text
    assert done.json() == {"channel": "email", "already": False}
    assert [e["message_id"] for e in _unsubscribes(mail_client)] == [decision["message_id"]]
