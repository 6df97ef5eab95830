"""`Timed`: a value read at some clock time and reused while that time is less than `max_age`
before the clock (never for an earlier clock) — the per-run reads that later runs may share: the
trending ranking, the active recommender, a worker's or the HTTP app's run facts.

The (read at, value) pair sits in a list replaced whole by one slice assignment and never emptied,
so threads sharing it always see a consistent pair (a race costs at most a second read)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Timed(Generic[T]):
    _held: list[tuple[datetime, T]] = field(default_factory=list, repr=False)

    def get(self, now: datetime, max_age: timedelta, read: Callable[[], T]) -> T:
        """The value read at most `max_age` before `now`, else `read()` (kept as read at `now`)."""
        held = self._held[0] if self._held else None
        if held is not None and timedelta() <= now - held[0] < max_age:
            return held[1]
        value = read()
        self._held[:] = [(now, value)]
        return value

    def latest(self) -> T | None:
        """The value last read, however old (None before the first read)."""
        return self._held[0][1] if self._held else None
