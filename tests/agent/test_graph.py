"""The decision graph on the real database: what it records, how it routes, when it sends."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from agent_support import load_demo
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from tagloop.agent import nodes
from tagloop.agent.cli import app
from tagloop.agent.runner import configured_channels, default_channels, run_users
from tagloop.agent.settings import Settings
from tagloop.agent.state import Plan, RunState
from tagloop.tools.messaging.channels import Channel, FileChannel

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_scheduled_decisions_log_policy_candidates_arms_and_wait_for_their_send_time(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW)
    settings = Settings(home=tmp_path / "home")
    outbox = tmp_path / "inbox.jsonl"
    outcomes = run_users(
        db, settings, users, send_now=False, now=NOW, run_key="week-1", channels={"file": FileChannel(outbox)}
    )

    assert {o.outcome for o in outcomes} <= {"message", "holdout", "nothing_to_send", "no_consent", "capped"}
    messages = [o for o in outcomes if o.outcome == "message"]
    assert len(messages) > len(users) // 2
    assert not outbox.exists() and not any(o.delivered for o in messages)  # waiting for the chosen hour
    for o in messages:
        assert datetime.fromisoformat(o.send_at or "") >= NOW
        assert 0 < o.arms["channel"]["propensity"] <= 1 and o.arms["channel"]["arm"] == "file"
        hour = o.arms["send_hour"]["arm"]
        assert hour in (8, 12, 18, 20) and 0 < o.arms["send_hour"]["propensity"] <= 1
        assert len(o.chosen) == len(o.propensities) == 10 and all(0 < p <= 1 for p in o.propensities)
    rows = db.execute("select * from decisions").fetchall()
    assert len(rows) == len(users)
    for r in rows:
        assert (r["policy_name"], r["policy_version"], r["run_key"]) == ("default", "1", "week-1")
        assert r["seed"] > 0 and "local_hour" in r["context"]
        if r["outcome"] == "message":
            assert len(r["candidate_ids"]) >= len(r["chosen"]) and r["arms"]["send_hour"]["arms"] == [
                8,
                12,
                18,
                20,
            ]
            assert r["source_names"][:2] == ["tags", "trending"] and set(r["candidate_sources"]) & {1, 2, 3}
    pending = db.execute(
        "select user_id, send_at, send_hour from messages where status = 'pending'"
    ).fetchall()
    tz = {r["id"]: r["timezone"] for r in db.execute("select id, timezone from users")}
    for m in pending:
        assert m["send_at"].astimezone(ZoneInfo(tz[m["user_id"]])).hour == m["send_hour"]


def test_holdout_users_are_recorded_without_a_message(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    policy = tmp_path / "POLICY.toml"
    policy.write_text('name = "all-holdout"\nversion = "7"\n[guards]\nholdout_share = 1.0\n')
    outcomes = run_users(
        db,
        Settings(home=tmp_path / "home", policy_file=policy),
        users,
        now=NOW,
        channels={"file": FileChannel(tmp_path / "inbox.jsonl")},
    )
    assert {o.outcome for o in outcomes} == {"holdout"} and all(o.policy == "all-holdout@7" for o in outcomes)
    assert db.execute("select count(*) as n from messages").fetchone()["n"] == 0


def test_a_consented_channel_this_deployment_lacks_is_named_as_the_reason(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    db.execute(
        """update users set channels = '{"webhook": "acct-1", "email": "a@example.com"}',
           consent = '{"webhook": true, "email": false, "file": false}' where id = %(u)s""",
        {"u": users[0]},
    )
    db.execute("update users set consent = '{}' where id = %(u)s", {"u": users[1]})
    settings = Settings(home=tmp_path / "home", policy_file=_no_holdout(tmp_path))
    outcomes = {
        o.user_id: o
        for o in run_users(
            db, settings, users[:2], now=NOW, channels={"file": FileChannel(tmp_path / "inbox.jsonl")}
        )
    }
    assert (outcomes[users[0]].outcome, outcomes[users[0]].reason) == (
        "no_channel",
        "the user's consented channels are not configured here: "
        "webhook (needs TAGLOOP_OUTBOUND_WEBHOOK_URL and _SECRET)",
    )
    assert (outcomes[users[1]].outcome, outcomes[users[1]].reason) == (
        "no_consent",
        "no channel with consent, an address and no unsubscribe",
    )


@pytest.mark.parametrize(
    "configured",
    [
        {},
        {"smtp_url": "smtp://mail.example:25"},
        {"outbound_webhook_url": "https://hooks.example/t", "outbound_webhook_secret": SECRET},
        {"outbound_webhook_url": "https://hooks.example/t"},  # half set: no webhook channel
        {
            "smtp_url": "smtp://mail.example:25",
            "outbound_webhook_url": "https://h.example/",
            "outbound_webhook_secret": SECRET,
        },
    ],
)
def test_the_profile_s_configured_channels_are_the_channels_runs_build(
    tmp_path: Path, configured: dict[str, str]
) -> None:
    settings = Settings(home=tmp_path, **configured)
    assert configured_channels(settings) == set(default_channels(settings))


def _no_holdout(tmp_path: Path) -> Path:
    policy = tmp_path / "POLICY.toml"
    policy.write_text('name = "no-holdout"\nversion = "1"\n[guards]\nholdout_share = 0.0\n')
    return policy


def test_send_now_delivers_at_once_and_engagement_credits_the_arm(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    outbox = tmp_path / "inbox.jsonl"
    outcomes = run_users(
        db,
        Settings(home=tmp_path / "home"),
        users,
        now=NOW,
        send_now=True,
        channels={"file": FileChannel(outbox)},
    )
    sent = [o for o in outcomes if o.delivered]
    assert sent and len(outbox.read_text().splitlines()) == len(sent)
    opened = sent[0]
    db.execute(
        """insert into events (id, user_id, type, ts, message_id)
           values ('open-1', %(u)s, 'open', %(t)s, %(m)s)""",
        {"u": opened.user_id, "t": NOW + timedelta(minutes=5), "m": opened.message_id},
    )
    db.commit()
    from tagloop.tools.store.runs import arm_counts

    overall, per_user = arm_counts(db, since=NOW - timedelta(days=1))
    assert overall.channel["file"] == (len(sent), 1)
    assert per_user[opened.user_id].channel["file"] == (1, 1)


def test_send_now_after_a_run_of_the_same_minute_delivers_its_pending_message(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The repeated run keeps its decision (same id) and reports it as stored, even where it would
    decide otherwise now (fewer candidates here); send_now moves the message to now and sends it."""
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    outbox, settings = tmp_path / "inbox.jsonl", Settings(home=tmp_path / "home")
    channels: dict[str, Channel] = {"file": FileChannel(outbox)}
    later = run_users(db, settings, users, now=NOW, send_now=False, channels=channels)
    queued = {
        o.user_id: o for o in later if o.message_id and o.send_at and datetime.fromisoformat(o.send_at) > NOW
    }
    assert queued and not outbox.exists()
    fewer = Settings(home=tmp_path / "home", candidate_k=2)
    again = run_users(
        db, fewer, list(queued), now=NOW + timedelta(seconds=20), send_now=True, channels=channels
    )
    assert {o.user_id: o.decision_id for o in again} == {u: o.decision_id for u, o in queued.items()}
    assert all(o.delivered and o.send_at == (NOW + timedelta(seconds=20)).isoformat() for o in again)
    assert all(o.delivery == "sent" and queued[o.user_id].delivery == "pending" for o in again)
    assert all(
        replace(o, delivered=False, send_at=queued[o.user_id].send_at, delivery="pending")
        == queued[o.user_id]
        for o in again
    )
    rows = db.execute(
        "select status, send_at, send_hour from messages where id = any(%(ids)s::uuid[])",
        {"ids": [o.message_id for o in again]},
    ).fetchall()
    assert rows and all(r["status"] == "sent" and r["send_at"] == NOW + timedelta(seconds=20) for r in rows)
    # sent now, not at the hour the first run chose: no engagement of theirs is that hour arm's
    assert all(r["send_hour"] is None for r in rows)
    assert len(outbox.read_text().splitlines()) == len(queued)
    assert run_users(
        db, settings, list(queued), now=NOW + timedelta(seconds=40), send_now=True, channels=channels
    )
    assert len(outbox.read_text().splitlines()) == len(queued)  # sent once: a third run sends nothing


def test_a_repeated_run_reports_delivered_as_its_message_stands(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A run repeated with the same run key (same minute) returns the stored decision; `delivered`
    says whether its message was sent, whichever run sent it, with or without send_now."""
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    settings, channels = Settings(home=tmp_path / "home"), {"file": FileChannel(tmp_path / "inbox.jsonl")}
    first = run_users(db, settings, users, now=NOW, send_now=True, channels=channels)
    sent = {o.user_id for o in first if o.delivered}
    assert sent
    for send_now in (True, False):
        again = run_users(
            db, settings, users, now=NOW + timedelta(seconds=30), send_now=send_now, channels=channels
        )
        assert [o.decision_id for o in again] == [o.decision_id for o in first]
        assert {o.user_id for o in again if o.delivered} == sent, send_now
    status = db.execute(
        "select user_id from messages where status = 'sent' and decision_id = any(%(ids)s::uuid[])",
        {"ids": [o.decision_id for o in first]},
    ).fetchall()
    assert {r["user_id"] for r in status} == sent


def test_a_repeated_run_whose_plan_changed_adds_no_message_to_the_stored_decision(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Consent given between two runs of the same minute: the second run keeps the stored
    `no_consent` decision, so it must neither store nor send a message for it."""
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    consent = {r["id"]: r["consent"] for r in db.execute("select id, consent from users")}
    db.execute("update users set consent = '{}'")
    db.commit()
    inbox = tmp_path / "inbox.jsonl"
    settings, channels = Settings(home=tmp_path / "home"), {"file": FileChannel(inbox)}
    first = run_users(db, settings, users, now=NOW, send_now=True, channels=channels)
    assert {o.outcome for o in first} <= {"no_consent", "holdout"} and "no_consent" in {
        o.outcome for o in first
    }
    for user_id, given in consent.items():
        db.execute("update users set consent = %(c)s where id = %(u)s", {"c": Jsonb(given), "u": user_id})
    db.commit()
    again = run_users(db, settings, users, now=NOW + timedelta(seconds=30), send_now=True, channels=channels)
    assert [(o.decision_id, o.outcome) for o in again] == [(o.decision_id, o.outcome) for o in first]
    assert not any(o.message_id or o.delivered for o in again)
    assert not inbox.exists()
    stored = db.execute("select count(*) as n from messages").fetchone()
    assert stored is not None and stored["n"] == 0


def _decided_demo(db: psycopg.Connection[Any], tmp_path: Path, users: int) -> tuple[list[str], list[Any]]:
    """`users` demo users decided now (send_now, the file channel): their ids and outcomes."""
    ids = load_demo(db, tmp_path / "demo", NOW, users=users)
    channels: dict[str, Channel] = {"file": FileChannel(tmp_path / "inbox.jsonl")}
    return ids, run_users(db, Settings(home=tmp_path / "home"), ids, now=NOW, channels=channels)


def test_a_messages_reason_lists_only_picks_that_carry_its_tags(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The body credited the first five picks to the reason's tags, whether they carried them or not
    ("Because you play a lot of rock metal: Lady Gaga, Nightwish, …" on Last.fm)."""
    from tagloop.tools.tagging_names import display_tag

    _, outcomes = _decided_demo(db, tmp_path, 40)
    prefix, checked, others = "Because you play a lot of ", 0, 0
    for o in outcomes:
        if o.outcome != "message":
            continue
        row = db.execute("select body from messages where id = %(m)s", {"m": o.message_id}).fetchone()
        if not row["body"].startswith(prefix):
            continue
        reason, rest = row["body"][len(prefix) :].split(": ", 1)
        listed, _, also = rest.partition(" Also for you: ")
        named = set(reason.split(" and "))
        by_title = {c["title"]: c["item_id"] for c in o.chosen}
        for title in listed.rstrip(".").replace(" and ", ", ").split(", "):
            tags = db.execute(
                "select t.name from item_tags it join tags t on t.id = it.tag_id where it.item_id = %(i)s",
                {"i": by_title[title]},
            ).fetchall()
            assert named & {display_tag(t["name"]) for t in tags}, (title, reason)
            checked += 1
        others += bool(also)
    assert checked > 20 and others  # picks credited to the reason, and some listed apart


def test_a_new_users_message_gives_their_declared_interests_as_the_reason(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A user with no events but declared interests got "Picked for you": the reason read the
    events' tag profile only."""
    from tagloop.tools.tagging_names import display_tag

    load_demo(db, tmp_path / "demo", NOW, users=10)
    common = [
        r["name"]
        for r in db.execute(
            """select t.name from item_tags it join tags t on t.id = it.tag_id
               group by t.name order by count(*) desc, t.name limit 4"""
        )
    ]
    db.execute(
        """insert into users (id, timezone, consent, attributes)
           values ('newcomer', 'UTC', '{"file": true}', %(a)s)""",
        {"a": Jsonb({"interests": [display_tag(n).title() for n in common]})},  # as people write them
    )
    db.commit()
    (o,) = run_users(
        db,
        Settings(home=tmp_path / "home"),
        ["newcomer"],
        now=NOW,
        channels={"file": FileChannel(tmp_path / "o")},
    )
    assert o.outcome == "message", o
    body = db.execute("select body from messages where id = %(m)s", {"m": o.message_id}).fetchone()["body"]
    assert body.startswith("Because you like "), body
    reason = body.removeprefix("Because you like ").split(": ", 1)[0]
    assert set(reason.split(" and ")) <= {display_tag(n) for n in common}


def test_decisions_export_writes_one_json_line_per_decision_with_reward(
    db: psycopg.Connection[Any], tmp_path: Path, tagloop_env: Path
) -> None:
    users, outcomes = _decided_demo(db, tmp_path, 8)
    clicked = next(o for o in outcomes if o.delivered)
    db.execute(
        "insert into events (id, user_id, type, ts, message_id) values ('c-1', %(u)s, 'click', %(t)s, %(m)s)",
        {"u": clicked.user_id, "t": NOW, "m": clicked.message_id},
    )
    db.commit()
    out = tmp_path / "decisions.jsonl"
    result = CliRunner().invoke(app, ["decisions", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(users)
    keys = {
        "decision_id",
        "user_id",
        "ts",
        "policy",
        "version",
        "seed",
        "candidates",
        "chosen",
        "propensities",
        "channel",
        "send_at",
        "context",
        "reward",
    }
    assert all(keys <= set(r) for r in lines)
    assert {r["decision_id"]: r["reward"] for r in lines}[clicked.decision_id] == 1
    assert sum(r["reward"] for r in lines) == 1
    assert "exported" not in result.output  # a small export shows no progress


def test_a_large_decisions_export_shows_progress_on_stderr(
    db: psycopg.Connection[Any], tmp_path: Path, tagloop_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagloop.agent import cli_decisions

    users = load_demo(db, tmp_path / "demo", NOW, users=20)
    run_users(
        db, Settings(home=tmp_path / "home"), users, now=NOW, channels={"file": FileChannel(tmp_path / "i")}
    )
    monkeypatch.setattr(cli_decisions, "EXPORT_PROGRESS_MIN", 10)  # 20 decisions count as large here
    out = tmp_path / "decisions.jsonl"
    result = CliRunner().invoke(app, ["decisions", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("exported ")]
    assert steps == [f"exported {n} of 20 decision(s)" for n in range(2, 20, 2)]
    assert len(out.read_text().splitlines()) == 20


def _plan(outcome: str) -> Plan:
    return Plan("u", "d", "k", 1, outcome, "p", "1")


def _sent_file_message(db: psycopg.Connection[Any], user: str, at: datetime) -> None:
    """One file message sent to `user` at `at` (with its decision), for the caps to count."""
    db.execute(
        """insert into decisions (id, user_id, policy_name, policy_version, seed, candidates, chosen,
                  propensities, channel, outcome)
           values ('00000000-0000-5000-8000-000000000001', %(u)s, 'p', '1', 1, '[]', '[]', '{}', 'file',
                   'message')""",
        {"u": user},
    )
    db.execute(
        """insert into messages (id, decision_id, user_id, channel, title, body, send_at, status, sent_at)
           values ('00000000-0000-5000-8000-000000000002', '00000000-0000-5000-8000-000000000001',
                   %(u)s, 'file', 't', 'b', %(at)s, 'sent', %(at)s)""",
        {"u": user, "at": at},
    )


def test_a_send_hour_a_guard_moved_is_not_credited_to_that_hour(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A scheduled run chooses a send hour; when a cap moves the send, the message does not go out
    at that hour, so the outbox row carries no `send_hour` (its opens would teach the hour bandit
    about an hour it was not sent at); the decision still logs the hour chosen and its propensity."""
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    capped, free = users[:2]
    db.execute(
        """update users set timezone = 'UTC', consent = '{"file": true}' where id = any(%(u)s)""",
        {"u": [capped, free]},
    )
    _sent_file_message(db, capped, NOW - timedelta(hours=1))
    policy = tmp_path / "POLICY.toml"
    policy.write_text(
        'name = "capped"\nversion = "1"\n[guards]\nholdout_share = 0.0\n[guards.caps.file]\nper_week = 1\n'
    )
    settings = Settings(home=tmp_path / "home", policy_file=policy)
    outcomes = run_users(
        db,
        settings,
        [capped, free],
        now=NOW,
        send_now=False,
        channels={"file": FileChannel(tmp_path / "inbox.jsonl")},
    )
    by_user = {o.user_id: o for o in outcomes}
    assert by_user[capped].held_back == "file cap of 1 per week reached" and by_user[free].held_back is None
    for o in outcomes:
        assert o.outcome == "message" and o.arms["send_hour"]["arm"] in (8, 12, 18, 20)
    rows = db.execute(
        "select user_id, send_hour from messages where id = any(%(ids)s::uuid[])",
        {"ids": [o.message_id for o in outcomes]},
    ).fetchall()
    hours = {r["user_id"]: r["send_hour"] for r in rows}
    assert hours == {capped: None, free: by_user[free].arms["send_hour"]["arm"]}


def test_routers_skip_to_record_when_nothing_is_worth_sending() -> None:
    state = RunState(user_ids=["u"], plans={"u": _plan("holdout")})
    assert nodes.after_policies(state) == "record"
    state.plans["v"] = _plan("message")
    assert nodes.after_policies(state) == "choose_channel_time"
    assert nodes.after_timing(RunState(user_ids=["u"], plans={"u": _plan("no_consent")})) == "record"


def test_a_send_a_cap_moves_later_is_moved_out_of_quiet_hours_again(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """One file message a day, quiet 21:00-08:00 UTC, the last one sent yesterday at 22:00: the cap
    allows the next at 22:00 today, inside quiet hours, so it goes at 08:00 tomorrow."""
    users = load_demo(db, tmp_path / "demo", NOW, users=10)
    user = users[0]
    db.execute(
        """update users set timezone = 'UTC', consent = '{"file": true}' where id = %(u)s""", {"u": user}
    )
    _sent_file_message(db, user, NOW.replace(hour=22) - timedelta(days=1))
    policy = tmp_path / "POLICY.toml"
    policy.write_text(
        'name = "capped"\nversion = "1"\n[guards]\nholdout_share = 0.0\nquiet_start = "21:00"\n'
        'quiet_end = "08:00"\n[guards.caps.file]\nper_day = 1\nper_week = 7\n'
    )
    settings = Settings(home=tmp_path / "home", policy_file=policy, quiet_exempt_channels=[])
    (o,) = run_users(db, settings, [user], now=NOW, channels={"file": FileChannel(tmp_path / "inbox.jsonl")})
    assert o.outcome == "message" and o.channel == "file", o
    assert datetime.fromisoformat(o.send_at or "") == (NOW + timedelta(days=1)).replace(hour=8)
