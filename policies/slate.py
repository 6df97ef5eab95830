"""`choose_slate`: the one composition the agent calls per user, and `score_slate` for evaluators.

Pipeline, all inside one slot-by-slot loop so every slot's probability is exact:

1. relevance: the recommender's `scores` (raw when no re-ranking knob is on, else min-max scaled);
2. fairness: `u = (1 - λ) · rel + λ · need(provider)` (`policies.fairness`);
3. diversity/calibration: per slot, `(1 - λ_mmr - λ_cal) · u - λ_mmr · maxsim - λ_cal · KL`
   (`policies.diversity`; skipped when `item_tags` is None, calibration also when
   `user_tag_mix` is None — `context["skipped"]` says so);
4. long-tail quota: once the slots left equal the long-tail slots still owed
   (`policies.exposure.long_tail_quota`, amortized over the `ProviderExposure` history; per slate
   `ceil(share · k)` when exposure is a plain mapping), only long-tail candidates are eligible;
5. exploration: the slot is drawn from `(1 - ε) · base + ε · uniform(pool)` where base is the
   argmax (temperature 0) or the Plackett-Luce softmax (`policies.exploration`).

`Decision.propensities[i]` is P(slot i = actions[i] | inputs, slots 0..i-1) under this pipeline.
`score_slate` runs the same loop with the actions forced, giving any policy's propensities for a
logged slate (zero where the policy could not have made that choice) — what off-policy estimators
need. Both are pure: no clock, no database, randomness only from the given generator or seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from tagloop.policies.config import PolicyConfig
from tagloop.policies.decision import Decision
from tagloop.policies.diversity import CalibrationState, MMRState, TagMatrix
from tagloop.policies.exploration import argmax_slot, draw, slot_probabilities
from tagloop.policies.exposure import ProviderExposure, long_tail_quota
from tagloop.policies.fairness import exposure_need, normalized_relevance
from tagloop.tools.errors import InvalidInput

Exposure: TypeAlias = ProviderExposure | Mapping[str, float]


def choose_slate(
    cfg: PolicyConfig,
    scores: np.ndarray,
    providers: Sequence[str],
    item_tags: TagMatrix | None,
    user_tag_mix: np.ndarray | None,
    exposure: Exposure,
    long_tail: np.ndarray,
    rng: np.random.Generator | int,
    *,
    item_ids: Sequence[str] | None = None,
    context: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> Decision:
    """Choose min(cfg.k, n) of n candidates; see the module docstring for the pipeline.

    scores: (n,) relevance; providers: n provider names; item_tags: (n × n_tags) dense or sparse;
    user_tag_mix: (n_tags,) the user's tag weights; exposure: per-provider exposure so far;
    long_tail: (n,) bool, candidate's provider is long-tail; rng: a seeded generator, or an int
    seed (then recorded in the decision); item_ids: candidate ids stored in the decision.
    """
    if isinstance(rng, int | np.integer):
        seed = int(rng)
        rng = np.random.default_rng(seed)
    _check_inputs(item_tags, item_ids)
    actions, props, facts = _run(cfg, scores, providers, item_tags, user_tag_mix, exposure, long_tail, rng)
    facts["replay"] = replay_inputs(providers, exposure, long_tail)
    return Decision(
        actions=tuple(actions),
        propensities=tuple(props),
        policy=cfg.name,
        version=cfg.version,
        seed=seed,
        candidates=tuple(map(str, item_ids)) if item_ids is not None else None,
        scores=tuple(np.asarray(scores, dtype=np.float64).tolist()),
        context={**(context or {}), **facts},
    )


def _check_inputs(item_tags: TagMatrix | None, item_ids: Sequence[str] | None) -> None:
    """What `_run` does not check itself: finite tag weights (NaN made MMR pick an item twice) and
    distinct candidate ids."""
    data = getattr(item_tags, "data", None) if sp.issparse(item_tags) else item_tags
    if isinstance(data, np.ndarray) and not np.isfinite(data).all():
        raise InvalidInput("item tag weights must be finite numbers")
    if item_ids is not None and len(set(item_ids)) != len(item_ids):
        raise InvalidInput("item_ids must be distinct: a candidate appears twice")


def replay_inputs(providers: Sequence[str], exposure: Exposure, long_tail: np.ndarray) -> dict[str, Any]:
    """The inputs of a slate that its candidate arrays (ids, scores, providers) do not carry, for an
    offline replay (`score_slate` in evals/ope/logs.py): the long-tail candidates (indices), the
    exposure of the candidates' providers (those with any) and, for a `ProviderExposure`, its slot
    counts (the amortized long-tail quota). Item tags are not here: the decision export adds them."""
    table = exposure.exposure if isinstance(exposure, ProviderExposure) else exposure
    get = table.get
    out: dict[str, Any] = {
        "long_tail": np.flatnonzero(long_tail).tolist(),
        "exposure": {p: float(e) for p in dict.fromkeys(providers) if (e := get(p, 0.0))},
    }
    if isinstance(exposure, ProviderExposure):
        out["exposure_slots"] = [exposure.slots_total, exposure.long_tail_slots]
    return out


def score_slate(
    cfg: PolicyConfig,
    scores: np.ndarray,
    providers: Sequence[str],
    item_tags: TagMatrix | None,
    user_tag_mix: np.ndarray | None,
    exposure: Exposure,
    long_tail: np.ndarray,
    actions: Sequence[int],
) -> np.ndarray:
    """Conditional propensities this policy would give the ordered slate `actions` (same inputs as
    `choose_slate`); an entry is 0 where the policy could not have placed that action."""
    _, props, _ = _run(cfg, scores, providers, item_tags, user_tag_mix, exposure, long_tail, None, actions)
    return np.asarray(props, dtype=np.float64)


def _run(
    cfg: PolicyConfig,
    scores: np.ndarray,
    providers: Sequence[str],
    item_tags: TagMatrix | None,
    user_tag_mix: np.ndarray | None,
    exposure: Exposure,
    long_tail: np.ndarray,
    rng: np.random.Generator | None,
    forced: Sequence[int] | None = None,
) -> tuple[list[int], list[float], dict[str, Any]]:
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0] if s.ndim == 1 else 0
    if s.ndim != 1 or n == 0:
        raise InvalidInput("scores must be a non-empty 1-D array (one score per candidate)")
    if not np.all(np.isfinite(s)):
        raise InvalidInput("scores must be finite numbers")
    if len(providers) != n:
        raise InvalidInput(f"got {len(providers)} providers for {n} candidates")
    tail = np.asarray(long_tail)
    if tail.shape != (n,) or tail.dtype != np.bool_:
        raise InvalidInput(f"long_tail must be a bool array of length {n}")
    if item_tags is not None and item_tags.shape[0] != n:
        raise InvalidInput(f"item_tags has {item_tags.shape[0]} rows for {n} candidates")

    fair, div, ex = cfg.fairness, cfg.diversity, cfg.exploration
    skipped: list[str] = []
    mmr = div.mmr_lambda if item_tags is not None else 0.0
    cal = div.calibration_lambda if item_tags is not None and user_tag_mix is not None else 0.0
    if div.mmr_lambda > 0 and mmr == 0:
        skipped.append("mmr: no item_tags")
    if div.calibration_lambda > 0 and cal == 0:
        skipped.append("calibration: no item_tags or user_tag_mix")

    if fair.lambda_ == 0 and mmr == 0 and cal == 0 and ex.temperature == 0:
        static = s  # pure relevance: keep raw scores so the order is exactly theirs
    else:
        static = normalized_relevance(s)
        if fair.lambda_ > 0:
            static = (1.0 - fair.lambda_) * static + fair.lambda_ * exposure_need(providers, exposure)
        static = (1.0 - mmr - cal) * static
    mmr_state = MMRState(item_tags) if mmr > 0 and item_tags is not None else None
    cal_state = (
        CalibrationState(item_tags, user_tag_mix, div.calibration_alpha)
        if cal > 0 and item_tags is not None and user_tag_mix is not None
        else None
    )

    k = min(cfg.k, n) if forced is None else len(forced)
    if forced is not None and (len(set(forced)) != k or k > n or any(not 0 <= a < n for a in forced)):
        raise InvalidInput(f"actions must be distinct candidate indices in 0..{n - 1}")
    quota = 0
    if fair.long_tail_min_share > 0:
        if isinstance(exposure, ProviderExposure):
            quota = long_tail_quota(
                k, fair.long_tail_min_share, exposure.slots_total, exposure.long_tail_slots
            )
        else:
            quota = long_tail_quota(k, fair.long_tail_min_share)
        quota = min(quota, int(tail.sum()))
    pool = tail if ex.pool == "long_tail" else None

    if ex.temperature == 0.0 and cal_state is None and pool is None and forced is None:
        actions, props = _greedy_slots(static, mmr, mmr_state, tail, k, quota, ex.epsilon, rng)
    else:
        actions, props = _slots(static, mmr, mmr_state, cal, cal_state, tail, pool, k, quota, ex, rng, forced)
    facts: dict[str, Any] = {
        "n_candidates": n,
        "long_tail_quota": quota,
        "chosen_long_tail": [bool(tail[a]) for a in actions],
        "chosen_providers": [str(providers[a]) for a in actions],
    }
    if skipped:
        facts["skipped"] = skipped
    return actions, props, facts


def _greedy_slots(
    static: np.ndarray,
    mmr: float,
    mmr_state: MMRState | None,
    tail: np.ndarray,
    k: int,
    quota: int,
    epsilon: float,
    rng: np.random.Generator | None,
) -> tuple[list[int], list[float]]:
    """`_slots` for the agent's usual case (temperature 0, no calibration, exploration over every
    candidate, nothing forced) with fewer array operations per slot: the placed items carry -inf
    in a copy of the static utility instead of a fresh eligibility mask each slot, and the
    eligible count is known without counting. Same picks, draws and propensities as `_slots`
    (tests/policies/test_policy_slate_fast.py)."""
    n = static.shape[0]
    avail = np.array(static, dtype=np.float64)  # -inf once placed
    taken = np.zeros(n, dtype=bool)
    actions: list[int] = []
    props: list[float] = []
    owed = quota
    for i in range(k):
        u = avail - mmr * mmr_state.penalty() if mmr_state is not None else avail
        if owed > 0 and owed >= k - i:  # only long-tail candidates are eligible now
            eligible = ~taken & tail
            u = np.where(eligible, u, -np.inf)
            size = int(np.count_nonzero(eligible))
        else:
            eligible, size = None, n - i
        best = int(u.argmax())
        if u[best] == -np.inf:
            raise InvalidInput("no eligible candidate left for this slot")
        j, p = best, 1.0 - epsilon
        if epsilon > 0 and rng is not None:
            r = rng.random()
            if r < epsilon:
                pick = np.flatnonzero(~taken if eligible is None else eligible)
                j = int(pick[min(int(r / epsilon * size), size - 1)])
                p = (1.0 - epsilon) * (j == best)
        if epsilon > 0:
            p += epsilon / size
        actions.append(j)
        props.append(float(p))
        taken[j] = True
        avail[j] = -np.inf
        owed -= int(tail[j])
        if i == k - 1:
            break
        if mmr_state is not None:
            mmr_state.add(j)
    return actions, props


def _slots(
    static: np.ndarray,
    mmr: float,
    mmr_state: MMRState | None,
    cal: float,
    cal_state: CalibrationState | None,
    tail: np.ndarray,
    pool: np.ndarray | None,
    k: int,
    quota: int,
    ex: Any,
    rng: np.random.Generator | None,
    forced: Sequence[int] | None,
) -> tuple[list[int], list[float]]:
    """The slot-by-slot loop (module docstring, steps 3-5)."""
    n = static.shape[0]
    taken = np.zeros(n, dtype=bool)
    actions: list[int] = []
    props: list[float] = []
    owed = quota
    for i in range(k):
        eligible = ~taken
        if owed > 0 and owed >= k - i:
            eligible &= tail
        u = static
        if mmr_state is not None:
            u = u - mmr * mmr_state.penalty()
        if cal_state is not None:
            u = u - cal * cal_state.penalty()
        if ex.temperature == 0.0:
            j, p = argmax_slot(u, eligible, pool, ex.epsilon, rng, None if forced is None else int(forced[i]))
        else:
            probs = slot_probabilities(u, eligible, pool, ex.epsilon, ex.temperature)
            j = int(forced[i]) if forced is not None else draw(probs, _need(rng))
            p = float(probs[j])
        actions.append(j)
        props.append(p)
        taken[j] = True
        owed -= int(tail[j])
        if i == k - 1:
            break
        if mmr_state is not None:
            mmr_state.add(j)
        if cal_state is not None:
            cal_state.add(j)
    return actions, props


def _need(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        raise InvalidInput("a random generator is needed to sample a slate")
    return rng
