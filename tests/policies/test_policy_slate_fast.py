"""The fast greedy slot loop (`policies.slate._greedy_slots`) makes exactly the picks, draws and
propensities of the general loop (`_slots`) on the inputs it is used for, and `choose_slate` agrees
with `score_slate` on its own slates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.policies import PolicyConfig, choose_slate, score_slate
from tagloop.policies.diversity import MMRState, UnitRowsArray
from tagloop.policies.slate import _greedy_slots, _slots
from tagloop.tools.errors import InvalidInput


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    epsilon=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    mmr=st.sampled_from([0.0, 0.2, 0.7]),
    quota=st.integers(0, 5),
    ties=st.booleans(),
)
def test_fast_loop_equals_the_general_loop(
    n: int, k: int, seed: int, epsilon: float, mmr: float, quota: int, ties: bool
) -> None:
    data = np.random.default_rng(seed)
    static = np.round(data.random(n), 1) if ties else data.random(n)  # rounded: many exact ties
    tail = data.random(n) < 0.4
    tags = (data.random((n, 6)) < 0.4) * data.random((n, 6))
    k = min(k, n)
    quota = min(quota, int(tail.sum()), k)
    ex = SimpleNamespace(temperature=0.0, epsilon=epsilon)

    def run(fast: bool) -> tuple[list[int], list[float]]:
        state = MMRState(tags) if mmr > 0 else None
        rng = np.random.default_rng([seed, 1])
        if fast:
            return _greedy_slots(static, mmr, state, tail, k, quota, epsilon, rng)
        return _slots(static, mmr, state, 0.0, None, tail, None, k, quota, ex, rng, None)

    assert run(True) == run(False)


def test_choose_slate_propensities_are_what_score_slate_gives_its_slate() -> None:
    cfg = PolicyConfig.model_validate(
        {"k": 8, "exploration": {"epsilon": 0.3}, "diversity": {"mmr_lambda": 0.3}}
    )
    data = np.random.default_rng(4)
    for _ in range(20):
        n = 30
        scores, tail = data.random(n), data.random(n) < 0.3
        tags = (data.random((n, 5)) < 0.5) * data.random((n, 5))
        providers = [f"p{i % 7}" for i in range(n)]
        exposure = {"p1": 3.0, "p2": 1.0}
        d = choose_slate(cfg, scores, providers, tags, None, exposure, tail, int(data.integers(1 << 30)))
        again = score_slate(cfg, scores, providers, tags, None, exposure, tail, list(d.actions))
        assert np.allclose(again, d.propensities, rtol=0, atol=1e-15)


def test_fast_loop_rejects_a_slot_with_nothing_eligible() -> None:
    with pytest.raises(InvalidInput, match="no eligible candidate"):
        _greedy_slots(np.ones(3), 0.0, None, np.zeros(3, bool), 2, 2, 0.1, np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), mmr=st.sampled_from([0.2, 0.7]))
def test_unit_rows_are_used_as_they_are_and_choose_the_same_slate(n: int, seed: int, mmr: float) -> None:
    data = np.random.default_rng(seed)
    tags = (data.random((n, 6)) < 0.4) * data.random((n, 6))
    norms = np.linalg.norm(tags, axis=1, keepdims=True)
    unit = np.divide(tags, norms, out=np.zeros_like(tags), where=norms > 0)
    marked = unit.view(UnitRowsArray)
    state = MMRState(marked)
    assert state.dense is not None and np.shares_memory(state.dense, unit)  # not scaled again
    cfg = PolicyConfig.model_validate(
        {"k": 6, "exploration": {"epsilon": 0.2}, "diversity": {"mmr_lambda": mmr}}
    )
    scores, tail, providers = data.random(n), data.random(n) < 0.3, [f"p{i % 4}" for i in range(n)]
    plain = choose_slate(cfg, scores, providers, tags, None, {}, tail, seed)
    as_is = choose_slate(cfg, scores, providers, marked, None, {}, tail, seed)
    assert as_is.actions == plain.actions
    np.testing.assert_allclose(as_is.propensities, plain.propensities)
