"""Guards checked before every send (and again at send time): pure functions of their inputs.

- Frequency caps: a cap of N per window W means *no half-open window [s, s + W) of any start s*
  holds more than N sends of the channel ("per day" = rolling 24 h, "per week" = rolling 7 days).
  `check_caps` tests every window that would contain `now`, including sends logged *after* `now`,
  so caps hold whatever order sends are checked and recorded in (retries, backfills, clock skew).
- Quiet hours: an instant is quiet when its local wall-clock time in the user's IANA zone lies in
  [quiet_start, quiet_end) (wrapping midnight when start > end; start == end means no quiet hours).
  `next_allowed_time` returns the earliest instant ≥ now that is not quiet — around DST it may be the
  transition itself (an end time that falls in a spring-forward gap) and in a repeated fall-back hour
  the wall clock can be quiet again, exactly as the user's clock shows it.
- Consent: only an explicit `True` for the channel allows it (absent means no consent, SPEC §3).
- Unsubscribe: an unsubscribe at or before `now` blocks at once (globally or for that channel).
- Holdout: sha256(salt:user_id) mapped to [0, 1) below `share` → the user gets no messages; stable
  across runs and processes, changing the salt reshuffles.
Every check returns a `GuardResult` whose `reason` says why it blocked.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tagloop.policies.config import ChannelCap
from tagloop.tools.errors import InvalidInput

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class GuardResult:
    allowed: bool
    reason: str | None = None
    retry_at: datetime | None = None

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = GuardResult(True)


def _aware(dt: datetime, name: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidInput(f"{name} must be timezone-aware, got {dt.isoformat()}")
    return dt.astimezone(UTC)


def _max_in_windows(times: Sequence[datetime], t: datetime, window: timedelta) -> int:
    """Most sends (from sorted `times`) in any window [s, s + window) that contains t."""
    lo = bisect.bisect_right(times, t - window)
    best = 0
    starts = [*times[lo : bisect.bisect_right(times, t)], t]
    for s in starts:
        if s <= t - window:
            continue
        best = max(best, bisect.bisect_left(times, s + window) - bisect.bisect_left(times, s))
    return best


def _cap_ok(times: Sequence[datetime], t: datetime, window: timedelta, limit: int | None) -> bool:
    return limit is None or _max_in_windows(times, t, window) + 1 <= limit


def check_caps(
    sent_ts_by_channel: Mapping[str, Sequence[datetime]],
    channel: str,
    now: datetime,
    caps: Mapping[str, ChannelCap],
) -> GuardResult:
    """May one more message go out on `channel` at `now` without breaking a cap? `retry_at` is the
    earliest later instant at which it may (considering the sends logged so far)."""
    now = _aware(now, "now")
    cap = caps.get(channel)
    if cap is None:
        return ALLOWED
    times = sorted(_aware(t, "sent timestamp") for t in sent_ts_by_channel.get(channel, ()))
    rules = [(DAY, cap.per_day, "per day"), (WEEK, cap.per_week, "per week")]
    broken = [(w, lim, label) for w, lim, label in rules if not _cap_ok(times, now, w, lim)]
    if not broken:
        return ALLOWED
    _, limit, label = broken[0]
    retry = None
    if all(lim != 0 for _, lim, _ in rules):
        for t in sorted({s + w for s in times for w, _, _ in rules if s + w > now}):
            if all(_cap_ok(times, t, w, lim) for w, lim, _ in rules):
                retry = t
                break
    return GuardResult(False, f"{channel} cap of {limit} {label} reached", retry)


@functools.lru_cache(maxsize=4096)
def zone(tz: str) -> ZoneInfo:
    """The IANA zone, kept for the process: `ZoneInfo` itself only holds its 8 latest zones strongly,
    so with users in more zones each lookup re-read the tz file (~65 µs, several per decision)."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {tz!r}") from None


_zone = zone


def is_quiet(at: datetime, tz: str, quiet_start: time, quiet_end: time) -> bool:
    """Is the user's local wall-clock time at instant `at` inside the quiet hours?"""
    wall = _aware(at, "at").astimezone(_zone(tz)).time().replace(tzinfo=None)
    if quiet_start == quiet_end:
        return False
    if quiet_start < quiet_end:
        return quiet_start <= wall < quiet_end
    return wall >= quiet_start or wall < quiet_end


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """UTC instants in (start, end] where the zone's UTC offset changes (to the microsecond)."""
    found: list[datetime] = []
    t = start
    step = timedelta(hours=1)
    while t < end:
        nxt = min(t + step, end)
        if t.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = t, nxt  # offset(lo) != offset(hi): bisect to the first instant of the new offset
            while hi - lo > timedelta(microseconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        t = nxt
    return found


def next_allowed_time(now: datetime, tz: str, quiet_start: time, quiet_end: time) -> datetime:
    """`now` if it is outside quiet hours, else the earliest later instant that is (aware, UTC)."""
    now = _aware(now, "now")
    zone = _zone(tz)
    if not is_quiet(now, tz, quiet_start, quiet_end):
        return now
    horizon = now + timedelta(days=4)
    candidates = _transitions(zone, now, horizon)
    day = now.astimezone(zone).date() - DAY
    while datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC) <= horizon:
        for fold in (0, 1):
            local = datetime.combine(day, quiet_end, tzinfo=zone).replace(fold=fold)
            inst = local.astimezone(UTC)
            if inst.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
                candidates.append(inst)  # skip wall times that do not exist (spring-forward gap)
        day += DAY
    for inst in sorted(c for c in candidates if c > now):
        if not is_quiet(inst, tz, quiet_start, quiet_end):
            return inst
    raise InvalidInput(f"no instant outside quiet hours within 4 days in {tz}")


def check_quiet_hours(now: datetime, tz: str, quiet_start: time, quiet_end: time) -> GuardResult:
    nxt = next_allowed_time(now, tz, quiet_start, quiet_end)
    if nxt == _aware(now, "now"):
        return ALLOWED
    return GuardResult(False, f"quiet hours {quiet_start:%H:%M}-{quiet_end:%H:%M} in {tz}", nxt)


def has_consent(consent: Mapping[str, bool], channel: str) -> GuardResult:
    """Allowed only when the user gave explicit consent (`True`) for this channel."""
    if consent.get(channel) is True:
        return ALLOWED
    return GuardResult(False, f"no consent for channel {channel}")


def check_unsubscribed(
    unsubscribed_at: datetime | Mapping[str, datetime] | None, channel: str, now: datetime
) -> GuardResult:
    """Blocked when an unsubscribe (global datetime, or per channel) is at or before `now`."""
    now = _aware(now, "now")
    if unsubscribed_at is None:
        return ALLOWED
    when = unsubscribed_at.get(channel) if isinstance(unsubscribed_at, Mapping) else unsubscribed_at
    if when is not None and _aware(when, "unsubscribed_at") <= now:
        return GuardResult(False, f"user unsubscribed at {when.isoformat()}")
    return ALLOWED


def consented(
    consent: Mapping[str, bool], unsubscribed: Mapping[str, datetime], channel: str, now: datetime
) -> bool:
    """`has_consent` and `check_unsubscribed` in one cheap test, as a decision and the profile's
    `reachable` both ask it: explicit consent to `channel` and no unsubscribe from it (or from
    all, key "*") at or before `now`."""
    return consent.get(channel) is True and not any(
        t <= now for key, t in unsubscribed.items() if key in ("*", channel)
    )


def holdout_bucket(user_id: str, salt: str) -> float:
    """The user's stable position in [0, 1): first 8 bytes of sha256(salt:user_id) / 2**64."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_holdout(user_id: str, share: float, salt: str) -> bool:
    """Is the user in the global no-message holdout group (a stable `share` of all users)?"""
    if not 0.0 <= share <= 1.0:
        raise InvalidInput(f"holdout share must be in [0, 1], got {share}")
    return holdout_bucket(user_id, salt) < share


def check_holdout(user_id: str, share: float, salt: str) -> GuardResult:
    if in_holdout(user_id, share, salt):
        return GuardResult(False, f"user is in the global holdout ({share:.1%} of users get no messages)")
    return ALLOWED
