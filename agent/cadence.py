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


def parse_span(text: str) -> timedelta:
    """'30m', '24h', '7d', '1w' → timedelta."""
    match = _SPAN.match(text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"cadence interval {text!r} is not like '30m', '24h', '7d' or '1w'")
    return timedelta(seconds=float(match[1]) * _UNIT[match[2]])


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
        """Start of the period after the one containing `at` (missed periods are skipped)."""
        return self.period_start(user_id, self.period(user_id, at) + 1)

    def run_key(self, user_id: str, at: datetime) -> str:
        return f"{self.name}|{self.period(user_id, at)}"


def cadences_from(spec: dict[str, str], spread: float = 0.0) -> dict[str, Cadence]:
    """Settings' `{name: interval}` → cadences."""
    return {name: Cadence(name, parse_span(every), spread) for name, every in spec.items()}
