"""`tagloop db purge`: what is older than the cutoff goes, a batch of users at a time; what the
agent or delivery still needs stays (pending messages and their decisions, messages sent inside
the bandits' window, every event: the users' seen sets), a sent mail's recipient is kept for its
unsubscribe link, a dry run deletes nothing, and an age under 90 days is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.store import retention, runs, users

TAGLOOP = Path(sys.executable).with_name("tagloop")
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=200)
CUTOFF = NOW - timedelta(days=120)


def _decision(
    db: psycopg.Connection[Any], user: str, at: datetime, message: str | None, sent: datetime | None = None
) -> str:
    """A decision made at `at`, with a message in status `message` (None: no message), sent at `sent`
    (a sent one: `at` unless given)."""
    did = str(uuid.uuid4())
    db.execute(
        """insert into decisions (id, user_id, created_at, policy_name, policy_version, seed, chosen,
                                  propensities, outcome)
           values (%(id)s, %(u)s, %(at)s, 'p', '1', 0, '[]', '{}', %(outcome)s)""",
        {"id": did, "u": user, "at": at, "outcome": "message" if message else "holdout"},
    )
    if message:
        db.execute(
            """insert into messages (id, decision_id, user_id, channel, title, body, send_at, status,
                                     created_at, sent_at)
               values (%(id)s, %(d)s, %(u)s, 'email', 't', 'b', %(at)s, %(status)s, %(at)s, %(sent)s)""",
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, did)),
                "d": did,
                "u": user,
                "at": at,
                "status": message,
                "sent": (sent or at) if message == "sent" else None,
            },
        )
    return did


def _event(db: psycopg.Connection[Any], eid: str, user: str, kind: str, at: datetime) -> int:
    row = db.execute(
        """insert into events (id, user_id, type, ts, context)
           values (%(id)s, %(u)s, %(t)s, %(ts)s, %(c)s) returning seq""",
        {
            "id": eid,
            "u": user,
            "t": kind,
            "ts": at,
            "c": json.dumps({"channel": "email"} if kind == "unsubscribe" else {}),
        },
    ).fetchone()
    assert row is not None
    return int(row["seq"])


@pytest.fixture
def store(db: psycopg.Connection[Any]) -> dict[str, Any]:
    for n in range(5):
        db.execute("insert into users (id, timezone) values (%(u)s, 'UTC')", {"u": f"u{n}"})
    ids = {
        "old_sent": _decision(db, "u0", OLD, "sent"),
        "old_dead": _decision(db, "u1", OLD, "dead"),
        "old_pending": _decision(db, "u2", OLD, "pending"),
        "old_holdout": _decision(db, "u3", OLD, None),
        "new_sent": _decision(db, "u4", NOW - timedelta(days=3), "sent"),
        # queued 200 days ago, sent 100 days ago (deferred, retried): still in the bandits' window
        "late_sent": _decision(db, "u4", OLD, "sent", sent=NOW - timedelta(days=100)),
    }
    _event(db, "e-old", "u0", "play", OLD)
    _event(db, "e-unsub", "u1", "unsubscribe", OLD)
    db.commit()
    return {"decisions": ids}


def _left(db: psycopg.Connection[Any]) -> tuple[set[str], set[str], set[str]]:
    decisions = {str(r["id"]) for r in db.execute("select id from decisions")}
    messages = {str(r["decision_id"]) for r in db.execute("select decision_id from messages")}
    events = {r["id"] for r in db.execute("select id from events")}
    return decisions, messages, events


def test_old_finished_rows_go_and_what_is_still_needed_stays(
    db: psycopg.Connection[Any], store: dict[str, Any], monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setattr(retention, "USERS_PER_BATCH", 2)  # three batches of users
    before = runs.unsubscribes(db, ["u1"])
    seen: list[int] = []
    dry = retention.purge(db, CUTOFF, NOW, dry_run=True, progress=lambda p: seen.append(p.users))
    assert _left(db)[0] == set(store["decisions"].values())  # a dry run deletes nothing
    committed: list[int] = []  # decisions another connection sees after each batch
    with psycopg.connect(db_url, autocommit=True) as other:

        def watch(p: retention.Purged) -> None:
            row = other.execute("select count(*) from decisions").fetchone()
            committed.append(row[0] if row else -1)

        done = retention.purge(db, CUTOFF, NOW, progress=watch)
    assert (dry.messages, dry.decisions) == (done.messages, done.decisions) == (2, 3)
    assert seen == [2, 4, 5]
    assert committed == [4, 3, 3]  # u0's and u1's went with the first batch, u3's with the second
    decisions, messages, events = _left(db)
    d = store["decisions"]
    # pending: not delivered or given up yet; late_sent: sent inside the bandits' window
    assert decisions == {d["old_pending"], d["new_sent"], d["late_sent"]}
    assert messages == {d["old_pending"], d["new_sent"], d["late_sent"]}
    assert events == {"e-old", "e-unsub"}  # the seen sets and the consent record
    assert runs.unsubscribes(db, ["u1"]) == before != {}
    # the unsubscribe link of the purged mail still names its recipient; the dead letter got no mail
    sent_id = str(uuid.uuid5(uuid.NAMESPACE_URL, d["old_sent"]))
    recipient = users.message_recipient(db, sent_id)
    assert recipient is not None and recipient["consent_at"] is not None  # the user is still stored
    assert (recipient["user_id"], recipient["channel"]) == ("u0", "email")
    assert users.message_recipient(db, str(uuid.uuid5(uuid.NAMESPACE_URL, d["old_dead"]))) is None


def test_an_age_under_ninety_days_is_refused_and_nothing_goes(
    db: psycopg.Connection[Any], store: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput, match="less than 90 days ago"):
        retention.purge(db, NOW - timedelta(days=89), NOW)
    assert _left(db)[0] == set(store["decisions"].values())


def test_the_command_purges_and_says_what_went(
    db: psycopg.Connection[Any], store: dict[str, Any], tagloop_env: Path
) -> None:
    refused = subprocess.run(
        [str(TAGLOOP), "db", "purge", "--older-than", "30d"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "less than 90 days ago" in refused.stderr
    bad = subprocess.run(
        [str(TAGLOOP), "db", "purge", "--older-than", "four months"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--older-than: expected days like 90d" in bad.stderr
    dry = subprocess.run(
        [str(TAGLOOP), "db", "purge", "--older-than", "17w", "--dry-run"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "would purge 2 message(s) and 3 decision(s)" in dry.stdout and "nothing deleted" in dry.stdout
    done = subprocess.run(
        [str(TAGLOOP), "db", "purge", "--older-than", "120d", "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["messages"], report["decisions"], report["users"]) == (2, 3, 5)
    assert report["older_than_days"] == 120 and report["dry_run"] is False
    db.rollback()
    assert _left(db)[2] == {"e-old", "e-unsub"}
