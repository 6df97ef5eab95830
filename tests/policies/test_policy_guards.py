"""Guards: caps hold under any order, quiet hours are right in every zone across DST, holdout is stable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.policies import (
    check_caps,
    check_holdout,
    check_quiet_hours,
    check_unsubscribed,
    has_consent,
    in_holdout,
    is_quiet,
    next_allowed_time,
)
from tagloop.policies.config import ChannelCap
from tagloop.policies.guards import consented, holdout_bucket
from tagloop.tools.errors import InvalidInput

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ZONES = sorted(available_timezones())


def _max_window_count(times: list[datetime], window: timedelta) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if s <= u < s + window) for s in times), default=0)


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 30 * 24 * 60), min_size=1, max_size=40),
    per_day=st.integers(0, 4),
    per_week=st.one_of(st.none(), st.integers(1, 10)),
)
def test_caps_never_exceeded_under_any_event_order(
    offsets: list[int], per_day: int, per_week: int | None
) -> None:
    caps = {"push": ChannelCap(per_day=per_day, per_week=per_week)}
    sent: list[datetime] = []
    for minutes in offsets:  # attempts arrive in arbitrary (not chronological) order
        now = T0 + timedelta(minutes=minutes)
        result = check_caps({"push": sent, "email": [now]}, "push", now, caps)
        if result.allowed:
            sent.append(now)
        else:
            assert result.reason and "push cap" in result.reason
            if result.retry_at is not None:
                assert result.retry_at > now
                assert check_caps({"push": sent}, "push", result.retry_at, caps).allowed
    assert _max_window_count(sent, timedelta(days=1)) <= per_day
    if per_week is not None:
        assert _max_window_count(sent, timedelta(days=7)) <= per_week


def test_caps_allow_uncapped_channels_and_block_at_the_limit() -> None:
    caps = {"email": ChannelCap(per_day=1)}
    assert check_caps({}, "webhook", T0, caps).allowed
    blocked = check_caps({"email": [T0 - timedelta(hours=3)]}, "email", T0, caps)
    assert not blocked and blocked.retry_at == T0 + timedelta(hours=21)
    assert check_caps({"email": [T0 - timedelta(hours=24)]}, "email", T0, caps).allowed


@cache
def _transitions(tz: str) -> tuple[datetime, ...]:
    """UTC instants in 2024-2025 where the zone's offset changes (hour resolution is enough)."""
    zone = ZoneInfo(tz)
    out = []
    t = datetime(2024, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    while t < datetime(2026, 1, 1, tzinfo=UTC):
        t += timedelta(hours=1)
        off = t.astimezone(zone).utcoffset()
        if off != prev:
            out.append(t)
        prev = off
    return tuple(out)


local_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 59]))


def _assert_next_allowed_is_right(now: datetime, tz: str, start: time, end: time) -> None:
    nxt = next_allowed_time(now, tz, start, end)
    assert nxt.tzinfo is not None and nxt >= now
    assert not is_quiet(nxt, tz, start, end)
    if nxt > now:
        assert is_quiet(now, tz, start, end)
        assert is_quiet(nxt - timedelta(seconds=1), tz, start, end)
        span = nxt - now
        for frac in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
            assert is_quiet(now + span * frac, tz, start, end)


@settings(max_examples=150, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    pick=st.integers(0, 10_000),
    minutes=st.integers(-36 * 60, 36 * 60),
    start=local_times,
    end=local_times,
)
def test_quiet_hours_respected_around_dst_transitions_in_every_zone(
    tz: str, pick: int, minutes: int, start: time, end: time
) -> None:
    transitions = _transitions(tz)
    base = transitions[pick % len(transitions)] if transitions else T0 + timedelta(days=pick % 365)
    _assert_next_allowed_is_right(base + timedelta(minutes=minutes), tz, start, end)


@pytest.mark.parametrize(
    ("tz", "now", "start", "end", "expected"),
    [
        # spring forward in New York, 2025-03-09 02:00 -> 03:00; quiet ends at 02:30 (does not exist)
        (
            "America/New_York",
            datetime(2025, 3, 9, 6, 0, tzinfo=UTC),
            time(22),
            time(2, 30),
            datetime(2025, 3, 9, 7, 0, tzinfo=UTC),
        ),
        # fall back in Berlin, 2025-10-26 03:00 CEST -> 02:00 CET; quiet 21:00-08:00 ends at 07:00 UTC
        (
            "Europe/Berlin",
            datetime(2025, 10, 25, 22, 0, tzinfo=UTC),
            time(21),
            time(8),
            datetime(2025, 10, 26, 7, 0, tzinfo=UTC),
        ),
        # allowed already: returned unchanged
        (
            "Asia/Tokyo",
            datetime(2025, 6, 1, 3, 0, tzinfo=UTC),
            time(21),
            time(8),
            datetime(2025, 6, 1, 3, 0, tzinfo=UTC),
        ),
    ],
)
def test_next_allowed_time_known_cases(
    tz: str, now: datetime, start: time, end: time, expected: datetime
) -> None:
    assert next_allowed_time(now, tz, start, end) == expected


def test_quiet_guard_reports_reason_and_retry() -> None:
    result = check_quiet_hours(datetime(2025, 6, 1, 23, 0, tzinfo=UTC), "UTC", time(21), time(8))
    assert not result and "quiet hours 21:00-08:00 in UTC" in (result.reason or "")
    assert result.retry_at == datetime(2025, 6, 2, 8, 0, tzinfo=UTC)


def test_holdout_is_stable_and_its_share_is_within_tolerance() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = [in_holdout(u, 0.1, "salt-a") for u in users]
    assert first == [in_holdout(u, 0.1, "salt-a") for u in users]
    assert abs(sum(first) / len(users) - 0.1) < 0.01
    other = [in_holdout(u, 0.1, "salt-b") for u in users]
    assert first != other  # a new salt reshuffles
    assert all(in_holdout(u, 0.2, "salt-a") for u, h in zip(users, first, strict=True) if h)  # nested shares
    assert 0.0 <= holdout_bucket("x", "s") < 1.0
    blocked = check_holdout(users[first.index(True)], 0.1, "salt-a")
    assert not blocked and "holdout" in (blocked.reason or "")


@pytest.mark.parametrize(
    ("consent", "allowed"),
    [({"push": True}, True), ({"push": False}, False), ({}, False), ({"email": True}, False)],
)
def test_consent_is_explicit_per_channel(consent: dict[str, bool], allowed: bool) -> None:
    result = has_consent(consent, "push")
    assert result.allowed is allowed
    assert allowed or result.reason == "no consent for channel push"


def test_unsubscribe_is_honoured_immediately() -> None:
    assert not check_unsubscribed(T0, "push", T0)
    assert check_unsubscribed(T0 + timedelta(seconds=1), "push", T0)
    assert not check_unsubscribed({"push": T0 - timedelta(days=1)}, "push", T0)
    assert check_unsubscribed({"email": T0}, "push", T0)
    assert check_unsubscribed(None, "push", T0)


_CHANNELS = st.sampled_from(["push", "email", "webhook"])


@given(
    consent=st.dictionaries(_CHANNELS, st.booleans()),
    unsubscribed=st.dictionaries(
        st.sampled_from(["*", "push", "email"]), st.integers(-3, 3).map(lambda h: T0 + timedelta(hours=h))
    ),
    channel=_CHANNELS,
)
def test_consented_is_the_send_time_checks_in_one(
    consent: dict[str, bool], unsubscribed: dict[str, datetime], channel: str
) -> None:
    """What a decision and the profile ask (`consented`) is what delivery checks at send time."""
    at_send = (
        has_consent(consent, channel).allowed
        and check_unsubscribed(unsubscribed.get("*"), channel, T0).allowed
        and check_unsubscribed(unsubscribed, channel, T0).allowed
    )
    assert consented(consent, unsubscribed, channel, T0) is at_send


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: next_allowed_time(datetime(2025, 1, 1), "UTC", time(21), time(8)), "timezone-aware"),
        (lambda: next_allowed_time(T0, "Mars/Olympus", time(21), time(8)), "unknown IANA time zone"),
        (lambda: check_caps({}, "push", datetime(2025, 1, 1), {}), "timezone-aware"),
        (lambda: in_holdout("u", 1.5, "s"), "holdout share"),
    ],
)
def test_bad_guard_input_is_invalid_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()
