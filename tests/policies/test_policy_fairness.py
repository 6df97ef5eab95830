"""Fairness of exposure: λ=0 is relevance, larger λ never lowers equity, the long-tail quota holds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.policies import (
    PolicyConfig,
    ProviderExposure,
    choose_slate,
    exposure_equity,
    exposure_gini,
    exposure_need,
    fair_rerank,
    head_providers,
    long_tail_providers,
    long_tail_quota,
    long_tail_share,
)

FAST = settings(max_examples=40, deadline=None)
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, list[str], dict[str, float]]:
    n = draw(st.integers(2, 25))
    scores = np.array(draw(st.lists(st.floats(-10, 10), min_size=n, max_size=n)))
    providers = [f"p{draw(st.integers(0, 6))}" for _ in range(n)]
    exposure = {f"p{i}": draw(st.floats(0, 50)) for i in range(7)}
    return scores, providers, exposure


@FAST
@given(inst=instances())
def test_lambda_zero_reproduces_pure_relevance(inst: tuple[np.ndarray, list[str], dict[str, float]]) -> None:
    scores, providers, exposure = inst
    order = fair_rerank(scores, providers, exposure, 0.0)
    assert list(order) == sorted(range(len(scores)), key=lambda i: (-scores[i], i))


@FAST
@given(inst=instances(), lams=st.tuples(st.floats(0, 1), st.floats(0, 1)), k=st.integers(1, 10))
def test_larger_lambda_never_lowers_exposure_equity(
    inst: tuple[np.ndarray, list[str], dict[str, float]], lams: tuple[float, float], k: int
) -> None:
    scores, providers, exposure = inst
    lo, hi = sorted(lams)
    need = exposure_need(providers, exposure)
    e_lo = exposure_equity(fair_rerank(scores, providers, exposure, lo, k), need)
    e_hi = exposure_equity(fair_rerank(scores, providers, exposure, hi, k), need)
    assert e_hi >= e_lo - 1e-9


def test_choose_slate_with_only_lambda_zero_is_the_relevance_order() -> None:
    rng = np.random.default_rng(4)
    scores = rng.normal(size=30)
    cfg = PolicyConfig.model_validate(
        {
            "exploration": {"epsilon": 0},
            "fairness": {"lambda": 0, "long_tail_min_share": 0},
            "diversity": {"mmr_lambda": 0},
        }
    )
    d = choose_slate(cfg, scores, ["p"] * 30, None, None, {}, np.zeros(30, bool), rng)
    assert list(d.actions) == list(np.argsort(-scores)[:10])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 1000),
    share=st.floats(0.05, 1.0),
    history=st.tuples(st.integers(0, 200), st.integers(0, 200)),
)
def test_long_tail_quota_is_always_met(seed: int, share: float, history: tuple[int, int]) -> None:
    total, tail_slots = max(history), min(history)
    rng = np.random.default_rng(seed)
    n = 30
    tail = rng.random(n) < 0.3
    exposure = ProviderExposure(slots_total=total, long_tail_slots=tail_slots)
    cfg = PolicyConfig.model_validate({"k": 8, "fairness": {"long_tail_min_share": share}})
    d = choose_slate(cfg, rng.normal(size=n), [f"p{i}" for i in range(n)], None, None, exposure, tail, rng)
    quota = min(long_tail_quota(8, share, total, tail_slots), int(tail.sum()))
    assert d.context["long_tail_quota"] == quota
    assert sum(bool(tail[a]) for a in d.actions) >= quota


def test_amortized_quota_gives_the_long_tail_its_minimum_share_over_time() -> None:
    rng = np.random.default_rng(0)
    n = 50
    providers = [f"p{i}" for i in range(n)]
    tail = np.arange(n) >= 40  # the 10 long-tail providers also have the lowest scores
    exposure = ProviderExposure()
    cfg = PolicyConfig.model_validate({"k": 7, "fairness": {"lambda": 0, "long_tail_min_share": 0.25}})
    for day in range(60):
        scores = np.sort(rng.random(n))[::-1]
        d = choose_slate(cfg, scores, providers, None, None, exposure, tail, rng)
        exposure.record(
            [providers[a] for a in d.actions], [bool(tail[a]) for a in d.actions], T0 + timedelta(days=day)
        )
    assert exposure.long_tail_slots / exposure.slots_total >= 0.25
    assert exposure.long_tail_slots / exposure.slots_total < 0.25 + 7 / exposure.slots_total + 0.1


def _gini_after(lam: float) -> float:
    rng = np.random.default_rng(1)
    n = 40
    providers = [f"p{i % 20}" for i in range(n)]
    base = np.linspace(1.0, 0.0, n)
    exposure = ProviderExposure(half_life_days=30)
    cfg = PolicyConfig.model_validate(
        {"exploration": {"epsilon": 0}, "fairness": {"lambda": lam, "long_tail_min_share": 0}}
    )
    for day in range(100):
        scores = base + 0.05 * rng.normal(size=n)
        d = choose_slate(cfg, scores, providers, None, None, exposure, np.zeros(n, bool), rng)
        exposure.record([providers[a] for a in d.actions], [False] * len(d.actions), T0 + timedelta(days=day))
    return exposure_gini({p: exposure.get(p) for p in set(providers)})


def test_fairness_lambda_lowers_exposure_gini_over_repeated_slates() -> None:
    g0, g5, g9 = _gini_after(0.0), _gini_after(0.5), _gini_after(0.9)
    assert g5 < g0 and g9 <= g5 + 1e-9


def test_gini_and_long_tail_share_on_known_values() -> None:
    assert exposure_gini({"a": 1.0, "b": 1.0, "c": 1.0}) == pytest.approx(0.0)
    assert exposure_gini(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(0.75)
    assert exposure_gini({}) == 0.0
    assert long_tail_share({"a": 3.0, "b": 1.0}, {"b"}) == pytest.approx(0.25)


def test_long_tail_is_what_lies_beyond_the_head_mass() -> None:
    pop = {"a": 50.0, "b": 30.0, "c": 10.0, "d": 6.0, "e": 4.0}
    assert long_tail_providers(pop, 0.8) == {"c", "d", "e"}
    assert long_tail_providers(pop, 1.0) == set()
    assert head_providers(pop, 0.8) == {"a", "b"} and head_providers({"a": 0.0}, 0.8) == set()


def test_exposure_decays_with_half_life_and_uses_position_weights() -> None:
    exp = ProviderExposure(half_life_days=7)
    exp.record(["a", "b"], [False, True], T0)
    assert exp.get("a") == pytest.approx(1.0) and exp.get("b") == pytest.approx(1 / np.log2(3))
    assert exp.decayed(T0 + timedelta(days=7))["a"] == pytest.approx(0.5)
    exp.record(["b"], [True], T0 + timedelta(days=14))
    assert exp.get("a") == pytest.approx(0.25)
    assert (exp.slots_total, exp.long_tail_slots) == (3, 2)


@settings(max_examples=30, deadline=None)
@given(
    scores=st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    exp=st.lists(st.floats(0, 10), min_size=3, max_size=3),
    lam=st.floats(0, 1),
    k=st.integers(1, 3),
)
def test_fair_rerank_maximises_relevance_plus_lambda_equity(
    scores: list[float], exp: list[float], lam: float, k: int
) -> None:
    s = np.array(scores)
    providers = [f"p{i % 3}" for i in range(len(s))]
    exposure = {f"p{i}": e for i, e in enumerate(exp)}
    need = exposure_need(providers, exposure)
    rel = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.ones_like(s)

    def objective(order: tuple[int, ...] | np.ndarray) -> float:
        return (1 - lam) * exposure_equity(order, rel) + lam * exposure_equity(order, need)

    best = max(objective(p) for p in itertools.permutations(range(len(s)), min(k, len(s))))
    assert objective(fair_rerank(s, providers, exposure, lam, k)) >= best - 1e-9
