"""Profiles from events: positives raise a tag, negatives lower it, decay favours recent events,
skips are calibrated per user, and the hour-of-week histogram is in the user's own time zone."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.ingest.loader import import_file
from tagloop.tools.profiles import (
    decay,
    event_weight,
    load_profiles,
    rebuild_profiles,
    request_profiles,
    skip_rate,
)

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday


def load(db: psycopg.Connection[Any], tmp_path: Path, events: list[dict[str, Any]]) -> None:
    def write(name: str, rows: list[dict[str, Any]]) -> Path:
        p = tmp_path / name
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return p

    import_file(
        db, "users", write("u.jsonl", [{"id": "u", "timezone": "Asia/Tokyo"}, {"id": "s", "timezone": "UTC"}])
    )
    import_file(
        db,
        "items",
        write(
            "i.jsonl",
            [
                {"id": "rock1", "tags": ["shoegaze"]},
                {"id": "rock2", "tags": ["shoegaze"]},
                {"id": "rap1", "tags": ["boom-bap"]},
                {"id": "jazz1", "tags": ["bebop"]},
            ],
        ),
    )
    import_file(db, "events", write("e.jsonl", events))
    rebuild_profiles(db, now=NOW, half_life_days=30)
    db.commit()


def ev(user: str, type_: str, item: str, days_ago: float, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "type": type_,
        "item_id": item,
        "ts": (NOW - timedelta(days=days_ago)).isoformat(),
        **extra,
    }


def test_positive_signals_outweigh_plays_and_negatives_subtract(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    load(
        db,
        tmp_path,
        [
            ev("u", "like", "rock1", 1),
            ev("u", "play", "rap1", 1, value=3),
            ev("u", "dislike", "jazz1", 1),
        ],
    )
    prof = load_profiles(db, ["u"])["u"]
    names = dict(prof.top_tags)
    assert names["shoegaze"] > names["boom-bap"] > 0
    assert "bebop" not in names  # negative weight never shows as a top tag
    assert min(prof.tags.values()) < 0


def test_old_events_count_less_than_recent_ones(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    load(db, tmp_path, [ev("u", "save", "rock1", 90), ev("u", "save", "rap1", 1)])
    names = dict(load_profiles(db, ["u"])["u"].top_tags)
    assert names["boom-bap"] > names["shoegaze"] * 4


def test_heavy_skippers_lose_less_per_skip() -> None:
    assert event_weight("skip", None, skip_rate=0.9) > event_weight("skip", None, skip_rate=0.1)
    assert event_weight("skip", None, skip_rate=0.9) < 0
    assert abs(decay(30 * 86400, 30) - 0.5) < 1e-12


def test_a_new_users_first_skip_counts_like_a_typical_listeners() -> None:
    """Without a prior the first skip of a new user was a skip rate of 1 and weighed 0.025, a
    twentieth of a normal skip; a play count of 1e308 added 709 to each tag (177 likes)."""
    first = event_weight("skip", None, skip_rate=skip_rate(1, 1))
    typical = event_weight("skip", None, skip_rate=0.25)
    assert first == pytest.approx(-0.3) and abs(first) > 0.5 * abs(typical)
    assert skip_rate(900, 1000) == pytest.approx(0.9, abs=0.01)  # evidence outweighs the prior
    assert event_weight("play", 1e308) == event_weight("play", 1e6) == pytest.approx(math.log1p(1e6))


def test_hour_of_week_histogram_is_in_the_users_zone(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    # 2026-02-28 is a Saturday; 15:00 UTC is 00:00 Sunday in Tokyo
    load(db, tmp_path, [{"user_id": "u", "type": "play", "item_id": "rock1", "ts": "2026-02-28T15:00:00Z"}])
    stats = load_profiles(db, ["u"])["u"].stats
    histogram = stats["hour_of_week"]
    assert sum(histogram) == 1 and histogram[6 * 24 + 0] == 1  # isodow 7 (Sunday) → slot 144


def test_top_tag_names_come_from_the_given_cache_and_fill_it(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    load(db, tmp_path, [ev("u", "like", "rock1", 1), ev("u", "save", "rap1", 1)])
    names: dict[int, str] = {}
    first = request_profiles(db, ["u"], names=names).result()["u"].top_tags
    assert sorted(names.values()) == ["boom-bap", "shoegaze"]  # looked up once, kept
    shoegaze = next(t for t, n in names.items() if n == "shoegaze")
    names[shoegaze] = "shoegaze (cached)"  # what the run read earlier wins: no second lookup
    again = dict(request_profiles(db, ["u"], names=names).result()["u"].top_tags)
    assert (
        set(again) == {"shoegaze (cached)", "boom-bap"}
        and dict(first)["shoegaze"] == again["shoegaze (cached)"]
    )
