"""The send-hour activity prior (pseudo-successes per hour arm from the user's 168-slot histogram) and
the instant a chosen local hour means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tagloop.tools.messaging.timing import activity_prior, next_local_hour


@given(
    st.lists(st.integers(0, 50), min_size=168, max_size=168),
    st.lists(st.integers(0, 23), min_size=1, max_size=6),
)
def test_activity_prior_counts_the_hour_and_its_neighbours_over_the_week(
    week: list[int], hours: list[int]
) -> None:
    by_hour = [sum(week[d * 24 + h] for d in range(7)) for h in range(24)]
    total = sum(by_hour)
    got = activity_prior(week, hours)
    if total == 0:
        assert got.tolist() == [0.0] * len(hours)
        return
    for h, value in zip(hours, got, strict=True):
        near = by_hour[(h - 1) % 24] + by_hour[h] + by_hour[(h + 1) % 24]
        assert value == round(8.0 * near / total) / 4.0  # weight 2: quarter steps of 4·w·share


def test_activity_prior_is_zero_without_a_full_histogram() -> None:
    assert activity_prior(None, [8, 20]).tolist() == [0.0, 0.0]
    assert activity_prior([1] * 24, [8]).tolist() == [0.0]
    assert np.array_equal(activity_prior([0] * 168, [0, 23]), np.zeros(2))


def test_the_next_local_hour_on_a_fall_back_day_is_the_repeated_hour() -> None:
    """01:30 EDT on 3 Nov 2024: 01:00 comes again at 06:00 UTC (EST), 30 minutes on, not tomorrow."""
    now = datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert next_local_hour(now, "America/New_York", 1) == datetime(2024, 11, 3, 6, 0, tzinfo=UTC)
    assert next_local_hour(now, "America/New_York", 8) == datetime(2024, 11, 3, 13, 0, tzinfo=UTC)


@given(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2025, 12, 31)),
    st.sampled_from(["America/New_York", "Australia/Lord_Howe", "Europe/Berlin", "Pacific/Chatham", "UTC"]),
    st.integers(0, 23),
)
def test_the_next_local_hour_is_the_first_minute_reading_that_hour(
    naive: datetime, tz: str, hour: int
) -> None:
    now = naive.replace(tzinfo=UTC)
    got = next_local_hour(now, tz, hour)
    assert now <= got < now + timedelta(days=2)
    z = ZoneInfo(tz)
    # every zone's offset is a multiple of 15 minutes: no earlier quarter hour reads hour:00
    step = timedelta(minutes=15)
    minute = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    minute += step if minute < now else timedelta(0)
    while minute < got:
        local = minute.astimezone(z)
        assert (local.hour, local.minute) != (hour, 0), (minute, got)
        minute += step
    local = got.astimezone(z)
    # the hour itself, or the instant after a skipped hour (spring forward)
    assert (local.hour, local.minute) == (hour, 0) or (got - timedelta(minutes=1)).astimezone(z).hour != hour
