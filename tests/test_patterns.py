"""Patterns from the stream: co-likes rank by lift with support, sequences predict the next item or
tag within sessions, trends get a phase and lifetime, tags get weekday/weekend and hour-of-week
preferences in the user's own time zone."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import parse_event, parse_item, parse_user
from tagloop.tools.patterns import co_likes, next_from_counts, sequence_next
from tagloop.tools.patterns_timing import describe, tag_timing
from tagloop.tools.patterns_trends import fit_lifetime, trending

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday


def store(
    db: psycopg.Connection[Any],
    users: list[str],
    items: dict[str, list[str]],
    events: list[tuple[str, str, datetime]],
    tz: str = "UTC",
) -> None:
    loader.store_users(db, [parse_user({"id": u, "timezone": tz}) for u in users])
    titled = [parse_item({"id": i, "title": f"Title {i}", "tags": t}) for i, t in items.items()]
    loader.store_items(db, titled)
    loader.store_events(
        db,
        [
            parse_event(  # each stored as it happens (not ahead of the clock)
                {"id": f"e{n}", "user_id": u, "type": "play", "item_id": i, "ts": ts.isoformat()},
                now=max(NOW, ts),
            )
            for n, (u, i, ts) in enumerate(events)
        ],
    )
    db.commit()


def test_co_likes_rank_by_lift_and_report_support(db: psycopg.Connection[Any]) -> None:
    fans = [f"f{n}" for n in range(10)]
    others = [f"o{n}" for n in range(30)]
    t = NOW - timedelta(days=3)
    events = [(u, "x", t) for u in fans] + [(u, "pop", t) for u in fans + others]
    events += [(u, "niche", t) for u in fans[:6]] + [(others[0], "rare", t)]
    store(db, fans + others, {i: ["rock"] for i in ("x", "pop", "niche", "rare")}, events)
    found = co_likes(db, "x", now=NOW)
    assert [c.key for c in found] == ["niche", "pop"]  # "rare" has no support among fans of x
    niche, pop = found
    assert (niche.support, niche.confidence, niche.lift) == (6, 0.6, pytest.approx(4.0))
    assert pop.lift == pytest.approx(1.0) and pop.share == pytest.approx(10 / 40)


def test_co_likes_between_tags_need_several_items(db: psycopg.Connection[Any]) -> None:
    t = NOW - timedelta(days=1)
    items = {"s1": ["shoegaze"], "s2": ["shoegaze"], "d1": ["dream-pop"], "d2": ["dream-pop"], "j1": ["jazz"]}
    events = [(u, i, t) for u in ("a", "b", "c") for i in ("s1", "s2", "d1", "d2")]
    events += [(u, i, t) for u in ("d", "e") for i in ("j1", "s1", "s2")]
    store(db, ["a", "b", "c", "d", "e"], items, events)
    found = co_likes(db, "shoegaze", now=NOW, level="tag", min_items=2)
    assert [c.key for c in found] == ["dream-pop"]  # jazz fans played one jazz item only
    assert found[0].support == 3 and found[0].confidence == 0.6 and found[0].lift == pytest.approx(1.0)


def test_sequences_predict_the_next_item_within_sessions(db: psycopg.Connection[Any]) -> None:
    events = []
    for n in range(6):
        start = NOW - timedelta(days=n + 1)
        path = ["a", "b", "c"] if n < 4 else ["a", "b", "d"]
        events += [(f"u{n}", item, start + timedelta(minutes=5 * j)) for j, item in enumerate(path)]
        events.append((f"u{n}", "e", start + timedelta(hours=3)))  # a new session: no c → e step
    store(db, [f"u{n}" for n in range(6)], {i: [f"tag-{i}"] for i in "abcde"}, events)
    nxt = sequence_next(db, ["a", "b"], now=NOW)
    assert [s.key for s in nxt] == ["c", "d"]
    assert nxt[0].score == pytest.approx(4 / 6) and nxt[0].support == 4
    tags = sequence_next(db, ["tag-a", "tag-b"], now=NOW, level="tag")
    assert tags[0].key == "tag-c"


def test_next_mixture_weighs_the_latest_entry_most() -> None:
    counts = {"b": {"c": 1, "d": 3}, "a": {"c": 4}}
    ranked = next_from_counts(counts, ["b", "a"], {"a", "b"}, k=5, decay=0.5)
    assert [s.key for s in ranked] == ["c", "d"]
    assert ranked[0].score == pytest.approx((0.25 + 0.5) / 1.5)
    assert ranked[1].score == pytest.approx(0.75 / 1.5)


def _curve(rise: float, decay: float, peak_day: int, days: int, base: float = 5.0) -> np.ndarray:
    t = np.arange(days)
    excess = np.where(t <= peak_day, 40 * np.exp(rise * (t - peak_day)), 40 * np.exp(-decay * (t - peak_day)))
    return np.round(base + excess)


def test_a_trend_that_peaked_is_decaying_with_its_rates_and_lifetime() -> None:
    life = fit_lifetime(_curve(0.6, 0.3, peak_day=14, days=24))
    assert life.phase == "decaying" and life.decay_observed
    assert life.decay_per_day == pytest.approx(0.3, rel=0.3)
    assert life.rise_per_day == pytest.approx(0.6, rel=0.4)
    assert life.half_life_days == pytest.approx(math.log(2) / life.decay_per_day)
    assert 0 < life.days_left < life.lifetime_days


def test_a_rising_trend_is_rising_and_a_flat_series_is_no_trend() -> None:
    rising = fit_lifetime(_curve(0.5, 0.5, peak_day=20, days=21))
    assert rising.phase == "rising" and not rising.decay_observed and rising.days_left > 0
    flat = fit_lifetime(np.full(14, 5.0))
    assert flat.phase == "over" and flat.peak == 0
    with pytest.raises(InvalidInput):
        fit_lifetime(np.ones(2))


def test_trending_tags_from_the_store_put_the_spike_first(db: psycopg.Connection[Any]) -> None:
    events = []
    for d in range(28):
        day = NOW - timedelta(days=27 - d, hours=1)
        events += [(f"u{n}", "steady", day) for n in range(3)]
        if d >= 24:
            events += [(f"u{n}", "hype", day + timedelta(minutes=n)) for n in range(4 * (d - 23))]
    store(db, [f"u{n}" for n in range(16)], {"steady": ["folk"], "hype": ["hyperpop"]}, events)
    found = trending(db, now=NOW, level="tag", min_events=5)
    assert found[0].key == "hyperpop" and found[0].lifetime.phase == "rising"
    assert sum(found[0].daily) == sum(4 * k for k in range(1, 5))
    assert all(t.key != "folk" for t in found)  # flat: no trend


def test_describe_finds_weekend_tags_and_peak_slots() -> None:
    overall = np.ones(168) * 10
    counts = np.zeros(168)
    counts[5 * 24 + 22] = 30  # Sat 22:00
    counts[2 * 24 + 9] = 5
    timing = describe("techno", counts, overall)
    assert timing.peak_hours[0] == "Sat 22:00"
    assert timing.weekend_share == pytest.approx(30 / 35, abs=1e-4)
    assert timing.weekend_lift > 2.5


def test_tag_timing_uses_each_users_time_zone(db: psycopg.Connection[Any]) -> None:
    saturday_night_tokyo = datetime(2026, 2, 28, 13, tzinfo=UTC)  # Sat 22:00 in Tokyo
    tuesday_morning_tokyo = datetime(2026, 2, 24, 0, tzinfo=UTC)  # Tue 09:00 in Tokyo
    events = [(f"u{n}", "club", saturday_night_tokyo + timedelta(minutes=n)) for n in range(25)]
    events += [(f"u{n}", "desk", tuesday_morning_tokyo + timedelta(minutes=n)) for n in range(25)]
    store(db, [f"u{n}" for n in range(25)], {"club": ["techno"], "desk": ["study"]}, events, tz="Asia/Tokyo")
    found = tag_timing(db, now=NOW)
    assert found["techno"].peak_hours[0] == "Sat 22:00" and found["techno"].weekend_lift == pytest.approx(2.0)
    assert found["study"].peak_hours[0] == "Tue 09:00" and found["study"].weekend_share == 0.0


def test_next_tags_count_every_tag_of_an_item_not_only_its_strongest(db: psycopg.Connection[Any]) -> None:
    # "jazz" is never an item's strongest tag: with only top tags, nothing followed it
    items = {"a": {"bebop": 1.0, "jazz": 0.5}, "b": {"swing": 1.0, "jazz": 0.4}, "c": {"rock": 1.0}}
    loader.store_users(db, [parse_user({"id": f"u{n}", "timezone": "UTC"}) for n in range(5)])
    loader.store_items(db, [parse_item({"id": i, "title": i, "tags": t}) for i, t in items.items()])
    paths = [("a", "c")] * 4 + [("a", "b")]
    events = [
        parse_event(
            {
                "id": f"e{n}{j}",
                "user_id": f"u{n}",
                "type": "play",
                "item_id": item,
                "ts": (NOW - timedelta(days=1, minutes=10 - 5 * j)).isoformat(),
            },
            now=NOW,
        )
        for n, path in enumerate(paths)
        for j, item in enumerate(path)
    ]
    loader.store_events(db, events)
    db.commit()
    found = sequence_next(db, ["jazz"], now=NOW, level="tag")
    # a → c: jazz → rock (4); a → b: jazz → swing (b's jazz was already there: no jazz → jazz)
    assert [(s.key, s.support) for s in found] == [("rock", 4), ("swing", 1)]
    assert found[0].score == pytest.approx(0.8)


NOISE = [
    0,
    0,
    1,
    0,
    0,
    2,
    2,
    0,
    1,
    0,
    0,
    1,
    1,
    0,
    1,
    1,
    0,
    2,
    0,
    0,
    2,
    0,
    0,
    1,
    2,
    0,
    3,
    1,
]  # demo bossa-nova


def test_noise_has_no_lifetime_and_no_peak() -> None:
    life = fit_lifetime(np.array(NOISE))  # was: peaking, rise 0, decay 0.001 (assumed), 2302 days left
    assert life.phase == "steady" and life.rise_per_day == 0.0
    assert life.decay_per_day is None and not life.decay_observed
    assert life.half_life_days is None and life.days_left is None and life.lifetime_days is None


def test_a_flat_level_after_a_peak_is_no_observed_decay() -> None:
    # a rise long ago, then a level that does not fall: no made-up 0.001/day decay (916 days left)
    series = np.array([2.0] * 8 + [4, 8, 16, 30, 30] + [24.0] * 15)
    life = fit_lifetime(series)
    assert not life.decay_observed and life.rise_per_day > 0.1
    assert life.decay_per_day == pytest.approx(life.rise_per_day)  # assumed from the observed rise
    assert life.days_left is not None and life.days_left < 10


def test_a_jump_in_one_day_is_a_rise() -> None:
    life = fit_lifetime(np.array([1.0] * 25 + [12, 12, 12]))
    assert life.phase == "rising" and life.rise_per_day > 1.0 and life.days_left is not None


def test_no_excess_at_all_is_over_without_infinite_values() -> None:
    life = fit_lifetime(np.full(14, 5.0))
    assert life.phase == "over" and life.half_life_days is None and life.lifetime_days is None


def test_a_trend_does_not_read_todays_unfinished_day_as_a_fall(db: psycopg.Connection[Any]) -> None:
    """Counts were per UTC calendar day, so an hour after midnight the day in progress held a
    few events and every rising tag read as decaying; the windows are now the 24 hours ending at
    `now`, each of them whole."""
    midnight = datetime(2026, 5, 10, tzinfo=UTC)
    events = []
    for d in range(28):  # a tag rising steadily, its events spread over every hour of each day
        day = midnight - timedelta(days=28 - d)
        per_day = 2 + d
        events += [(f"u{n % 16}", "hype", day + timedelta(hours=24 * n / per_day)) for n in range(per_day)]
    store(db, [f"u{n}" for n in range(16)], {"hype": ["hyperpop"]}, events)
    phases = {
        when: trending(db, now=when, level="tag", min_events=5)[0].lifetime.phase
        for when in (midnight - timedelta(seconds=1), midnight + timedelta(hours=1))
    }
    assert set(phases.values()) == {"rising"}, phases


def test_real_trends_rank_above_noise_around_a_zero_baseline(db: psycopg.Connection[Any]) -> None:
    """The score (recent mean / (baseline + 1)) put a tag with 0-2 events a day and no baseline
    first, though its phase said noise ('steady'), above a tag decaying from a peak of 34 a day."""
    noise = [0] * 18 + [0, 2, 1, 0, 0, 2, 1, 2, 1, 2]
    decaying = [10] * 12 + [14, 20, 28, 34, 30, 26, 23, 21, 19, 18, 17, 16, 15, 15, 14, 14]
    events = []
    for d in range(28):
        day = NOW - timedelta(days=27 - d, hours=3)
        events += [(f"u{n % 16}", "wave", day + timedelta(minutes=n)) for n in range(decaying[d])]
        events += [(f"u{n}", "drone", day + timedelta(minutes=n)) for n in range(noise[d])]
    store(db, [f"u{n}" for n in range(16)], {"wave": ["chillwave"], "drone": ["drone-ambient"]}, events)
    found = trending(db, now=NOW, level="tag", min_events=5)
    phases = {t.key: t.lifetime.phase for t in found}
    assert phases == {"chillwave": "decaying", "drone-ambient": "steady"}, phases
    assert found[0].lifetime.score < found[1].lifetime.score  # ranked by phase first, then score
    assert [t.key for t in found] == ["chillwave", "drone-ambient"]
