"""SPEC §6 metrics of one simulated policy, with 95% bootstrap intervals over users.

For N users over D days:
- reward_per_user_day        Σ reward / (N·D), reward = clicks + likes on delivered messages;
- unsubscribe_rate           share of users who unsubscribed;
- long_tail_exposure_share   share of delivered slots whose provider is in the world's long tail;
- exposure_gini              Gini of position-weighted provider exposure (slot r gives 1/log2(r+2)) over
                             every provider of the catalogue, unexposed ones included;
- notifications_per_user_day delivered messages / (N·D).
The interval resamples users with replacement (all of a user's days together, since a user's days
are not independent) and recomputes every metric on each replicate — ratios and the Gini included.
The interval is θ̂ ± 1.96·sd of the replicates (clipped to the metric's range). Not a percentile
interval: resampling users duplicates some and drops others, which concentrates provider exposure,
so the Gini's replicates sit wholly above θ̂ — their spread is right, their location is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from tagloop.evals.simulate.loop import PolicyRun

METRICS = (
    "reward_per_user_day",
    "unsubscribe_rate",
    "long_tail_exposure_share",
    "exposure_gini",
    "notifications_per_user_day",
)
DIGITS = 6


def _gini_columns(values: np.ndarray) -> np.ndarray:
    """Gini coefficient of each column of a non-negative (P, R) array (0 for an all-zero column)."""
    v = np.sort(values, axis=0)
    p = v.shape[0]
    total = v.sum(axis=0)
    ranks = np.arange(1, p + 1, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        g = 2.0 * (ranks * v).sum(axis=0) / (p * total) - (p + 1.0) / p
    return np.where(total > 0, g, 0.0)


def exposure_matrix(run: PolicyRun, n_users: int, n_providers: int) -> sp.csr_matrix:
    """(N, P) position-weighted exposure each user's messages gave each provider."""
    if not run.exposure:
        return sp.csr_matrix((n_users, n_providers))
    u, p, w = (np.array(x) for x in zip(*run.exposure, strict=True))
    return sp.csr_matrix(
        (w.astype(np.float64), (u.astype(np.int64), p.astype(np.int64))), shape=(n_users, n_providers)
    )


def metric_table(
    run: PolicyRun, days: int, weights: np.ndarray, exposure: sp.csr_matrix
) -> dict[str, np.ndarray]:
    """Every metric for each column of `weights` (N, R): user multiplicities (ones = the sample)."""
    n = weights.sum(axis=0)
    slots = run.slots @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = np.where(slots > 0, (run.tail_slots @ weights) / slots, 0.0)
    return {
        "reward_per_user_day": (run.reward @ weights) / (n * days),
        "unsubscribe_rate": ((run.unsubscribed_day >= 0).astype(np.float64) @ weights) / n,
        "long_tail_exposure_share": tail,
        "exposure_gini": _gini_columns(np.asarray(exposure.T @ weights)),
        "notifications_per_user_day": (run.messages @ weights) / (n * days),
    }


def summarise(
    run: PolicyRun, days: int, n_providers: int, rng: np.random.Generator, n_boot: int = 200
) -> dict[str, Any]:
    """The policy's SPEC metrics plus `ci95` {metric: [lo, hi]} (rounded, deterministic)."""
    n_users = run.reward.shape[0]
    exposure = exposure_matrix(run, n_users, n_providers)
    point = metric_table(run, days, np.ones((n_users, 1)), exposure)
    draws = rng.integers(0, n_users, size=(n_boot, n_users))
    weights = np.zeros((n_users, n_boot))
    for r in range(n_boot):
        weights[:, r] = np.bincount(draws[r], minlength=n_users)
    reps = metric_table(run, days, weights, exposure)
    out: dict[str, Any] = {m: round(float(point[m][0]), DIGITS) for m in METRICS}
    out["ci95"] = {m: _normal_interval(m, float(point[m][0]), reps[m]) for m in METRICS}
    return out


BOUNDED = frozenset({"unsubscribe_rate", "long_tail_exposure_share", "exposure_gini"})  # within [0, 1]


def _normal_interval(metric: str, theta: float, replicates: np.ndarray) -> list[float]:
    half = 1.96 * float(np.std(replicates, ddof=1))
    hi = min(theta + half, 1.0) if metric in BOUNDED else theta + half
    return [round(max(theta - half, 0.0), DIGITS), round(hi, DIGITS)]


def lorenz(run: PolicyRun, n_providers: int, exposed_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of provider exposure: cumulative share of providers (x) vs of exposure (y), over
    the whole catalogue or only the providers that got any exposure."""
    n_users = run.reward.shape[0]
    totals = np.sort(np.asarray(exposure_matrix(run, n_users, n_providers).sum(axis=0)).ravel())
    if exposed_only:
        totals = totals[totals > 0]
    y = np.concatenate([[0.0], np.cumsum(totals) / max(totals.sum(), 1e-12)])
    x = np.linspace(0.0, 1.0, y.size)
    return x, y
