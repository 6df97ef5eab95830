"""Exposure per provider (artist/creator/brand) over time, and how fairly it is spread.

- Position weights: a slot at rank r (0-based) gives its provider `1 / log2(r + 2)` units of
  exposure — the DCG discount, i.e. how much attention a slot gets relative to the top one.
- `ProviderExposure` keeps decayed exposure per provider (half-life in days, applied lazily from the
  time of the last update, so it needs `now` passed in — never a clock) and the running count of
  slots that went to long-tail providers, which the amortized long-tail quota reads.
- `exposure_gini` is the Gini coefficient of exposure over providers (0 = equal, → 1 = all on one);
  `long_tail_share` the share of exposure that long-tail providers got.
- `long_tail_providers` defines the long tail: the head is the smallest set of most popular
  providers that together hold `head_mass` of all popularity (interactions); the rest is the tail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from tagloop.tools.errors import InvalidInput


def position_weights(k: int) -> np.ndarray:
    """Attention of ranks 0..k-1: `1 / log2(rank + 2)` (1.0 for the top slot)."""
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def exposure_gini(exposure_by_provider: Mapping[str, float] | np.ndarray) -> float:
    """Gini coefficient of non-negative exposure values (0 when all equal or all zero).

    Include providers with zero exposure in the input when they should count as under-exposed.
    """
    values = np.asarray(
        list(exposure_by_provider.values())
        if isinstance(exposure_by_provider, Mapping)
        else exposure_by_provider,
        dtype=np.float64,
    )
    if values.size == 0:
        return 0.0
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise InvalidInput("exposure values must be finite and non-negative")
    total = values.sum()
    if total <= 0:
        return 0.0
    v = np.sort(values)
    n = v.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float((2.0 * np.sum(ranks * v)) / (n * total) - (n + 1.0) / n)


def long_tail_share(exposure_by_provider: Mapping[str, float], long_tail: Iterable[str]) -> float:
    """Share of all exposure that went to the providers in `long_tail` (0 when there is none)."""
    tail = set(long_tail)
    total = float(sum(exposure_by_provider.values()))
    if total <= 0:
        return 0.0
    return float(sum(v for p, v in exposure_by_provider.items() if p in tail)) / total


def head_providers(popularity: Mapping[str, float], head_mass: float = 0.8) -> set[str]:
    """The head: the fewest most-popular providers whose popularity adds up to at least `head_mass`
    of the total (ties broken by name, so the result is stable). Every other provider — those with
    no popularity at all included — is long tail."""
    if not 0.0 < head_mass <= 1.0:
        raise InvalidInput(f"head_mass must be in (0, 1], got {head_mass}")
    ranked = sorted(popularity.items(), key=lambda kv: (-kv[1], kv[0]))
    total = float(sum(max(v, 0.0) for _, v in ranked))
    head: set[str] = set()
    running = 0.0
    for name, value in ranked:
        if running >= head_mass * total - 1e-12:
            break
        head.add(name)
        running += max(value, 0.0)
    return head


def long_tail_providers(popularity: Mapping[str, float], head_mass: float = 0.8) -> set[str]:
    """The providers of `popularity` outside the head (`head_providers`); empty when nobody has any
    popularity. A provider missing from `popularity` is long tail too: test `not in head`."""
    head = head_providers(popularity, head_mass)
    if not head:
        return set()
    return set(popularity) - head


@dataclass
class ProviderExposure:
    """Decayed position-weighted exposure per provider, plus long-tail slot counts.

    Mutable on purpose (one instance per scope — a user, a cohort or the whole system — updated after
    each delivered slate); it never reads a clock: `record` and `decayed` take `now`.
    """

    half_life_days: float = 7.0
    exposure: dict[str, float] = field(default_factory=dict)
    slots_total: int = 0
    long_tail_slots: int = 0
    updated_at: datetime | None = None

    def decayed(self, now: datetime) -> dict[str, float]:
        """Exposure as of `now` (without changing the stored state)."""
        factor = self._factor(now)
        return {p: v * factor for p, v in self.exposure.items()}

    def _factor(self, now: datetime) -> float:
        if now.tzinfo is None:
            raise InvalidInput("now must be timezone-aware")
        if self.updated_at is None:
            return 1.0
        days = (now - self.updated_at).total_seconds() / 86400.0
        return math.pow(0.5, max(days, 0.0) / self.half_life_days)

    def record(self, providers: Sequence[str], long_tail: Sequence[bool], now: datetime) -> None:
        """Add one delivered slate: `providers[r]` (rank r) gains `1/log2(r+2)` exposure."""
        if len(providers) != len(long_tail):
            raise InvalidInput("providers and long_tail flags must have the same length")
        factor = self._factor(now)
        if factor != 1.0:
            self.exposure = {p: v * factor for p, v in self.exposure.items()}
        for provider, w in zip(providers, position_weights(len(providers)), strict=True):
            self.exposure[provider] = self.exposure.get(provider, 0.0) + float(w)
        self.slots_total += len(providers)
        self.long_tail_slots += int(sum(bool(x) for x in long_tail))
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now

    def get(self, provider: str, default: float = 0.0) -> float:
        return self.exposure.get(provider, default)


def long_tail_quota(k: int, min_share: float, slots_total: int = 0, long_tail_slots: int = 0) -> int:
    """Long-tail slots this slate must hold so that, counting history, the long tail has at least
    `min_share` of all slots (amortized: a slate after a tail-rich past may need fewer, after a
    head-heavy past more; always within 0..k). With no history it is `ceil(min_share * k)`."""
    need = math.ceil(min_share * (slots_total + k) - 1e-9) - long_tail_slots
    return int(min(max(need, 0), k))
