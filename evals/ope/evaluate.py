"""Run every estimator on one logged data set, bootstrap them together, and pick one without ground truth.

The bootstrap resamples rounds and refits the cross-fitted reward model on every replicate (warm
started), so DM's and DR's intervals include the reward model's own uncertainty — with ~40 clicks
that uncertainty is most of DM's error, and a fixed-model bootstrap would hide it.

The recommendation rule (ground-truth free) is the smallest estimated MSE:
    MSE^(E) = Var_boot(E) + Bias²^(E),
    Bias²^(E) = 0 for IPS and DR (unbiased with exact logging propensities and cross-fitting),
    Bias²^(E) = max(0, (E − DR)² − Var_boot(E − DR)) otherwise,
i.e. the unbiased estimate of the squared bias against DR, clipped at 0 (the same paired replicates
give Var_boot(E − DR)). Switch-DR's τ and DR-OS's λ are tuned over a fixed grid by the same rule.

The rule does not apply to rewards that are all the same (no open or click logged yet), nor when
the mean importance weight is at least 0.1 and more than 4 standard errors away from 1. Its
expectation is 1 when the logging policy gives every choice of the target's a chance, so a mean
far below it says the logs hardly ever made choices the target often makes, and the rare rounds
that would carry that weight were not observed (IPS then misses part of the value, with a narrow
interval and a high ESS).
It has a floor too: it does not apply when the importance weights' effective sample size
ESS = (Σw)² / Σw² is below `min_ess(n)` = max(30, 1% of the rounds). IPS and DR are unbiased in
expectation only; with the weight resting on a handful of rounds the bootstrap rarely resamples
them, so IPS's variance (its whole estimated MSE) comes out ~0 even when its estimate is ~0 and
far from the truth, and DR — the reference every bias estimate is taken against — is then DM plus
noise. Below the floor every estimated MSE is meaningless. In all these cases `recommended` is DM, the one
estimator that does not rest on the importance weights (a fallback, not a finding: SPEC §6 always
names one), and `withheld` says why the rule was not applied (the estimates and intervals are still
reported; the command warns and reports `recommendation_reliable: false`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tagloop.evals.ope import estimators as est
from tagloop.evals.ope import reward_model
from tagloop.evals.ope.bootstrap import percentile_interval
from tagloop.evals.ope.feedback import BanditFeedback
from tagloop.tools.errors import InvalidInput

TAU_GRID: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
LAMBDA_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
UNBIASED = frozenset({"ips", "dr"})  # bias² taken as 0: valid only above the ESS floor
MIN_ESS = 30.0  # the bootstrap/CLT needs some thirty effective rounds
MIN_ESS_SHARE = 0.01  # … and at least 1% of the rounds carrying the weight
FAMILIES = ("ips", "snips", "dm", "dr", "switch-dr", "dr-os")
FALLBACK = "dm"  # named when the MSE rule cannot be applied: the one estimator without weights
MAX_WEIGHT_SHORTFALL = 4.0  # |mean weight − 1| in standard errors beyond which the logs lack support
MIN_WEIGHT_GAP = 0.1  # … when that is at least a tenth of the weight (a smaller gap biases IPS less)


@dataclass(frozen=True)
class OpeResult:
    estimates: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    std: dict[str, float]
    bias2: dict[str, float]
    est_mse: dict[str, float]
    recommended: str  # FALLBACK when the rule could not be applied (see `withheld`)
    params: dict[str, float]
    diagnostics: dict[str, float]
    replicates: dict[str, np.ndarray] = field(repr=False)
    withheld: str | None = None  # why the rule was not applied (the recommendation is the fallback)


def min_ess(n_rounds: int) -> float:
    """The effective sample size below which the MSE rule is not applied (module docstring)."""
    return max(MIN_ESS, MIN_ESS_SHARE * n_rounds)


def weight_shortfall(weights: np.ndarray) -> float:
    """How many standard errors the mean importance weight lies from 1, its expectation whenever the
    logging policy gives every choice of the target's a chance (0 with fewer than two rounds)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size < 2:
        return 0.0
    se = float(np.std(w, ddof=1)) / np.sqrt(w.size)
    gap = abs(float(w.mean()) - 1.0)
    return gap / se if se > 0 else (np.inf if gap > 1e-9 else 0.0)


def withheld_because(
    ess: float, n_rounds: int, reward: np.ndarray | None = None, weights: np.ndarray | None = None
) -> str | None:
    """Why the MSE rule cannot pick an estimator at this effective sample size, with rewards that
    are all the same (logs without a single open or click), or with importance weights whose mean is
    far from 1 (the weight of the target's choices the logs rarely made was never observed), or
    None when it can."""
    if reward is not None and reward.size and np.all(reward == reward.flat[0]):
        return (
            f"every one of the {n_rounds} logged rewards is {float(reward.flat[0]):g} (e.g. no open or "
            "click in the logs yet): the estimators have nothing to learn from or to be compared on; "
            "log rewards first"
        )
    floor = min_ess(n_rounds)
    if ess < floor:
        return (
            f"effective sample size {ess:.1f} of {n_rounds} rounds is below {floor:g} (max(30, 1% of "
            "the rounds)): the target policy's importance weights rest on a few rounds, so the "
            "intervals of IPS, SNIPS and DR are not trustworthy and the model-based estimators' bias "
            "cannot be checked; no estimate here should be used"
        )
    mean = float(np.mean(weights)) if weights is not None and weights.size else 1.0
    if (
        weights is not None
        and abs(mean - 1.0) >= MIN_WEIGHT_GAP
        and weight_shortfall(weights) > MAX_WEIGHT_SHORTFALL
    ):
        return (
            f"the mean importance weight is {mean:.3f}, more than "
            f"{MAX_WEIGHT_SHORTFALL:g} standard errors from 1, its value when the logs cover the target "
            "policy: the target often makes choices the logging policy (almost) never made, so IPS and "
            "DR miss that part of the value and their intervals are too narrow; log with more "
            "exploration, or evaluate a policy closer to the logging one"
        )
    return None


def point_estimates(fb: BanditFeedback, action_dist: np.ndarray, q_hat: np.ndarray) -> dict[str, float]:
    """Every estimator and every grid variant (`switch-dr@τ`, `dr-os@λ`) on one data set.

    `action_dist` and `q_hat` are (n, A, L), or (n, A, 1) already at each round's own position."""
    position = fb.position if action_dist.shape[2] > 1 else np.zeros_like(fb.position)
    log = (fb.reward, fb.action, position, fb.pscore, action_dist)
    out = {
        "ips": est.ips(*log).mean(),
        "snips": est.snips(*log).mean(),
        "dm": est.dm(position, action_dist, q_hat).mean(),
        "dr": est.dr(*log, q_hat).mean(),
    }
    for tau in TAU_GRID:
        out[f"switch-dr@{tau:g}"] = est.switch_dr(*log, q_hat, tau).mean()
    for lam in LAMBDA_GRID:
        out[f"dr-os@{lam:g}"] = est.dr_os(*log, q_hat, lam).mean()
    return {k: float(v) for k, v in out.items()}


def _estimated_mse(point: dict[str, float], reps: dict[str, np.ndarray]) -> tuple[dict[str, float], ...]:
    var = {k: float(np.var(r, ddof=1)) for k, r in reps.items()}
    bias2 = {}
    for k in point:
        if k in UNBIASED:
            bias2[k] = 0.0
        else:
            diff_var = float(np.var(reps[k] - reps["dr"], ddof=1))
            bias2[k] = max(0.0, (point[k] - point["dr"]) ** 2 - diff_var)
    return var, bias2, {k: var[k] + bias2[k] for k in point}


def evaluate(
    fb: BanditFeedback,
    action_dist: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 200,
    n_folds: int = 2,
    on_replicate: Callable[[], None] | None = None,
) -> OpeResult:
    """Estimate the target policy's value from `fb` with every estimator; see the module docstring."""
    if n_boot < 20:
        raise InvalidInput(f"n_boot must be ≥ 20 for a 95% interval, got {n_boot}")
    if n_folds < 2:
        raise InvalidInput(f"cross-fitting needs n_folds ≥ 2, got {n_folds}")
    if action_dist.shape != (fb.n_rounds, fb.n_actions, fb.len_list):
        raise InvalidInput(
            f"action_dist must have shape {(fb.n_rounds, fb.n_actions, fb.len_list)}, got {action_dist.shape}"
        )
    folds = rng.permutation(np.arange(fb.n_rounds) % n_folds)
    c = reward_model.choose_c(fb, folds)
    q_hat, models = reward_model.cross_fit(fb, folds, c, own_position=True)
    own_dist = est.own_position(action_dist, fb.position)
    point = point_estimates(fb, own_dist, q_hat)

    rows = []
    for _ in range(n_boot):
        idx = rng.integers(0, fb.n_rounds, fb.n_rounds)
        sub = fb.take(idx)
        q_sub, _ = reward_model.cross_fit(sub, folds[idx], c, init=models, own_position=True)
        rows.append(point_estimates(sub, own_dist[idx], q_sub))
        if on_replicate is not None:
            on_replicate()
    reps = {k: np.array([r[k] for r in rows]) for k in point}
    var, bias2, mse = _estimated_mse(point, reps)

    chosen = {
        "switch-dr": min((k for k in point if k.startswith("switch-dr@")), key=mse.__getitem__),
        "dr-os": min((k for k in point if k.startswith("dr-os@")), key=mse.__getitem__),
    }
    name = {f: chosen.get(f, f) for f in FAMILIES}
    w = est.importance_weight(fb.action, fb.position, fb.pscore, action_dist)
    ess = float(w.sum() ** 2 / (w**2).sum()) if np.any(w > 0) else 0.0
    withheld = withheld_because(ess, fb.n_rounds, fb.reward, w)
    return OpeResult(
        estimates={f: point[name[f]] for f in FAMILIES},
        ci95={f: percentile_interval(reps[name[f]]) for f in FAMILIES},
        std={f: var[name[f]] ** 0.5 for f in FAMILIES},
        bias2={f: bias2[name[f]] for f in FAMILIES},
        est_mse={f: mse[name[f]] for f in FAMILIES},
        recommended=FALLBACK if withheld else min(FAMILIES, key=lambda f: mse[name[f]]),
        params={
            "switch_dr_tau": float(chosen["switch-dr"].split("@")[1]),
            "dr_os_lambda": float(chosen["dr-os"].split("@")[1]),
            "reward_model_C": c,
        },
        diagnostics={
            "n_rounds": fb.n_rounds,
            "n_positive_rewards": int((fb.reward > 0).sum()),
            "max_weight": float(w.max()),
            "mean_weight": float(w.mean()),
            "effective_sample_size": ess,
            "min_effective_sample_size": min_ess(fb.n_rounds),
        },
        replicates={f: reps[name[f]] for f in FAMILIES},
        withheld=withheld,
    )
