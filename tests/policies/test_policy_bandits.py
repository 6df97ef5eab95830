"""Arm bandits: exact propensities agree with sampling, updates move the posterior."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from tagloop.policies import (
    LinearTSModel,
    choose_arm,
    linear_ts_choose,
    linear_ts_probabilities,
    linear_ts_update,
    thompson_choose,
    thompson_probabilities,
    thompson_probabilities_batch,
)
from tagloop.policies.config import BanditConfig
from tagloop.tools.errors import InvalidInput


@settings(max_examples=10, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=2, max_size=6),
    seed=st.integers(0, 1000),
)
def test_thompson_probabilities_match_monte_carlo(counts: list[tuple[int, int]], seed: int) -> None:
    s = np.array([c[0] for c in counts])
    f = np.array([c[1] for c in counts])
    exact = thompson_probabilities(s, f)
    assert exact.sum() == pytest.approx(1.0)
    draws = np.random.default_rng(seed).beta(1 + s, 1 + f, size=(40_000, s.size))
    mc = np.bincount(np.argmax(draws, axis=1), minlength=s.size) / 40_000
    assert np.allclose(exact, mc, atol=0.012)


def test_two_arm_propensity_matches_direct_integration() -> None:
    a, b = stats.beta(1 + 30, 1 + 70), stats.beta(1 + 12, 1 + 38)
    direct, _ = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1, limit=200)
    assert thompson_probabilities(np.array([30, 12]), np.array([70, 38]))[0] == pytest.approx(
        direct, abs=1e-5
    )


def _direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(arm i is the largest) by adaptive quadrature of pdf_i · Π_{j≠i} cdf_j."""

    def p(i: int) -> float:
        others = [stats.beta(a[j], b[j]) for j in range(a.size) if j != i]
        mine = stats.beta(a[i], b[i])
        value, _ = integrate.quad(
            lambda x: mine.pdf(x) * np.prod([o.cdf(x) for o in others]),
            0,
            1,
            points=[a[j] / (a[j] + b[j]) for j in range(a.size)],
            epsabs=1e-12,
            limit=500,
        )
        return value

    return np.array([p(i) for i in range(a.size)])


def test_thompson_quadrature_is_within_3e_5_of_adaptive_quadrature() -> None:
    """Fractional evidence as the agent builds it (pooled counts, activity prior in quarters), from
    flat arms to ones peaked within 1% — small and large counts mixed, like arms and unlike ones."""
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(40):
        k = int(rng.integers(2, 6))
        n = rng.uniform(0, 10 ** rng.uniform(-1, 3.5), k)
        rate = rng.uniform(0.01, 0.6, k) if rng.random() < 0.7 else np.full(k, rng.uniform(0.01, 0.6))
        s = np.round(4 * n * rate) / 4
        f = np.maximum(np.round(4 * n) / 4 - s, 0)
        got = thompson_probabilities(s, f, (1.0, 1.0))
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        worst = max(worst, float(np.abs(got - _direct(1 + s, 1 + f)).max()))
    assert worst < 3e-5
    s, f = np.array([0.25, 0.25, 0.0, 900.0]), np.array([6.0, 6.5, 2.75, 100.0])  # one arm far ahead
    assert np.abs(thompson_probabilities(s, f, (0.5, 2.0)) - _direct(0.5 + s, 2.0 + f)).max() < 3e-5


def test_thompson_batch_equals_one_problem_at_a_time() -> None:
    rng = np.random.default_rng(5)
    s, f = rng.integers(0, 50, (30, 4)) / 2, rng.integers(0, 200, (30, 4)) / 4
    batch = thompson_probabilities_batch(s, f, (1.0, 2.0))
    singles = np.array([thompson_probabilities(s[i], f[i], (1.0, 2.0)) for i in range(30)])
    assert np.allclose(batch, singles, atol=1e-13, rtol=0)
    assert np.array_equal(thompson_probabilities_batch(s[:, :1], f[:, :1]), np.ones((30, 1)))
    with pytest.raises(InvalidInput):
        thompson_probabilities_batch(s, -f)


def test_thompson_choose_is_seeded_and_reports_its_arm_probability() -> None:
    s, f = np.array([5, 9, 1]), np.array([20, 15, 3])
    a = thompson_choose(s, f, np.random.default_rng(8))
    assert a == thompson_choose(s, f, np.random.default_rng(8))
    assert a[1] == pytest.approx(thompson_probabilities(s, f)[a[0]])
    arm, p_mc = thompson_choose(s, f, np.random.default_rng(8), n_mc=20_000, method="mc")
    assert arm == a[0] and p_mc == pytest.approx(a[1], abs=0.02)


def test_a_monte_carlo_propensity_is_never_zero_for_the_arm_played() -> None:
    """Arm 0's true probability here is ~2e-4: of 40,000 plays, the ones that picked it counted it
    in none of their n_mc draws and logged 0 before the played draw was counted too."""
    s, f = np.array([0.0, 6.0]), np.array([12.0, 2.0])
    played = [
        thompson_choose(s, f, np.random.default_rng(seed), n_mc=200, method="mc") for seed in range(40_000)
    ]
    rare = [p for arm, p in played if arm == 0]
    assert rare and all(p >= 1 / 201 for p in rare)
    assert np.mean([p for arm, p in played if arm == 1]) == pytest.approx(
        thompson_probabilities(s, f)[1], abs=0.01
    )


def test_an_arm_choice_logs_its_propensity_unrounded() -> None:
    from tagloop.agent.state import ArmChoice

    p = thompson_probabilities(np.array([0.0, 5, 0, 4]), np.array([20.0, 1, 20, 1]))
    assert 0 < p[0] < 1e-6
    assert [ArmChoice(i, float(x), []).log()["propensity"] for i, x in enumerate(p)] == [float(x) for x in p]


def test_linear_ts_probabilities_match_sampling_and_learn_from_rewards() -> None:
    rng = np.random.default_rng(0)
    model = LinearTSModel.new(n_arms=3, dim=2, noise=0.5)
    x_a, x_b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for _ in range(30):  # arm 1 pays in context a, arm 2 in context b
        model = linear_ts_update(model, 1, x_a, 1.0)
        model = linear_ts_update(model, 2, x_b, 1.0)
        model = linear_ts_update(model, 0, x_a + x_b, 0.2)
    p_a, p_b = linear_ts_probabilities(model, x_a), linear_ts_probabilities(model, x_b)
    assert np.argmax(p_a) == 1 and np.argmax(p_b) == 2
    x = np.array([0.6, 0.5])
    exact = linear_ts_probabilities(model, x)
    picks = np.bincount([linear_ts_choose(model, x, rng)[0] for _ in range(3000)], minlength=3) / 3000
    assert np.allclose(exact, picks, atol=0.03)


def test_linear_ts_update_leaves_the_old_model_unchanged() -> None:
    m0 = LinearTSModel.new(2, 3)
    m1 = linear_ts_update(m0, 0, np.ones(3), 1.0)
    assert np.all(m0.b == 0) and np.all(m1.b[0] == 1)


def test_choose_arm_strategies_for_baselines() -> None:
    s, f = np.array([1, 50, 3]), np.array([99, 50, 97])
    rng = np.random.default_rng(1)
    assert choose_arm(BanditConfig(strategy="greedy"), s, f, rng) == (1, 1.0)
    arm, p = choose_arm(BanditConfig(strategy="uniform"), s, f, rng)
    assert 0 <= arm < 3 and p == pytest.approx(1 / 3)
    arm, p = choose_arm(BanditConfig(), s, f, rng)
    assert 0.0 < p <= 1.0


@pytest.mark.parametrize(
    ("s", "f", "message"),
    [
        (np.array([1, 2]), np.array([1]), "same non-zero length"),
        (np.array([-1, 2]), np.array([1, 1]), "non-negative"),
        (np.array([]), np.array([]), "same non-zero length"),
    ],
)
def test_bad_counts_are_invalid_input(s: np.ndarray, f: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        thompson_choose(s, f, np.random.default_rng(0))


def test_bad_context_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="2 finite numbers"):
        linear_ts_choose(LinearTSModel.new(2, 2), np.array([1.0, 2.0, 3.0]), np.random.default_rng(0))
