"""Arm bandits for the agent's small choices (message template, channel, send hour), with propensities.

- Beta-Bernoulli Thompson sampling: arm a has posterior Beta(α0 + successes_a, β0 + failures_a);
  draw one θ per arm, play the argmax. The propensity of arm a is P(θ_a is the largest)
  = ∫ Π_{b≠a} F_b(x) dF_a(x). `method="exact"` evaluates that integral numerically, with no
  randomness: composite Simpson on the Riemann–Stieltjes integral (each cell's F_a and Π F_b
  interpolated quadratically) over a grid of 20 points per arm placed in logit space around the
  arm's analytic logit mean ± up to ~8 sd (digamma/trigamma; the logit of a Beta is close to
  normal), so only `betainc` (the CDF) is evaluated — no quantile inversion. Absolute error
  ≲ 3e-5 per arm (tests/policies/test_policy_bandits.py checks it against adaptive quadrature).
  `thompson_probabilities_batch` does many users' arms in one vectorised call.
  `method="mc"` counts argmaxes over `n_mc` joint draws from the given generator, plus the played
  draw (so an arm played is never logged with propensity 0).
- Linear (contextual) Thompson sampling, disjoint models (one Bayesian ridge regression per arm over
  the user's feature vector x, as in LinUCB's disjoint variant): posterior θ_a ~ N(A_a⁻¹ b_a,
  v² A_a⁻¹), so the arm's sampled score x·θ_a ~ N(x·μ_a, v² xᵀA_a⁻¹x); the propensity is again the
  probability that arm's normal is the largest, computed by the same quadrature.
- `choose_arm` dispatches on the POLICY.toml `[bandits] strategy` ("thompson", "uniform" for the
  random baseline, "greedy" = highest posterior mean for the greedy baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from tagloop.policies.config import BanditConfig
from tagloop.tools.errors import InvalidInput

_U = np.concatenate([[1e-12, 1e-9, 1e-6, 1e-4], np.linspace(0.001, 0.999, 128), [1 - 1e-4, 1 - 1e-6]])


def _prob_of_max(
    ppf: Callable[[np.ndarray], np.ndarray], cdf: Callable[[np.ndarray], np.ndarray], k: int
) -> np.ndarray:
    """P(arm a's draw is the largest) for independent continuous arms, given vectorised
    ppf/cdf mapping a (K, m) array row-wise (row a = arm a)."""
    grid = np.unique(ppf(np.broadcast_to(_U, (k, _U.size))).ravel())
    f = cdf(np.broadcast_to(grid, (k, grid.size)))  # (K, M)
    f = np.clip(f, 0.0, 1.0)
    # Leave-one-out products of the other arms' CDFs, via prefix/suffix products.
    ones = np.ones((1, grid.size))
    prefix = np.cumprod(np.vstack([ones, f[:-1]]), axis=0)
    suffix = np.cumprod(np.vstack([ones, f[::-1][:-1]]), axis=0)[::-1]
    others = prefix * suffix
    g_mid = 0.5 * (others[:, 1:] + others[:, :-1])
    d_f = np.diff(f, axis=1)
    # mass of arm a below the grid times P(others below grid start), plus the sum over cells
    probs = f[:, 0] * others[:, 0] + np.sum(d_f * g_mid, axis=1) + (1.0 - f[:, -1]) * others[:, -1]
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum()


# Grid offsets (in logit-sd units) per arm: dense near the centre, reaching ±8.2 sd in the tails.
_Z = np.sinh(np.linspace(-2.8, 2.8, 20))


def _thompson_simpson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(arm is the largest) for Beta(a, b) arms, rows = independent problems: (n, K) → (n, K)."""
    n = a.shape[0]
    centre = special.digamma(a) - special.digamma(b)
    spread = np.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
    points = special.expit(centre[:, :, None] + spread[:, :, None] * _Z).reshape(n, -1)
    grid = np.sort(np.concatenate([np.zeros((n, 1)), points, np.ones((n, 1))], axis=1), axis=1)
    x = np.empty((n, 2 * grid.shape[1] - 1))
    x[:, ::2] = grid
    x[:, 1::2] = 0.5 * (grid[:, 1:] + grid[:, :-1])
    f = special.betainc(a[:, :, None], b[:, :, None], x[:, None, :])  # (n, K, M): every arm's CDF
    ones = np.ones((n, 1, x.shape[1]))
    prefix = np.cumprod(np.concatenate([ones, f[:, :-1]], axis=1), axis=1)
    suffix = np.cumprod(np.concatenate([ones, f[:, :0:-1]], axis=1), axis=1)[:, ::-1]
    others = prefix * suffix  # Π_{b≠a} F_b at every point
    f0, fm, f1 = f[..., :-1:2], f[..., 1::2], f[..., 2::2]
    o0, om, o1 = others[..., :-1:2], others[..., 1::2], others[..., 2::2]
    # ∫ O dF over a cell with O and F quadratic through (start, middle, end): Simpson on O·F'.
    cells = o0 * (4.0 * fm - 3.0 * f0 - f1) + 4.0 * om * (f1 - f0) + o1 * (f0 - 4.0 * fm + 3.0 * f1)
    probs = np.clip(cells.sum(axis=2), 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def _beta_params(successes: np.ndarray, failures: np.ndarray, a0: float, b0: float) -> tuple[np.ndarray, ...]:
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    if s.ndim != 1 or s.shape != f.shape or s.size == 0:
        raise InvalidInput("successes and failures must be 1-D arrays of the same non-zero length")
    if np.any(s < 0) or np.any(f < 0) or not (np.all(np.isfinite(s)) and np.all(np.isfinite(f))):
        raise InvalidInput("successes and failures must be finite and non-negative")
    return a0 + s, b0 + f


def thompson_probabilities(
    successes: np.ndarray, failures: np.ndarray, prior: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Exact-by-quadrature probability that Beta-Bernoulli TS plays each arm (sums to 1)."""
    a, b = _beta_params(successes, failures, *prior)
    if a.size == 1:
        return np.ones(1)
    return _thompson_simpson(a[None], b[None])[0]


def thompson_probabilities_batch(
    successes: np.ndarray, failures: np.ndarray, prior: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """`thompson_probabilities` for n independent problems with K arms each: (n, K) → (n, K)."""
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    if s.ndim != 2 or s.shape != f.shape or s.shape[1] == 0:
        raise InvalidInput("successes and failures must be (n, K) arrays of the same shape, K ≥ 1")
    if np.any(s < 0) or np.any(f < 0) or not (np.all(np.isfinite(s)) and np.all(np.isfinite(f))):
        raise InvalidInput("successes and failures must be finite and non-negative")
    if s.shape[1] == 1 or s.shape[0] == 0:
        return np.ones(s.shape)
    return _thompson_simpson(prior[0] + s, prior[1] + f)


def thompson_choose(
    successes: np.ndarray,
    failures: np.ndarray,
    rng: np.random.Generator,
    n_mc: int = 2000,
    prior: tuple[float, float] = (1.0, 1.0),
    method: str = "exact",
) -> tuple[int, float]:
    """Play Beta-Bernoulli Thompson sampling once: `(arm, propensity)`."""
    a, b = _beta_params(successes, failures, *prior)
    arm = int(np.argmax(rng.beta(a, b)))
    if method == "exact":
        return arm, float(thompson_probabilities(successes, failures, prior)[arm])
    if method == "mc":
        draws = rng.beta(a, b, size=(n_mc, a.size))
        counts = np.bincount(np.argmax(draws, axis=1), minlength=a.size)
        # the played draw counts too: an arm played but never the argmax of the n_mc draws would
        # otherwise log propensity 0 (an infinite importance weight)
        return arm, float((counts[arm] + 1) / (n_mc + 1))
    raise InvalidInput(f"unknown propensity method {method!r}; use 'exact' or 'mc'")


@dataclass(frozen=True)
class LinearTSModel:
    """Per-arm ridge posteriors: precision `A` (K, d, d), response `b` (K, d), noise scale v."""

    A: np.ndarray
    b: np.ndarray
    noise: float = 0.5

    @classmethod
    def new(cls, n_arms: int, dim: int, ridge: float = 1.0, noise: float = 0.5) -> LinearTSModel:
        if n_arms < 1 or dim < 1:
            raise InvalidInput("a linear bandit needs at least one arm and one feature")
        return cls(np.repeat(ridge * np.eye(dim)[None], n_arms, axis=0), np.zeros((n_arms, dim)), noise)

    def score_distribution(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each arm's sampled score x·θ_a."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.b.shape[1],) or not np.all(np.isfinite(x)):
            raise InvalidInput(f"context features must be {self.b.shape[1]} finite numbers")
        mu = np.linalg.solve(self.A, self.b[..., None])[..., 0]
        ainv_x = np.linalg.solve(self.A, np.broadcast_to(x, self.b.shape)[..., None])[..., 0]
        return mu @ x, self.noise * np.sqrt(np.maximum(ainv_x @ x, 1e-300))


def linear_ts_probabilities(model: LinearTSModel, x: np.ndarray) -> np.ndarray:
    """Probability that linear TS plays each arm for context x (sums to 1)."""
    mean, sd = model.score_distribution(x)
    if mean.size == 1:
        return np.ones(1)
    return _prob_of_max(
        lambda u: mean[:, None] + sd[:, None] * special.ndtri(u),
        lambda z: special.ndtr((z - mean[:, None]) / sd[:, None]),
        mean.size,
    )


def linear_ts_choose(model: LinearTSModel, x: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
    """Play linear Thompson sampling once for context x: `(arm, propensity)`."""
    mean, sd = model.score_distribution(x)
    arm = int(np.argmax(mean + sd * rng.standard_normal(mean.size)))
    return arm, float(linear_ts_probabilities(model, x)[arm])


def linear_ts_update(model: LinearTSModel, arm: int, x: np.ndarray, reward: float) -> LinearTSModel:
    """The posterior after observing `reward` for `arm` in context x (a new model; input unchanged)."""
    if not 0 <= arm < model.b.shape[0]:
        raise InvalidInput(f"arm must be in 0..{model.b.shape[0] - 1}, got {arm}")
    x = np.asarray(x, dtype=np.float64)
    A, b = model.A.copy(), model.b.copy()
    A[arm] += np.outer(x, x)
    b[arm] += reward * x
    return LinearTSModel(A, b, model.noise)


def choose_arm(
    cfg: BanditConfig, successes: np.ndarray, failures: np.ndarray, rng: np.random.Generator
) -> tuple[int, float]:
    """Pick an arm per the configured strategy: `(arm, propensity)`."""
    prior = (cfg.prior_alpha, cfg.prior_beta)
    a, b = _beta_params(successes, failures, *prior)
    if cfg.strategy == "uniform":
        return int(rng.integers(a.size)), 1.0 / a.size
    if cfg.strategy == "greedy":
        return int(np.argmax(a / (a + b))), 1.0
    return thompson_choose(successes, failures, rng, cfg.n_mc, prior, cfg.propensity)
