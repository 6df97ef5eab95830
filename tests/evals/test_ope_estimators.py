"""Off-policy estimators on synthetic uniform-random logs whose true target value is known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tagloop.evals.ope import estimators as est
from tagloop.evals.ope.bootstrap import bootstrap_ci, percentile_interval
from tagloop.evals.ope.evaluate import FAMILIES, evaluate
from tagloop.evals.ope.feedback import BanditFeedback, context_free_action_dist
from tagloop.tools.errors import InvalidInput


@dataclass(frozen=True)
class SyntheticLogs:
    feedback: BanditFeedback
    action_dist: np.ndarray  # (n, A, L)
    true_q: np.ndarray  # (A, L) click probability per action and position
    true_value: float  # Σ_k P(k) Σ_a π(a|k) q(a,k), positions uniform


def make_logs(
    rng: np.random.Generator, n: int = 3000, n_actions: int = 10, len_list: int = 3
) -> SyntheticLogs:
    """Uniform-random logging (pscore 1/A); the target favours the actions with the highest q."""
    base = rng.uniform(0.02, 0.2, n_actions)
    true_q = base[:, None] * np.linspace(1.0, 0.6, len_list)[None, :]
    target = np.exp(3.0 * (base - base.mean()) / base.std())[:, None] * np.ones((1, len_list))
    target /= target.sum(axis=0, keepdims=True)
    action = rng.integers(0, n_actions, n)
    position = rng.integers(0, len_list, n)
    reward = (rng.random(n) < true_q[action, position]).astype(float)
    true_value = float(np.mean(np.sum(target * true_q, axis=0)))
    feedback = BanditFeedback(
        action=action,
        position=position,
        reward=reward,
        pscore=np.full(n, 1.0 / n_actions),
        context=np.eye(2)[rng.integers(0, 2, n)],
        action_context=np.eye(n_actions),
        len_list=len_list,
    )
    return SyntheticLogs(feedback, context_free_action_dist(target, n), true_q, true_value)


def _log(s: SyntheticLogs) -> tuple[np.ndarray, ...]:
    fb = s.feedback
    return fb.reward, fb.action, fb.position, fb.pscore, s.action_dist


def _true_q_hat(s: SyntheticLogs) -> np.ndarray:
    return np.broadcast_to(s.true_q[None], s.action_dist.shape)


def test_ips_and_dr_are_unbiased_across_seeds() -> None:
    ips_vals, dr_vals, truths = [], [], []
    for seed in range(40):
        s = make_logs(np.random.default_rng(seed))
        biased_q = np.full(s.action_dist.shape, 0.05)  # a deliberately wrong reward model
        ips_vals.append(est.ips(*_log(s)).mean() - s.true_value)
        dr_vals.append(est.dr(*_log(s), biased_q).mean() - s.true_value)
        truths.append(s.true_value)
    for errors in (np.array(ips_vals), np.array(dr_vals)):
        se = errors.std(ddof=1) / np.sqrt(len(errors))
        assert abs(errors.mean()) < 3 * se + 1e-4


def test_dm_with_a_wrong_model_is_biased_but_dr_corrects_it() -> None:
    s = make_logs(np.random.default_rng(1), n=20000)
    wrong_q = np.full(s.action_dist.shape, s.feedback.reward.mean())  # ignores which action is better
    dm_err = est.dm(s.feedback.position, s.action_dist, wrong_q).mean() - s.true_value
    dr_err = est.dr(*_log(s), wrong_q).mean() - s.true_value
    assert dm_err < -0.01  # the target picks better-than-average actions
    assert abs(dr_err) < abs(dm_err) / 2


def test_dm_with_the_true_model_recovers_the_true_value() -> None:
    s = make_logs(np.random.default_rng(2), n=30000)
    value = est.dm(s.feedback.position, s.action_dist, _true_q_hat(s)).mean()
    assert value == pytest.approx(s.true_value, rel=0.02)


def test_switch_dr_and_dr_os_interpolate_between_dm_and_dr() -> None:
    s = make_logs(np.random.default_rng(3))
    q = np.full(s.action_dist.shape, 0.07)
    dm = est.dm(s.feedback.position, s.action_dist, q)
    dr = est.dr(*_log(s), q)
    np.testing.assert_allclose(est.switch_dr(*_log(s), q, tau=0.0), dm)
    np.testing.assert_allclose(est.switch_dr(*_log(s), q, tau=1e9), dr)
    np.testing.assert_allclose(est.dr_os(*_log(s), q, lambda_=0.0), dm)
    np.testing.assert_allclose(est.dr_os(*_log(s), q, lambda_=1e12), dr, rtol=1e-6)


def test_snips_rescales_ips_by_the_mean_weight() -> None:
    s = make_logs(np.random.default_rng(4))
    w = est.importance_weight(s.feedback.action, s.feedback.position, s.feedback.pscore, s.action_dist)
    np.testing.assert_allclose(est.snips(*_log(s)) * w.mean(), est.ips(*_log(s)))
    assert est.snips(*_log(s)).mean() <= s.feedback.reward.max() + 1e-12


def test_own_position_slice_gives_the_same_estimates() -> None:
    s = make_logs(np.random.default_rng(5))
    q = np.random.default_rng(0).uniform(0, 0.2, s.action_dist.shape)
    pos = s.feedback.position
    sliced = (
        s.feedback.reward,
        s.feedback.action,
        np.zeros_like(pos),
        s.feedback.pscore,
        est.own_position(s.action_dist, pos),
    )
    np.testing.assert_allclose(est.dr(*sliced, est.own_position(q, pos)), est.dr(*_log(s), q))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: {**a, "pscore": np.zeros_like(a["pscore"])}, "pscore"),
        (lambda a: {**a, "reward": a["reward"][:-1]}, "shape"),
        (lambda a: {**a, "action_dist": a["action_dist"][:, :, 0]}, "action_dist"),
    ],
)
def test_bad_estimator_input_raises_a_named_error(mutate, message) -> None:
    s = make_logs(np.random.default_rng(6), n=50)
    fb = s.feedback
    args = {
        "reward": fb.reward,
        "action": fb.action,
        "position": fb.position,
        "pscore": fb.pscore,
        "action_dist": s.action_dist,
    }
    with pytest.raises(InvalidInput, match=message):
        est.ips(**mutate(args))


def test_negative_switch_and_shrinkage_parameters_are_refused() -> None:
    s = make_logs(np.random.default_rng(7), n=50)
    q = np.zeros(s.action_dist.shape)
    with pytest.raises(InvalidInput, match="tau"):
        est.switch_dr(*_log(s), q, tau=-1.0)
    with pytest.raises(InvalidInput, match="lambda"):
        est.dr_os(*_log(s), q, lambda_=-1.0)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(8)
    covered = 0
    for _ in range(100):
        values = rng.exponential(1.0, 200)  # true mean 1
        lo, hi = bootstrap_ci(values, rng, n_boot=300)
        covered += lo <= 1.0 <= hi
    assert 85 <= covered <= 100


def test_bootstrap_is_reproducible_with_the_same_seed() -> None:
    values = np.random.default_rng(9).normal(size=300)
    a = bootstrap_ci(values, np.random.default_rng(1), n_boot=200)
    b = bootstrap_ci(values, np.random.default_rng(1), n_boot=200)
    assert a == b
    with pytest.raises(InvalidInput, match="level"):
        percentile_interval(values, level=1.5)


def test_evaluate_covers_the_true_value_and_recommends_the_smallest_estimated_mse() -> None:
    s = make_logs(np.random.default_rng(10), n=4000)
    result = evaluate(s.feedback, s.action_dist, np.random.default_rng(0), n_boot=40)
    assert set(result.estimates) == set(FAMILIES)
    assert result.recommended == min(FAMILIES, key=result.est_mse.__getitem__)
    for name in ("ips", "dr"):
        lo, hi = result.ci95[name]
        assert lo <= result.estimates[name] <= hi
        assert abs(result.estimates[name] - s.true_value) < 3 * result.std[name]
    assert result.bias2["ips"] == 0.0 and result.bias2["dr"] == 0.0
    assert abs(result.estimates[result.recommended] - s.true_value) / s.true_value < 0.2


def test_evaluate_withholds_the_rule_when_the_logs_never_made_the_targets_other_choice() -> None:
    """The logging policy plays action 1 one time in a thousand, the target half the time: in 500
    rounds action 1 never came up, so every weight is 0.5/0.999 (ESS = n, far above the floor) and
    IPS misses half the value with a tiny interval. The mean weight (~0.5, expected 1) says so."""
    n, rng = 500, np.random.default_rng(3)
    action = np.zeros(n, dtype=int)
    reward = (rng.random(n) < 0.3).astype(float)
    feedback = BanditFeedback(
        action=action,
        position=np.zeros(n, dtype=int),
        reward=reward,
        pscore=np.full(n, 0.999),
        context=np.ones((n, 1)),
        action_context=np.eye(2),
        len_list=1,
    )
    target = np.full((n, 2, 1), 0.5)
    result = evaluate(feedback, target, np.random.default_rng(0), n_boot=20)
    assert result.diagnostics["effective_sample_size"] == pytest.approx(n)
    assert result.withheld is not None and "mean importance weight is 0.501" in result.withheld
    assert result.recommended == "dm"
    # logs that cover the target keep the rule (tests above), and so does this one's own policy
    own = evaluate(
        feedback, np.stack([np.ones(n), np.zeros(n)], axis=1)[:, :, None], np.random.default_rng(0), n_boot=20
    )
    assert own.withheld is None


def test_evaluate_refuses_a_mismatched_action_dist() -> None:
    s = make_logs(np.random.default_rng(11), n=100)
    with pytest.raises(InvalidInput, match="action_dist"):
        evaluate(s.feedback, s.action_dist[:50], np.random.default_rng(0), n_boot=20)
