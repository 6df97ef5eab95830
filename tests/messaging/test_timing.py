"""The send-hour activity prior: pseudo-successes per hour arm from the user's 168-slot histogram."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tagloop.tools.messaging.timing import activity_prior


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
