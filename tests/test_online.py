"""Online profile updates: each committed batch changes the profile at once, agreeing with a full
rebuild for plain events, with replays, calibrated skips, decay, local hour-of-week, and message
engagement credited to the decision that sent the message."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tagloop.tools import online
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.fields import FieldError
from tagloop.tools.ingest.records import EventRecord, parse_event, parse_item, parse_user
from tagloop.tools.profiles import load_profiles, rebuild_profiles
from tagloop.tools.store import runs
from tagloop.tools.store import users as store

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
CONFIG = online.OnlineConfig(half_life_days=30.0)


@pytest.fixture
def catalogue(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    loader.store_users(
        db,
        [
            parse_user({"id": u, "timezone": tz})
            for u, tz in [("a", "Asia/Tokyo"), ("b", "UTC"), ("c", "UTC")]
        ],
    )
    loader.store_items(
        db,
        [
            parse_item(i)
            for i in [
                {"id": "s1", "tags": ["shoegaze"]},
                {"id": "s2", "tags": ["shoegaze"]},
                {"id": "s3", "tags": ["shoegaze"]},
                {"id": "r1", "tags": ["boom-bap"]},
                {"id": "j1", "tags": ["bebop"]},
            ]
        ],
    )
    db.commit()
    return db


def ev(user: str, type_: str, item: str | None, at: datetime, **extra: Any) -> EventRecord:
    data = {"user_id": user, "type": type_, "item_id": item, "ts": at.isoformat(), **extra}
    return parse_event({k: v for k, v in data.items() if v is not None}, now=max(NOW, at))  # as it happens


def fold(db: psycopg.Connection[Any], events: list[EventRecord], now: datetime = NOW) -> online.OnlineResult:
    with db.transaction():
        new = store.insert_new_events(db, events)
        return online.apply_events(db, new, now=now, config=CONFIG)


def email_message(db: psycopg.Connection[Any], user: str, sent_at: datetime | None = None) -> tuple[str, str]:
    """A committed decision and its email message for `user` (sent at `sent_at`, else pending)."""
    decision, message = str(uuid.uuid4()), str(uuid.uuid4())
    db.execute(
        """insert into decisions (id, user_id, policy_name, policy_version, seed, candidates, chosen,
                  propensities, channel, outcome)
           values (%(d)s, %(u)s, 'p', '1', 1, '[]', '[]', '{}', 'email', 'message')""",
        {"d": decision, "u": user},
    )
    db.execute(
        """insert into messages (id, decision_id, user_id, channel, title, body, send_at, status, sent_at)
                  values (%(m)s, %(d)s, %(u)s, 'email', 't', 'b', now(), %(status)s, %(at)s)""",
        {"m": message, "d": decision, "u": user, "status": "sent" if sent_at else "pending", "at": sent_at},
    )
    db.commit()
    return decision, message


def weights(db: psycopg.Connection[Any], user: str) -> dict[str, float]:
    return dict(load_profiles(db, [user], top=50)[user].top_tags)


def test_incremental_updates_match_a_full_rebuild(catalogue: psycopg.Connection[Any]) -> None:
    db = catalogue
    events = [
        ev("b", t, i, NOW - timedelta(days=d))
        for t, i, d in [
            ("like", "s1", 40),
            ("play", "r1", 10),
            ("save", "j1", 3),
            ("complete", "r1", 1),
            ("dislike", "j1", 0),
        ]
    ]
    for e in events[:2]:
        fold(db, [e], now=e.ts + timedelta(hours=1))
    fold(db, events[2:], now=NOW)
    incremental = load_profiles(db, ["b"])["b"].tags
    with db.transaction():
        rebuild_profiles(db, now=NOW, half_life_days=CONFIG.half_life_days, user_ids=["b"])
    rebuilt = load_profiles(db, ["b"])["b"].tags
    assert set(incremental) == set(rebuilt)
    for tag, w in rebuilt.items():
        assert incremental[tag] == pytest.approx(w, rel=1e-4)


def test_a_rebuild_keeps_what_the_profile_learned_from_the_context(
    catalogue: psycopg.Connection[Any],
) -> None:
    """A rebuild (`tagloop profiles rebuild`, `import lastfm`, `demo`) wiped devices, sources,
    regions and per-channel engagement, and turned a skip-only user into "8 plays" (the next skip
    then weighed 18x what the user's own skip rate gives)."""
    db = catalogue
    _, message = email_message(db, "b")
    context = {"device": "ios", "source": "radio", "country": "DE"}
    events = [ev("b", "skip", f"s{n % 3 + 1}", NOW - timedelta(hours=n), context=context) for n in range(6)]
    events += [ev("b", "open", None, NOW, message_id=message, context={"device": 7})]
    fold(db, events)
    learned = load_profiles(db, ["b"])["b"].stats
    with db.transaction():
        rebuild_profiles(db, now=NOW, half_life_days=CONFIG.half_life_days, user_ids=["b"])
    rebuilt = load_profiles(db, ["b"])["b"].stats
    learned["counts"] = {t: n for t, n in learned["counts"].items() if n}  # a new profile starts at 0
    for key in ("counts", "devices", "sources", "regions", "channels", "skip_rate"):
        assert rebuilt[key] == learned[key], key
    assert rebuilt["counts"] == {"skip": 6, "open": 1} and rebuilt["devices"] == {"ios": 6}
    assert rebuilt["channels"] == {"email": {"open": 1}}


def test_a_like_raises_and_a_dislike_lowers_the_items_tags_at_once(
    catalogue: psycopg.Connection[Any],
) -> None:
    fold(catalogue, [ev("b", "like", "s1", NOW)])
    assert weights(catalogue, "b")["shoegaze"] > 0
    fold(catalogue, [ev("b", "dislike", "s2", NOW), ev("b", "dismiss", "s3", NOW)])
    assert "shoegaze" not in weights(catalogue, "b")  # now net negative


def test_profile_decays_with_the_configured_half_life(catalogue: psycopg.Connection[Any]) -> None:
    fold(catalogue, [ev("b", "like", "s1", NOW)])
    fold(catalogue, [ev("b", "like", "j1", NOW + timedelta(days=30))], now=NOW + timedelta(days=30))
    w = weights(catalogue, "b")
    assert w["shoegaze"] == pytest.approx(w["bebop"] / 2, rel=1e-3)


def test_a_replay_soon_after_counts_more_than_a_first_play(catalogue: psycopg.Connection[Any]) -> None:
    fold(
        catalogue,
        [
            ev("b", "play", "s1", NOW - timedelta(hours=2)),
            ev("b", "play", "s1", NOW - timedelta(hours=1)),
            ev("c", "play", "s1", NOW - timedelta(hours=2)),
            ev("c", "play", "s2", NOW - timedelta(hours=1)),
        ],
    )
    assert weights(catalogue, "b")["shoegaze"] > weights(catalogue, "c")["shoegaze"] + 1.5
    assert load_profiles(catalogue, ["b"])["b"].stats["replays"] == 1


def test_a_heavy_skipper_loses_less_per_skip(catalogue: psycopg.Connection[Any]) -> None:
    t = NOW - timedelta(hours=3)
    heavy = [ev("b", "skip", "r1", t + timedelta(minutes=i)) for i in range(8)] + [ev("b", "play", "r1", t)]
    light = [ev("c", "play", "r1", t + timedelta(minutes=i)) for i in range(8)] + [ev("c", "skip", "r1", t)]
    fold(catalogue, heavy + light)
    fold(catalogue, [ev("b", "skip", "s1", NOW), ev("c", "skip", "s1", NOW)])
    profiles = load_profiles(catalogue, ["b", "c"], top=50)
    b, c = profiles["b"], profiles["c"]
    shoegaze = catalogue.execute("select id from tags where name = 'shoegaze'").fetchone()["id"]
    assert b.tags[shoegaze] < 0 and c.tags[shoegaze] < 0
    assert abs(b.tags[shoegaze]) < abs(c.tags[shoegaze])
    assert b.stats["skip_rate"] > 0.7 > 0.25 > c.stats["skip_rate"]  # 9 of 10 and 2 of 10, with the prior


def test_hour_of_week_is_in_the_users_time_zone(catalogue: psycopg.Connection[Any]) -> None:
    # Friday 23:30 UTC is Saturday 08:30 in Tokyo
    fold(catalogue, [ev("a", "play", "s1", datetime(2026, 2, 27, 23, 30, tzinfo=UTC))])
    histogram = load_profiles(catalogue, ["a"])["a"].stats["hour_of_week"]
    assert histogram[5 * 24 + 8] == 1 and sum(histogram) == 1


def test_message_engagement_is_credited_to_its_decision(catalogue: psycopg.Connection[Any]) -> None:
    db = catalogue
    decision, message = email_message(db, "b")
    fold(
        db,
        [
            ev("b", "open", None, NOW, message_id=message),
            ev("b", "click", "s1", NOW, message_id=message),
            ev("b", "open", None, NOW, message_id="not-a-uuid"),
        ],
    )
    fold(db, [ev("b", "click", "s2", NOW + timedelta(minutes=1), message_id=message)])
    row = db.execute(
        "select opens, clicks, channel, reward from decision_feedback where decision_id = %(d)s",
        {"d": decision},
    ).fetchone()
    assert row == {"opens": 1, "clicks": 2, "channel": "email", "reward": pytest.approx(2.5)}
    assert load_profiles(db, ["b"])["b"].stats["channels"] == {"email": {"open": 1, "click": 2}}


def test_another_users_message_id_credits_nothing(catalogue: psycopg.Connection[Any]) -> None:
    """A CRM sending a wrong `message_id` must not move another user's decision, arms or rewards."""
    db = catalogue
    _, message = email_message(db, "b", sent_at=NOW - timedelta(hours=1))
    result = fold(db, [ev("c", "click", "s1", NOW, message_id=message)])  # c clicks b's message
    assert result.credited_decisions == 0
    assert db.execute("select count(*) as n from decision_feedback").fetchone() == {"n": 0}
    assert load_profiles(db, ["c"])["c"].stats["channels"] == {}
    overall, _ = runs.arm_counts(db, since=NOW - timedelta(days=1))
    assert overall.channel == {"email": (1, 0)}  # sent once, engaged by nobody who got it
    fold(db, [ev("b", "click", "s1", NOW, message_id=message)])  # b's own click counts
    assert db.execute("select clicks from decision_feedback").fetchone() == {"clicks": 1}
    assert runs.arm_counts(db, since=NOW - timedelta(days=1))[0].channel == {"email": (1, 1)}


def test_a_batch_committed_between_read_and_save_is_not_lost(
    catalogue: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Profiles are read without a lock and saved only if unchanged; a profile another batch
    changed in between is folded again under the lock, so both batches count."""
    from tagloop.tools.store import db as store_db

    fold(catalogue, [ev("b", "impression", "s3", NOW), ev("c", "impression", "s3", NOW)])  # profiles exist
    fold_rows = online._fold_rows
    calls = []

    def racing(rows: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        calls.append([r["user_id"] for r in rows])
        if len(calls) == 1:  # after the first read, another session commits a batch for user b
            with store_db.connect(db_url, migrate_schema=False) as other:
                fold(other, [ev("b", "like", "j1", NOW - timedelta(hours=1))])
        return fold_rows(rows, **kwargs)

    monkeypatch.setattr(online, "_fold_rows", racing)
    fold(catalogue, [ev("b", "save", "s1", NOW), ev("c", "like", "r1", NOW)])
    assert calls == [["b", "c"], ["b"], ["b"]]  # the other batch, then b again (c was unchanged)
    monkeypatch.undo()
    online_tags = load_profiles(catalogue, ["b"])["b"].tags
    assert load_profiles(catalogue, ["b"])["b"].n_events == 3
    with catalogue.transaction():
        rebuild_profiles(catalogue, now=NOW, half_life_days=CONFIG.half_life_days, user_ids=["b"])
    rebuilt = load_profiles(catalogue, ["b"])["b"].tags
    assert set(online_tags) == set(rebuilt)
    for tag, w in rebuilt.items():
        assert online_tags[tag] == pytest.approx(w, rel=1e-4)


def test_concurrent_batches_on_the_same_users_lose_no_update(
    catalogue: psycopg.Connection[Any], db_url: str
) -> None:
    import threading

    from tagloop.tools.store import db as store_db

    kinds = [("like", "s1"), ("save", "r1"), ("dislike", "j1"), ("share", "s2")]
    batches = [
        [
            ev(
                u,
                kinds[(t + i) % 4][0],
                kinds[(t + i) % 4][1],
                NOW - timedelta(minutes=t * 10 + i),
                id=f"t{t}-{i}-{u}",
            )
            for u in ("b", "c")
        ]
        for t in range(4)
        for i in range(6)
    ]

    def sender(part: list[list[EventRecord]]) -> None:
        with store_db.connect(db_url, migrate_schema=False) as conn:
            for batch in part:
                fold(conn, batch)

    threads = [threading.Thread(target=sender, args=(batches[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    profiles = load_profiles(catalogue, ["b", "c"])
    assert profiles["b"].n_events == profiles["c"].n_events == 24
    online_tags = {u: profiles[u].tags for u in ("b", "c")}
    with catalogue.transaction():
        rebuild_profiles(catalogue, now=NOW, half_life_days=CONFIG.half_life_days, user_ids=["b", "c"])
    for user, p in load_profiles(catalogue, ["b", "c"]).items():
        assert set(online_tags[user]) == set(p.tags)
        for tag, w in p.tags.items():
            assert online_tags[user][tag] == pytest.approx(w, rel=1e-4)


def test_an_event_time_that_leaves_the_calendar_in_the_users_zone_is_folded_without_its_hour(
    catalogue: psycopg.Connection[Any],
) -> None:
    """Ingest now refuses such times (fields.MAX_TS); one stored before must not stop the fold."""
    db = catalogue
    late = EventRecord("edge", "a", "like", "s1", datetime(9999, 12, 31, 23, tzinfo=UTC), None, None, {})
    fold(db, [late, ev("a", "like", "s2", NOW)])  # "a" lives in Asia/Tokyo: year 10000 there
    profile = load_profiles(db, ["a"])["a"]
    assert profile.n_events == 2 and sum(profile.stats["hour_of_week"]) == 1


def test_a_replay_folds_the_same_whatever_order_its_listens_arrive_in(
    catalogue: psycopg.Connection[Any],
) -> None:
    first, second = (
        ev("b", "play", "s1", NOW - timedelta(hours=2)),
        ev("b", "play", "s1", NOW - timedelta(hours=1)),
    )
    fold(catalogue, [first])
    fold(catalogue, [second])
    late_first, late_second = (
        ev("c", "play", "s1", NOW - timedelta(hours=2)),
        ev("c", "play", "s1", NOW - timedelta(hours=1)),
    )
    fold(catalogue, [late_second])  # the newer listen arrives first
    fold(catalogue, [late_first])
    in_order, reversed_order = weights(catalogue, "b"), weights(catalogue, "c")
    assert reversed_order == pytest.approx(in_order, rel=1e-9)
    profiles = load_profiles(catalogue, ["b", "c"])
    assert profiles["b"].stats["replays"] == profiles["c"].stats["replays"] == 1


def test_a_backfill_folds_the_same_in_one_batch_or_many(catalogue: psycopg.Connection[Any]) -> None:
    """Listens older than the replay window are forgotten between folds but paired within one, so
    the same 400 events gave tag weights up to 8% apart folded in one batch or in many. A pair now
    earns the bonus only while both listens are within the window of the fold's `now`."""
    rng = random.Random(7)
    items = ["s1", "s2", "s3", "r1", "j1"]
    history = sorted(
        (NOW - timedelta(hours=rng.randrange(300) + 0.5), rng.choice(["play", "complete"]), rng.choice(items))
        for _ in range(120)
    )

    def events(user: str) -> list[EventRecord]:
        return [ev(user, t, i, at, id=f"{user}{n}") for n, (at, t, i) in enumerate(history)]

    for k in range(0, len(history), 5):  # b: as it arrives, five at a time, the clock moving on
        fold(catalogue, events("b")[k : k + 5], now=NOW + timedelta(seconds=k))
    fold(catalogue, events("c"), now=NOW + timedelta(seconds=len(history) - 5))  # c: all at once
    profiles = load_profiles(catalogue, ["b", "c"], top=50)
    assert profiles["b"].tags == pytest.approx(profiles["c"].tags, rel=1e-6)  # stored as float4
    assert profiles["b"].stats["replays"] == profiles["c"].stats["replays"] > 0
    assert profiles["b"].stats["recent"] == profiles["c"].stats["recent"]


def test_an_event_more_than_a_day_ahead_of_the_clock_is_refused() -> None:
    ahead = {"user_id": "b", "type": "like", "item_id": "s1", "ts": "2030-06-01T12:00:00Z"}
    with pytest.raises(FieldError, match=r"^'2030-06-01T12:00:00Z' is more than a day ahead") as bad:
        parse_event(ahead, now=NOW)
    assert bad.value.field == "ts"
    skewed = {**ahead, "ts": (NOW + timedelta(hours=23)).isoformat()}  # a sender's clock running fast
    assert parse_event(skewed, now=NOW).ts == NOW + timedelta(hours=23)
