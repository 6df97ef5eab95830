"""Send-time and channel arms: the bandit's per-arm evidence and the instant a chosen hour means.

Evidence per arm = the user's own (sent, engaged) counts plus the overall counts shrunk to at most
`pooled` pseudo-messages, so a new user starts from what works for everyone and their own history
takes over as it grows. For send hours the user's activity histogram (hour-of-week, in their zone)
adds a prior: each hour arm gets `activity_weight` pseudo-successes in proportion to the user's
share of activity within ±1 hour of it (any weekday), rounded to quarters so that users with
similar rhythms share a posterior (1,000 demo users: 125 distinct priors instead of 1,000).

`ThompsonArms` plays the configured bandit like `policies.choose_arm` (same draw from the same
generator), but computes the exact Thompson propensities once per distinct evidence and keeps them in
a cache the run shares; `prepare` computes a whole batch's missing evidence in one vectorised
quadrature (`policies.thompson_probabilities_batch`), so `choose` only draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta

import numpy as np

from tagloop.policies import choose_arm, thompson_probabilities, thompson_probabilities_batch
from tagloop.policies.config import BanditConfig
from tagloop.policies.guards import zone


def evidence(
    arms: Sequence[object],
    own: Mapping[object, tuple[int, int]],
    overall: Mapping[object, tuple[int, int]],
    pooled: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(successes, failures) per arm from (sent, engaged) counts."""
    total = sum(overall.get(a, (0, 0))[0] for a in arms)
    shrink = min(1.0, pooled / total) if total else 0.0
    succ = np.zeros(len(arms))
    fail = np.zeros(len(arms))
    for i, arm in enumerate(arms):
        s_own, e_own = own.get(arm, (0, 0))
        s_all, e_all = overall.get(arm, (0, 0))
        succ[i] = e_own + shrink * e_all
        fail[i] = (s_own - e_own) + shrink * (s_all - e_all)
    return succ, np.maximum(fail, 0.0)


def activity_prior(
    hour_of_week: Sequence[int] | None, hours: Sequence[int], weight: float = 2.0
) -> np.ndarray:
    """Pseudo-successes per hour arm from the user's 168-slot activity histogram."""
    if not hour_of_week or len(hour_of_week) != 168:
        return np.zeros(len(hours))
    by_hour = np.asarray(hour_of_week, dtype=np.float64).reshape(7, 24).sum(axis=0)
    total = by_hour.sum()
    if total == 0:
        return np.zeros(len(hours))
    h = np.asarray(hours, dtype=np.intp)
    near = by_hour[(h - 1) % 24] + by_hour[h] + by_hour[(h + 1) % 24]  # the hour and its neighbours
    return np.round(4.0 * weight * near / total) / 4.0


class ThompsonArms:
    """`choose_arm` with exact Thompson propensities memoised per (successes, failures)."""

    def __init__(self, cfg: BanditConfig, cache: dict[tuple[bytes, bytes], np.ndarray]) -> None:
        self.cfg, self.cache = cfg, cache

    @property
    def memoised(self) -> bool:
        return self.cfg.strategy == "thompson" and self.cfg.propensity == "exact"

    def prepare(self, evidence: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Propensities of every (successes, failures) not cached yet, one quadrature per arm count."""
        if not self.memoised:
            return
        missing: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}
        for succ, fail in evidence:
            s = np.asarray(succ, dtype=np.float64)
            f = np.asarray(fail, dtype=np.float64)
            key = (s.tobytes(), f.tobytes())
            valid = s.ndim == 1 and s.shape == f.shape and s.size and np.all(np.isfinite(s + f))
            if key not in self.cache and valid and s.min() >= 0 and f.min() >= 0:
                missing[key] = (s, f)  # invalid evidence is left to `choose`, which rejects it
        by_size: dict[int, list[tuple[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]]]] = {}
        for key, sf in missing.items():
            by_size.setdefault(sf[0].size, []).append((key, sf))
        prior = (self.cfg.prior_alpha, self.cfg.prior_beta)
        for group in by_size.values():
            succ = np.array([sf[0] for _, sf in group])
            fail = np.array([sf[1] for _, sf in group])
            probs = thompson_probabilities_batch(succ, fail, prior)
            for (key, _), p in zip(group, probs, strict=True):
                self.cache[key] = p

    def choose(
        self, successes: np.ndarray, failures: np.ndarray, rng: np.random.Generator
    ) -> tuple[int, float]:
        cfg = self.cfg
        if not self.memoised:
            return choose_arm(cfg, successes, failures, rng)
        s = np.asarray(successes, dtype=np.float64)
        f = np.asarray(failures, dtype=np.float64)
        key = (s.tobytes(), f.tobytes())
        probs = self.cache.get(key)
        if probs is None:  # validates the evidence, as choose_arm would
            probs = self.cache[key] = thompson_probabilities(s, f, (cfg.prior_alpha, cfg.prior_beta))
        arm = int(np.argmax(rng.beta(cfg.prior_alpha + s, cfg.prior_beta + f)))
        return arm, float(probs[arm])


def next_local_hour(now: datetime, tz: str, hour: int) -> datetime:
    """The first instant ≥ now at which the user's wall clock reads `hour`:00. Compared as instants,
    both folds of a repeated hour (01:00 EDT and 01:00 EST on a fall-back day are both the user's
    01:00; wall-clock comparison skipped the second); an hour a spring-forward skips maps to the
    instant an hour later (02:00 → 03:00 EDT)."""
    z = zone(tz)
    today = now.astimezone(z).date()
    instants = (
        datetime.combine(today + timedelta(days=d), time(hour, fold=fold), tzinfo=z)
        for d in (0, 1, 2)
        for fold in (0, 1)
    )
    return min(i for i in instants if i >= now).astimezone(now.tzinfo)
