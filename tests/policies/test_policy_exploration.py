"""Slate exploration: per-slot distributions are proper, propensities are exact and replayable."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.policies import (
    PolicyConfig,
    choose_slate,
    epsilon_slots,
    plackett_luce,
    score_slate,
    slot_probabilities,
    uniform_slate,
)
from tagloop.tools.errors import InvalidInput

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(
    n=st.integers(1, 12),
    data=st.data(),
    epsilon=st.floats(0.0, 1.0),
    temperature=st.sampled_from([0.0, 0.05, 1.0, 10.0]),
)
def test_slot_distribution_sums_to_one_and_stays_eligible(
    n: int, data: st.DataObject, epsilon: float, temperature: float
) -> None:
    utility = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)))
    eligible = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    eligible[data.draw(st.integers(0, n - 1))] = True
    pool = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    probs = slot_probabilities(utility, eligible, pool, epsilon, temperature)
    assert probs.sum() == pytest.approx(1.0)
    assert np.all(probs[~eligible] == 0.0) and np.all(probs >= 0.0)


def _empirical_check(sample, n_draws: int) -> None:
    """Frequencies of each ordered slate vs its slate propensity, within 4.5 binomial sigmas."""
    counts: dict[tuple[int, ...], int] = {}
    prob: dict[tuple[int, ...], float] = {}
    for s in range(n_draws):
        d = sample(np.random.default_rng(s))
        counts[d.actions] = counts.get(d.actions, 0) + 1
        p = prob.setdefault(d.actions, d.slate_propensity)
        assert p == pytest.approx(d.slate_propensity)  # same slate, same probability every time
    assert sum(prob.values()) <= 1.0 + 1e-9
    for slate, c in counts.items():
        p = prob[slate]
        sigma = np.sqrt(p * (1 - p) / n_draws)
        assert abs(c / n_draws - p) <= 4.5 * sigma + 1e-3, (slate, c / n_draws, p)


@settings(max_examples=4, deadline=None)
@given(scores=st.lists(st.floats(-2, 2), min_size=4, max_size=4), temperature=st.sampled_from([0.3, 1.0]))
def test_plackett_luce_propensities_match_empirical_frequencies(
    scores: list[float], temperature: float
) -> None:
    s = np.array(scores)
    _empirical_check(lambda rng: plackett_luce(s, 2, temperature, rng), 3000)


@settings(max_examples=4, deadline=None)
@given(scores=st.lists(st.floats(-2, 2), min_size=5, max_size=5), epsilon=st.sampled_from([0.2, 0.5]))
def test_epsilon_slot_propensities_match_empirical_frequencies(scores: list[float], epsilon: float) -> None:
    s = np.array(scores)
    pool = np.array([True, False, True, False, True])
    _empirical_check(lambda rng: epsilon_slots(s, 2, epsilon, rng, pool=pool), 3000)


def _instance(n: int, seed: int) -> tuple[np.ndarray, list[str], sp.csr_array, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n)
    providers = [f"p{i % 3}" for i in range(n)]
    tags = sp.csr_array((rng.random((n, 6)) < 0.5) * rng.random((n, 6)))
    mix = rng.random(6)
    tail = np.array([i % 3 == 2 for i in range(n)])
    return scores, providers, tags, mix, tail


FULL = PolicyConfig.model_validate(
    {
        "k": 3,
        "exploration": {"epsilon": 0.3, "temperature": 0.5, "pool": "long_tail"},
        "fairness": {"lambda": 0.4, "long_tail_min_share": 0.34},
        "diversity": {"mmr_lambda": 0.3, "calibration_lambda": 0.2},
    }
)


ARGMAX = FULL.model_copy(update={"exploration": FULL.exploration.model_copy(update={"temperature": 0.0})})


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), cfg=st.sampled_from([FULL, ARGMAX]))
def test_choose_slate_probabilities_over_all_slates_sum_to_one(seed: int, cfg: PolicyConfig) -> None:
    scores, providers, tags, mix, tail = _instance(5, seed)
    exposure = {"p0": 3.0, "p1": 1.0}
    total = sum(
        float(np.prod(score_slate(cfg, scores, providers, tags, mix, exposure, tail, list(perm))))
        for perm in itertools.permutations(range(5), 3)
    )
    assert total == pytest.approx(1.0)


@pytest.mark.parametrize("cfg", [FULL, ARGMAX], ids=["plackett_luce", "argmax"])
def test_choose_slate_propensities_match_empirical_frequencies(cfg: PolicyConfig) -> None:
    scores, providers, tags, mix, tail = _instance(5, 3)
    exposure = {"p0": 3.0, "p1": 1.0}
    _empirical_check(lambda rng: choose_slate(cfg, scores, providers, tags, mix, exposure, tail, rng), 3000)


def test_same_seed_replays_and_score_slate_agrees() -> None:
    scores, providers, tags, mix, tail = _instance(40, 1)
    cfg = FULL.model_copy(update={"k": 8})
    a = choose_slate(cfg, scores, providers, tags, mix, {}, tail, 99)
    b = choose_slate(cfg, scores, providers, tags, mix, {}, tail, 99)
    assert a == b and a.seed == 99
    again = score_slate(cfg, scores, providers, tags, mix, {}, tail, list(a.actions))
    assert np.allclose(again, a.propensities)


def test_epsilon_zero_is_the_relevance_order_with_certainty() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.7])
    d = epsilon_slots(scores, 3, 0.0, np.random.default_rng(0))
    assert d.actions == (1, 3, 2) and d.propensities == (1.0, 1.0, 1.0)


def test_uniform_slate_propensity_is_one_over_remaining() -> None:
    d = uniform_slate(6, 3, np.random.default_rng(5))
    assert d.propensities == pytest.approx((1 / 6, 1 / 5, 1 / 4))


def test_impossible_slate_scores_zero_for_a_greedy_policy() -> None:
    cfg = PolicyConfig.model_validate({"k": 2, "exploration": {"epsilon": 0.0}})
    scores = np.array([1.0, 0.0, 0.5])
    props = score_slate(cfg, scores, ["a", "b", "c"], None, None, {}, np.zeros(3, bool), [1, 0])
    assert props[0] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": np.array([np.nan, 1.0])}, "finite"),
        ({"providers": ["a"]}, "1 providers for 2 candidates"),
        ({"long_tail": np.array([1, 0])}, "bool array"),
        ({"scores": np.array([])}, "non-empty"),
        ({"item_tags": np.array([[np.nan, 1.0], [1.0, 0.0]])}, "tag weights must be finite"),
        ({"item_tags": sp.csr_matrix(np.array([[np.inf, 1.0], [1.0, 0.0]]))}, "tag weights must be finite"),
        ({"exposure": {"a": np.nan}}, "exposure must be finite"),
        ({"item_ids": ["x", "x"]}, "item_ids must be distinct"),
    ],
)
def test_bad_slate_input_is_an_invalid_input_error(kwargs: dict, message: str) -> None:
    args: dict[str, Any] = {
        "scores": np.array([0.1, 0.2]),
        "providers": ["a", "b"],
        "long_tail": np.array([False, True]),
        "item_tags": None,
        "exposure": {},
        "item_ids": None,
    }
    args.update(kwargs)
    with pytest.raises(InvalidInput, match=message):
        choose_slate(
            PolicyConfig(),
            args["scores"],
            args["providers"],
            args["item_tags"],
            None,
            args["exposure"],
            args["long_tail"],
            0,
            item_ids=args["item_ids"],
        )


def test_scores_whose_range_overflows_still_rank_in_order() -> None:
    """1e308 and -1e308: the min-max scaling overflowed to NaN and the slate came out in index order."""
    greedy = PolicyConfig.model_validate({"k": 4, "exploration": {"epsilon": 0.0}})
    scores = np.array([1e308, -1e308, 0.0, 5.0])
    d = choose_slate(greedy, scores, ["a", "b", "c", "d"], None, None, {}, np.zeros(4, bool), 0)
    assert d.actions[0] == 0 and d.actions[-1] == 1  # 0 and 5 are equal at this scale
