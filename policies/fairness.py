"""Fairness of exposure: trade relevance for exposure equity with one knob λ.

Each candidate j of provider p(j) gets a utility

    u_j = (1 - λ) · rel_j + λ · need_p(j)

with `rel` the relevance scores min-max scaled to [0, 1] over the candidate set and
`need_p = 1 - e_p / max_q e_q` (e = provider exposure so far, max over the candidates' providers;
all needs are 1 when nobody has exposure yet). The re-ranker sorts by u. With position weights
w_r = 1/log2(r+2) that ordering *exactly* maximises

    (1 - λ) · Σ_r w_r rel_{a_r}  +  λ · Σ_r w_r need_{p(a_r)}          (rearrangement inequality)

i.e. satisfaction plus `exposure_equity` — attention routed to the providers that had the least.
Because the ranking is an exact maximiser of this linear scalarisation, raising λ can never lower
`exposure_equity` (and never raises the relevance part): if λ2 > λ1 had optima with E2 < E1, the two
optimality inequalities would force λ1/(1-λ1) ≥ λ2/(1-λ2), a contradiction. λ = 0 is the pure
relevance order (ties by higher raw score, then lower index). Whether this lowers the exposure *Gini*
over time is an empirical matter (tests/policies/test_fairness.py measures it on a repeated
instance); per slate the guarantee is on `exposure_equity`.

The second fairness tool, the amortized long-tail quota, lives in `policies.exposure.long_tail_quota`
and is enforced by `policies.slate.choose_slate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tagloop.policies.exposure import ProviderExposure, position_weights
from tagloop.tools.errors import InvalidInput


def normalized_relevance(scores: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] (all ones when every score is equal)."""
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:
        return np.ones_like(scores, dtype=np.float64)
    span = hi - lo
    if not np.isfinite(span):  # finite scores whose range overflows (1e308 and -1e308): halve first
        return (scores / 2 - lo / 2) / (hi / 2 - lo / 2)
    return (scores - lo) / span


def exposure_need(providers: Sequence[str], exposure: ProviderExposure | Mapping[str, float]) -> np.ndarray:
    """`1 - e_p / max e` per candidate (1 for never-exposed providers, 0 for the most exposed)."""
    table = exposure.exposure if isinstance(exposure, ProviderExposure) else exposure
    get = table.get
    e = np.array([get(p, 0.0) for p in providers], dtype=np.float64)
    if not np.isfinite(e).all():
        raise InvalidInput("provider exposure must be finite numbers")
    top = float(e.max()) if e.size else 0.0
    if top <= 0.0:
        return np.ones_like(e)
    return 1.0 - e / top


def fair_utility(scores: np.ndarray, need: np.ndarray, lam: float) -> np.ndarray:
    """`(1 - λ) · normalized relevance + λ · need`."""
    if not 0.0 <= lam <= 1.0:
        raise InvalidInput(f"fairness lambda must be in [0, 1], got {lam}")
    return (1.0 - lam) * normalized_relevance(scores) + lam * need


def fair_rerank(
    scores: np.ndarray,
    providers: Sequence[str],
    exposure: ProviderExposure | Mapping[str, float],
    lam: float,
    k: int | None = None,
) -> np.ndarray:
    """Candidate indices ordered by fair utility (top k when given); λ = 0 is pure relevance."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(providers) != scores.shape[0]:
        raise InvalidInput("scores must be 1-D with one provider per candidate")
    if not np.all(np.isfinite(scores)):
        raise InvalidInput("scores must be finite numbers")
    u = fair_utility(scores, exposure_need(providers, exposure), lam)
    order = np.lexsort((np.arange(scores.shape[0]), -scores, -u))
    return order if k is None else order[:k]


def exposure_equity(actions: Sequence[int] | np.ndarray, need: np.ndarray) -> float:
    """Σ_r w_r · need of the provider at rank r: exposure this slate gives to under-exposed providers."""
    acts = np.asarray(actions, dtype=np.int64)
    return float(np.dot(position_weights(acts.size), need[acts]))
