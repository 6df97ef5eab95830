"""Off-policy estimators as pure functions over logged-bandit arrays (Open Bandit Pipeline style).

Every estimator returns the per-round contributions `c` (shape (n_rounds,)); the estimate of the
target policy's value is `c.mean()` and a confidence interval is a bootstrap of the same rounds.

Shared array shapes (n rounds, A actions, L positions / slots):
- `reward`      (n,)      observed reward r_i (click 0/1 in OBD)
- `action`      (n,)      int, logged action a_i in [0, A)
- `position`    (n,)      int, slot k_i in [0, L) where a_i was shown
- `pscore`      (n,)      logging policy's probability π_b(a_i | x_i, k_i)
- `action_dist` (n, A, L) target policy's distribution π_e(a | x_i, k) (a broadcast view is fine)
- `q_hat`       (n, A, L) reward model q̂(x_i, a, k) ≈ E[r | x_i, a, k]

With w_i = π_e(a_i | x_i, k_i) / π_b(a_i | x_i, k_i) and
q̂_π(x_i) = Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i):
- IPS        w_i r_i                                            (Horvitz & Thompson 1952)
- SNIPS      w_i r_i / mean(w)                                  (Swaminathan & Joachims 2015)
- DM         q̂_π(x_i)                                           (Beygelzimer & Langford 2009)
- DR         q̂_π(x_i) + w_i (r_i − q̂(x_i, a_i, k_i))            (Dudík, Langford & Li 2011)
- switch-DR  q̂_π(x_i) + 1[w_i ≤ τ] w_i (r_i − q̂(x_i, a_i, k_i)) (Wang, Agarwal & Dudík 2017)
- DR-OS      q̂_π(x_i) + λw_i/(w_i² + λ) (r_i − q̂(x_i, a_i, k_i)) (Su et al. 2020)
"""

from __future__ import annotations

import numpy as np

from tagloop.tools.errors import InvalidInput

Array = np.ndarray


def _check(action: Array, position: Array, action_dist: Array, *others: Array) -> int:
    n = action.shape[0]
    if action_dist.ndim != 3 or action_dist.shape[0] != n:
        raise InvalidInput(
            f"action_dist must have shape (n_rounds={n}, n_actions, len_list), got {action_dist.shape}"
        )
    for arr in (position, *others):
        if arr.shape != (n,):
            raise InvalidInput(f"per-round arrays must have shape ({n},), got {arr.shape}")
    return n


def at_position(arr: Array, position: Array) -> Array:
    """Slice an (n, A, L) array at each round's own position: returns (n, A) with row i = arr[i, :, k_i]."""
    if arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr[np.arange(arr.shape[0]), :, position]


def own_position(arr: Array, position: Array) -> Array:
    """(n, A, L) → (n, A, 1) holding each round's own position; with position 0 everywhere, every
    estimator gives the same per-round values on it (they only read arr[i, :, k_i]) at 1/L the cost."""
    return at_position(arr, position)[:, :, None]


def importance_weight(action: Array, position: Array, pscore: Array, action_dist: Array) -> Array:
    """w_i = π_e(a_i | x_i, k_i) / π_b(a_i | x_i, k_i), shape (n,)."""
    n = _check(action, position, action_dist, pscore)
    if np.any(pscore <= 0):
        raise InvalidInput("pscore (logging propensity) must be > 0 for every logged round")
    return action_dist[np.arange(n), action, position] / pscore


def ips(reward: Array, action: Array, position: Array, pscore: Array, action_dist: Array) -> Array:
    """Inverse propensity scoring: c_i = w_i r_i. Unbiased when pscore is exact."""
    _check(action, position, action_dist, reward)
    return importance_weight(action, position, pscore, action_dist) * reward


def snips(reward: Array, action: Array, position: Array, pscore: Array, action_dist: Array) -> Array:
    """Self-normalised IPS: c_i = w_i r_i / mean(w). Slightly biased, bounded by max reward."""
    _check(action, position, action_dist, reward)
    w = importance_weight(action, position, pscore, action_dist)
    mean_w = w.mean()
    if mean_w <= 0:
        raise InvalidInput("the target policy puts no mass on any logged action; SNIPS is undefined")
    return w * reward / mean_w


def dm(position: Array, action_dist: Array, q_hat: Array) -> Array:
    """Direct method: c_i = Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i). Low variance, biased as q̂ is."""
    if q_hat.shape[:2] != action_dist.shape[:2] or q_hat.shape[2] != action_dist.shape[2]:
        raise InvalidInput(f"q_hat shape {q_hat.shape} must match action_dist shape {action_dist.shape}")
    return np.einsum("ia,ia->i", at_position(action_dist, position), at_position(q_hat, position))


def _dr_family(
    reward: Array,
    action: Array,
    position: Array,
    pscore: Array,
    action_dist: Array,
    q_hat: Array,
    residual_weight: Array | None,
) -> Array:
    """q̂_π(x_i) + v_i (r_i − q̂(x_i, a_i, k_i)) with v = w (plain DR) or the given modified weights."""
    _check(action, position, action_dist, reward)
    w = importance_weight(action, position, pscore, action_dist)
    n = w.shape[0]
    residual = reward - q_hat[np.arange(n), action, position]
    weight = w if residual_weight is None else residual_weight
    return dm(position, action_dist, q_hat) + weight * residual


def dr(
    reward: Array, action: Array, position: Array, pscore: Array, action_dist: Array, q_hat: Array
) -> Array:
    """Doubly robust: c_i = q̂_π(x_i) + w_i (r_i − q̂(x_i, a_i, k_i)). Unbiased when pscore is exact."""
    return _dr_family(reward, action, position, pscore, action_dist, q_hat, None)


def switch_dr(
    reward: Array,
    action: Array,
    position: Array,
    pscore: Array,
    action_dist: Array,
    q_hat: Array,
    tau: float,
) -> Array:
    """Switch-DR: the DR correction only on rounds with w_i ≤ τ (τ=∞ is DR, τ=0 is DM)."""
    if tau < 0:
        raise InvalidInput(f"switch-DR threshold tau must be ≥ 0, got {tau}")
    w = importance_weight(action, position, pscore, action_dist)
    return _dr_family(reward, action, position, pscore, action_dist, q_hat, np.where(w <= tau, w, 0.0))


def dr_os(
    reward: Array,
    action: Array,
    position: Array,
    pscore: Array,
    action_dist: Array,
    q_hat: Array,
    lambda_: float,
) -> Array:
    """DR with optimistic shrinkage: weight λw/(w²+λ) on the residual (λ=∞ is DR, λ=0 is DM)."""
    if lambda_ < 0:
        raise InvalidInput(f"DR-OS shrinkage lambda must be ≥ 0, got {lambda_}")
    w = importance_weight(action, position, pscore, action_dist)
    shrunk = np.zeros_like(w) if lambda_ == 0 else lambda_ * w / (w**2 + lambda_)
    return _dr_family(reward, action, position, pscore, action_dist, q_hat, shrunk)
