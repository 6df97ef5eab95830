"""Emerging tag combinations on synthetic collection event streams."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.tagging.trends import CollectionEvent, emerging_clusters

NOW = datetime(2024, 6, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
ITEM_TAGS = {
    "old1": ["rock"], "old2": ["indie"],  # a stable, long-standing combination
    "new1": ["hyperpop"], "new2": ["trap metal"],  # a combination that appears and grows
}  # fmt: skip


def stream(rng: np.random.Generator) -> list[CollectionEvent]:
    events: list[CollectionEvent] = []
    for day in range(60):  # rock + indie: 2 playlists a day for 60 days
        for p in range(2):
            ts = NOW - timedelta(days=60 - day, hours=float(rng.integers(1, 20)))
            cid = f"stable-{day}-{p}"
            events += [
                CollectionEvent(cid, "old1", ts),
                CollectionEvent(cid, "old2", ts + timedelta(minutes=5)),
            ]
    for day in range(10):  # hyperpop + trap metal: first 10 days ago, more every day
        for p in range(day // 2 + 1):
            ts = NOW - timedelta(days=10 - day, hours=1)
            cid = f"new-{day}-{p}"
            events += [
                CollectionEvent(cid, "new1", ts),
                CollectionEvent(cid, "new2", ts + timedelta(minutes=1)),
            ]
    return events


def test_new_growing_combination_is_reported_and_stable_one_is_not() -> None:
    trends = emerging_clusters(stream(np.random.default_rng(0)), ITEM_TAGS, NOW, WEEK)
    assert [t.tags for t in trends] == [("hyperpop", "trap metal")]
    trend = trends[0]
    assert trend.first_seen == NOW - timedelta(days=10, hours=1) + timedelta(minutes=1)
    assert trend.size > trend.previous > 0
    assert trend.growth == (trend.size + 1) / (trend.previous + 1)
    assert trend.total == trend.size + trend.previous


def test_a_pair_needs_both_tags_in_one_collection() -> None:
    events = [CollectionEvent(f"c{i}", "new1", NOW - timedelta(days=1)) for i in range(10)]
    events += [CollectionEvent(f"d{i}", "new2", NOW - timedelta(days=1)) for i in range(10)]
    assert emerging_clusters(events, ITEM_TAGS, NOW, WEEK) == []


def test_future_events_and_small_groups_are_ignored() -> None:
    events = [CollectionEvent("c", t, NOW + timedelta(days=1)) for t in ("new1", "new2")]
    events += [CollectionEvent("d", t, NOW - timedelta(days=1)) for t in ("new1", "new2")]
    assert emerging_clusters(events, ITEM_TAGS, NOW, WEEK, min_size=2) == []
    assert len(emerging_clusters(events, ITEM_TAGS, NOW, WEEK, min_size=1)) == 1


@pytest.mark.parametrize(
    ("events", "now", "window", "message"),
    [
        ([CollectionEvent("c", "new1", datetime(2024, 5, 1))], NOW, WEEK, "timezone-aware"),
        ([], datetime(2024, 6, 1), WEEK, "now must be timezone-aware"),
        ([], NOW, timedelta(0), "window must be positive"),
    ],
)
def test_bad_input_is_invalid_input(events: list[CollectionEvent], now: datetime, window: timedelta,
                                    message: str) -> None:  # fmt: skip
    with pytest.raises(InvalidInput, match=message):
        emerging_clusters(events, ITEM_TAGS, now, window)


def test_one_items_own_tag_pair_is_not_a_combination() -> None:
    """lf-1 carries lofi and chill: 5 playlists holding it listed "chill + lofi" as emerging (growth
    6.0), though nobody combined anything. A pair needs an item with one tag and another with the other."""
    tags = {"lf-1": ["lofi", "chill"], "lf-2": ["lofi", "chill"], "t-1": ["hip-hop"], "c-1": ["chill"]}
    events = []
    for p in range(5):
        ts = NOW - timedelta(days=1, hours=p)
        events += [CollectionEvent(f"pl-{p}", "lf-1", ts), CollectionEvent(f"pl-{p}", "t-1", ts)]
        events.append(CollectionEvent(f"pl-{p}", "lf-2", ts + timedelta(minutes=1)))
    found = {t.tags: t for t in emerging_clusters(events, tags, NOW, WEEK)}
    assert set(found) == {("chill", "hip-hop"), ("hip-hop", "lofi")}
    later = [CollectionEvent(f"pl-{p}", "c-1", NOW - timedelta(hours=2)) for p in range(5)]
    found = {t.tags: t for t in emerging_clusters(events + later, tags, NOW, WEEK)}
    assert ("chill", "lofi") not in found  # c-1 has chill without lofi, but no item has lofi alone
    alone = [CollectionEvent(f"pl-{p}", "l-0", NOW - timedelta(hours=1)) for p in range(5)]
    found = {
        t.tags: t for t in emerging_clusters(events + later + alone, {**tags, "l-0": ["lofi"]}, NOW, WEEK)
    }
    assert found[("chill", "lofi")].first_seen == NOW - timedelta(hours=1)  # completed by l-0 + c-1
