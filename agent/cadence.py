"""Per-user cadences: when each user's scheduled runs fall, and which period a run belongs to.

A cadence repeats every `every` (a weekly discovery mix, a daily release digest, …). Period
boundaries sit at `EPOCH + n·every + offset(user)`, where the per-user offset is a stable hash
fraction of `spread · every`, so users' runs spread over the period instead of all starting at
once. `run_key(now)` names the period that contains `now`; a run after an outage therefore belongs
to the *current* period and every missed period before it coalesces into that one run. Decision ids
are uuid5 of (user, run key), so a period can hold at most one decision per user and cadence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tagloop.tools.errors import ConfigError

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: weekly periods start on Mondays (UTC)
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


MIN_SPAN, MAX_SPAN = timedelta(minutes=1), timedelta(days=3660)


def parse_span(text: str) -> timedelta:
    """'30m', '24h', '7d', '1w' → timedelta, between a minute and ten years."""
    match = _SPAN.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(f"cadence interval {text!r} is not like '30m', '24h', '7d' or '1w'")
    seconds = float(match[1]) * _UNIT[match[2]]
    if not MIN_SPAN.total_seconds() <= seconds <= MAX_SPAN.total_seconds():
        raise ConfigError(f"cadence interval {text!r} must be between 1 minute and 3660 days")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Cadence:
    name: str
    every: timedelta
    spread: float = 0.0  # share of the period over which users' start times are spread

    def offset(self, user_id: str) -> timedelta:
        if self.spread <= 0:
            return timedelta()
        digest = hashlib.sha256(f"cadence:{self.name}:{user_id}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2.0**64
        return self.every * (fraction * min(self.spread, 1.0))

    def period(self, user_id: str, at: datetime) -> int:
        """Index of the period containing `at` for this user."""
        return int((at - EPOCH - self.offset(user_id)) // self.every)

    def period_start(self, user_id: str, index: int) -> datetime:
        return EPOCH + self.offset(user_id) + self.every * index

    def next_run_after(self, user_id: str, at: datetime) -> datetime:
        """Start of the first later period that begins at least half an interval after `at` (missed
        periods are skipped). A run late in its period (a user's first run, the catch-up after an
        outage) would otherwise be followed by the next one within hours: runs of one user are
        between half an interval and one and a half apart, one a period."""
        index = self.period(user_id, at) + 1
        if self.period_start(user_id, index) - at < self.every / 2:
            index += 1
        return self.period_start(user_id, index)

    def run_key(self, user_id: str, at: datetime) -> str:
        return f"{self.name}|{self.period(user_id, at)}"


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def cadences_from(spec: dict[str, str], spread: float = 0.0) -> dict[str, Cadence]:
    """Settings' `{name: interval}` → cadences; a name is 1-64 letters, digits, `_`, `.` or `-`
    (it is part of each run's key, `name|period`)."""
    for name in spec:
        if not _NAME.match(name):
            raise ConfigError(f"cadence name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return {name: Cadence(name, parse_span(every), spread) for name, every in spec.items()}
