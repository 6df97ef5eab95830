"""Exploration over slates, with the exact probability of every slot.

A slate is filled slot by slot. For each slot the policy forms one probability distribution over the
candidates still *eligible* (not yet placed, and — when a long-tail quota binds — long-tail):

    P(j) = (1 - ε) · base(j) + ε · [j ∈ pool] / |pool|

- `base` is the point mass on the best eligible utility (`temperature == 0`, ties → lowest index)
  or the softmax `exp(u_j / T) / Σ exp(u_i / T)` over eligible candidates (`temperature > 0`:
  sequential softmax sampling without replacement is exactly Plackett-Luce).
- the ε share is the "random slots" idea (as Spotify reserves some home slots for discovery): with
  probability ε the slot is drawn uniformly from the exploration `pool` (all eligible candidates or
  only long-tail ones; an empty pool falls back to all eligible).

The chosen item is drawn from P with one `rng.random()` (inverse CDF), and `P(chosen)` is its
propensity *given the earlier slots* — exact, not estimated. Multiplying over slots gives the
probability of the ordered slate. `slot_probabilities` exposes the whole distribution, so an
evaluator can compute any policy's probability of a logged slate (see `policies.slate.score_slate`).
"""

from __future__ import annotations

import numpy as np

from tagloop.policies.decision import Decision
from tagloop.tools.errors import InvalidInput


def slot_probabilities(
    utility: np.ndarray,
    eligible: np.ndarray,
    pool: np.ndarray | None,
    epsilon: float,
    temperature: float,
) -> np.ndarray:
    """The distribution of one slot over all n candidates (zeros outside `eligible`); sums to 1.

    utility: (n,) float; eligible, pool: (n,) bool masks (pool is intersected with eligible).
    """
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        raise InvalidInput("no eligible candidate left for this slot")
    probs = np.zeros(utility.shape[0], dtype=np.float64)
    if epsilon < 1.0:
        u = utility[idx]
        if temperature > 0.0:
            z = (u - u.max()) / temperature
            e = np.exp(z)
            probs[idx] = (1.0 - epsilon) * (e / e.sum())
        else:
            probs[idx[int(np.argmax(u))]] = 1.0 - epsilon
    if epsilon > 0.0:
        pidx = idx if pool is None else np.flatnonzero(eligible & pool)
        if pidx.size == 0:
            pidx = idx
        probs[pidx] += epsilon / pidx.size
    return probs


def argmax_slot(
    utility: np.ndarray,
    eligible: np.ndarray,
    pool: np.ndarray | None,
    epsilon: float,
    rng: np.random.Generator | None,
    forced: int | None = None,
) -> tuple[int, float]:
    """Fast path of `slot_probabilities` + `draw` for temperature 0: `(chosen index, its probability)`.

    One `rng.random()` r decides both the branch and the pick: r < ε explores, taking pool item
    `floor(r / ε · |pool|)` (uniform given r < ε); otherwise the best eligible utility. With
    `forced` set, no draw happens and the probability of `forced` is returned.
    """
    masked = np.where(eligible, utility, -np.inf)
    best = int(masked.argmax())
    if not eligible[best]:
        raise InvalidInput("no eligible candidate left for this slot")
    explore: np.ndarray | None = None  # mask of the exploration pool (its size is all a slot needs)
    size = 0
    if epsilon > 0:
        explore = eligible if pool is None else eligible & pool
        size = int(np.count_nonzero(explore))
        if size == 0:
            explore, size = eligible, int(np.count_nonzero(eligible))
    if forced is not None:
        j = forced
    elif explore is not None and rng is not None:
        r = rng.random()
        j = int(np.flatnonzero(explore)[min(int(r / epsilon * size), size - 1)]) if r < epsilon else best
    else:
        j = best
    p = (1.0 - epsilon) * (j == best)
    if explore is not None and bool(explore[j]):
        p += epsilon / size
    return j, float(p)


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Inverse-CDF draw of one index from `probs` with a single `rng.random()`; a zero-probability
    index is never returned."""
    cum = np.cumsum(probs)
    j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return min(j, probs.shape[0] - 1)


def _sequential(
    utility: np.ndarray,
    k: int,
    epsilon: float,
    temperature: float,
    rng: np.random.Generator,
    pool: np.ndarray | None,
) -> tuple[list[int], list[float]]:
    n = utility.shape[0]
    if k < 1:
        raise InvalidInput(f"slate size k must be at least 1, got {k}")
    if n == 0:
        raise InvalidInput("no candidates to choose from")
    if not np.all(np.isfinite(utility)):
        raise InvalidInput("scores must be finite numbers")
    eligible = np.ones(n, dtype=bool)
    actions: list[int] = []
    props: list[float] = []
    for _ in range(min(k, n)):
        probs = slot_probabilities(utility, eligible, pool, epsilon, temperature)
        j = draw(probs, rng)
        actions.append(j)
        props.append(float(probs[j]))
        eligible[j] = False
    return actions, props


def epsilon_slots(
    scores: np.ndarray,
    k: int,
    epsilon: float,
    rng: np.random.Generator,
    pool: np.ndarray | None = None,
    seed: int | None = None,
) -> Decision:
    """Fill each of k slots greedily with probability 1-ε, else uniformly from the (remaining)
    pool; returns the chosen indices and the exact conditional probability of each choice."""
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInput(f"epsilon must be in [0, 1], got {epsilon}")
    scores = np.asarray(scores, dtype=np.float64)
    actions, props = _sequential(scores, k, epsilon, 0.0, rng, pool)
    return Decision(tuple(actions), tuple(props), "epsilon_slots", "1", seed)


def plackett_luce(
    scores: np.ndarray, k: int, temperature: float, rng: np.random.Generator, seed: int | None = None
) -> Decision:
    """Sample a slate of k from the Plackett-Luce model with weights `exp(score / temperature)`;
    each propensity is the softmax probability of the chosen item among those still left."""
    if temperature <= 0.0:
        raise InvalidInput(f"temperature must be positive, got {temperature}")
    scores = np.asarray(scores, dtype=np.float64)
    actions, props = _sequential(scores, k, 0.0, temperature, rng, None)
    return Decision(tuple(actions), tuple(props), "plackett_luce", "1", seed)


def uniform_slate(n: int, k: int, rng: np.random.Generator, seed: int | None = None) -> Decision:
    """A uniformly random ordered slate of min(k, n) of n candidates (propensity 1/(n - slot))."""
    actions, props = _sequential(np.zeros(n), k, 1.0, 0.0, rng, None)
    return Decision(tuple(actions), tuple(props), "uniform", "1", seed)
