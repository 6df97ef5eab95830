"""Cadence periods: stable per-user offsets, and missed periods coalescing into one run."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tagloop.agent.cadence import Cadence, cadences_from, parse_span
from tagloop.tools.errors import ConfigError

T = datetime(2026, 5, 4, 10, tzinfo=UTC)


def test_a_run_after_an_outage_belongs_to_the_current_period_and_the_next_is_one_period_later() -> None:
    weekly = Cadence("weekly_discovery", timedelta(days=7), spread=1.0)
    late = T + timedelta(days=23)  # three periods missed
    key = weekly.run_key("u1", late)
    assert key == f"weekly_discovery|{weekly.period('u1', late)}"
    nxt = weekly.next_run_after("u1", late)
    assert late < nxt <= late + timedelta(days=7)
    assert weekly.run_key("u1", nxt) != key and weekly.run_key("u1", nxt - timedelta(seconds=1)) == key


def test_offsets_spread_users_over_the_period_and_are_stable() -> None:
    daily = Cadence("daily", timedelta(days=1), spread=1.0)
    offsets = {daily.offset(f"u{i}") for i in range(50)}
    assert len(offsets) == 50 and all(timedelta() <= o < timedelta(days=1) for o in offsets)
    assert daily.offset("u1") == Cadence("daily", timedelta(days=1), spread=1.0).offset("u1")
    assert Cadence("daily", timedelta(days=1)).offset("u1") == timedelta()


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800), ("1w", 604800)])
def test_parse_span(text: str, seconds: int) -> None:
    assert parse_span(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "0d", "-1h", "1y"])
def test_parse_span_rejects_bad_intervals(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_span(text)


def test_a_late_first_run_is_not_followed_by_another_within_hours() -> None:
    """A user's first run (or the catch-up after an outage) falls anywhere in its period; the next
    run came at the next boundary, 6 hours later for 1 in 7 users of a weekly cadence."""
    weekly = Cadence("weekly", timedelta(days=7), spread=1.0)
    for n in range(200):
        user = f"u{n}"
        for fraction in (0.0, 0.3, 0.6, 0.95):
            at = weekly.period_start(user, 120) + weekly.every * fraction
            gap = weekly.next_run_after(user, at) - at
            assert weekly.every / 2 <= gap <= weekly.every * 1.5, (user, fraction, gap)
            assert weekly.period(user, at + gap) > weekly.period(user, at)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": "0.0000001s"}, "between 1 minute and 3660 days"),
        ({"a": "99999999999w"}, "between 1 minute and 3660 days"),
        ({"a": "30s"}, "between 1 minute and 3660 days"),
        ({"": "7d"}, "cadence name ''"),
        ({"a|b": "7d"}, "cadence name 'a|b'"),
        ({"a": 7}, "is not like"),
    ],
)
def test_unusable_cadences_are_a_config_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        cadences_from(spec)
