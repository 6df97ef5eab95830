"""Bootstrap intervals for per-round estimator contributions, seeded.

`bootstrap_ci` is the plain form (resample the rounds of one contribution array, take the mean);
`percentile_interval` turns replicate values from a refitting bootstrap (see `evaluate`) into the
same percentile interval. Reference: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993).
"""

from __future__ import annotations

import numpy as np

from tagloop.tools.errors import InvalidInput


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap replicate values."""
    if not 0 < level < 1:
        raise InvalidInput(f"confidence level must lie in (0, 1), got {level}")
    if replicates.size == 0:
        raise InvalidInput("no bootstrap replicates to form an interval from")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_means(
    values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000, chunk: int = 200
) -> np.ndarray:
    """n_boot means of `values` (n,) resampled with replacement, shape (n_boot,)."""
    if n_boot < 1:
        raise InvalidInput(f"n_boot must be ≥ 1, got {n_boot}")
    n = values.shape[0]
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def bootstrap_ci(
    values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(values) for per-round contributions `values` (n,)."""
    return percentile_interval(bootstrap_means(values, rng, n_boot), level)
