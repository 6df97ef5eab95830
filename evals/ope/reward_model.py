"""Reward model q̂(x, a, k) for DM and DR: an additive logistic regression, cross-fitted.

logit q̂(x, a, k) = b + x·β_x + φ(a)·β_a + β_k — round features, action features and a position
effect, fitted with scikit-learn's L2 `LogisticRegression` on the logged rounds. Being additive
in the logit, q̂ for every (round, action, position) is one broadcast sum, not n·A·L model calls.
With ~40 clicks in 10,000 rounds a richer model mostly fits noise; the L2 strength is chosen by
out-of-fold log-loss on the logs (never by the ground truth). Cross-fitting (Chernozhukov et al.
2018): the rows of fold f are scored by a model fitted on the other folds, so DR stays unbiased.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from tagloop.evals.ope.feedback import BanditFeedback

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class AdditiveLogit:
    intercept: float
    w_context: np.ndarray
    w_action: np.ndarray
    w_position: np.ndarray

    def predict(
        self,
        context: np.ndarray,
        action_context: np.ndarray,
        len_list: int,
        position: np.ndarray | None = None,
    ) -> np.ndarray:
        """q̂ of shape (n, A, L) for the rounds' `context` (n, d_x) and all actions and positions;
        with `position` (n,) given, only each round's own position: shape (n, A, 1)."""
        s_x = context @ self.w_context + self.intercept
        s_a = action_context @ self.w_action
        if position is not None:
            return expit(s_x[:, None, None] + s_a[None, :, None] + self.w_position[position][:, None, None])
        logit = s_x[:, None, None] + s_a[None, :, None] + self.w_position[None, None, :len_list]
        return expit(logit)

    @property
    def coef(self) -> np.ndarray:
        return np.concatenate([self.w_context, self.w_action, self.w_position])


def design(fb: BanditFeedback) -> np.ndarray:
    """The (n, d_x + d_a + L) design matrix of the logged (round, action, position) triples."""
    pos = np.zeros((fb.n_rounds, fb.len_list))
    pos[np.arange(fb.n_rounds), fb.position] = 1.0
    return np.hstack([fb.context, fb.action_context[fb.action], pos])


def fit(
    fb: BanditFeedback, c: float, init: AdditiveLogit | None = None, x: np.ndarray | None = None
) -> AdditiveLogit:
    """Fit the additive logit on `fb` (L2 strength 1/c); `init` warm-starts the solver."""
    x = design(fb) if x is None else x
    d_x, d_a = fb.context.shape[1], fb.action_context.shape[1]
    y = fb.reward > 0
    if y.all() or not y.any():  # one class only: a constant model is the MLE limit
        p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        zeros = np.zeros(x.shape[1])
        return AdditiveLogit(
            float(np.log(p / (1 - p))), zeros[:d_x], zeros[d_x : d_x + d_a], zeros[d_x + d_a :]
        )
    model = LogisticRegression(C=c, max_iter=300, warm_start=init is not None)
    if init is not None:
        model.coef_ = init.coef[None, :].copy()
        model.intercept_ = np.array([init.intercept])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    w = model.coef_[0]
    return AdditiveLogit(float(model.intercept_[0]), w[:d_x], w[d_x : d_x + d_a], w[d_x + d_a :])


def cross_fit(
    fb: BanditFeedback,
    folds: np.ndarray,
    c: float,
    init: Sequence[AdditiveLogit] | None = None,
    own_position: bool = False,
) -> tuple[np.ndarray, list[AdditiveLogit]]:
    """Out-of-fold q̂ of shape (n, A, L) and the per-fold models (fold ids 0..K-1 in `folds`);
    `own_position` returns only each round's own position, shape (n, A, 1) (see estimators.own_position)."""
    x = design(fb)
    q_hat = np.empty((fb.n_rounds, fb.n_actions, 1 if own_position else fb.len_list))
    models = []
    for f in range(int(folds.max()) + 1):
        train, test = folds != f, folds == f
        model = fit(fb.take(np.flatnonzero(train)), c, None if init is None else init[f], x[train])
        pos = fb.position[test] if own_position else None
        q_hat[test] = model.predict(fb.context[test], fb.action_context, fb.len_list, pos)
        models.append(model)
    return q_hat, models


def choose_c(fb: BanditFeedback, folds: np.ndarray, grid: Sequence[float] = C_GRID) -> float:
    """The L2 setting with the lowest out-of-fold log-loss of the logged rewards."""
    n = np.arange(fb.n_rounds)
    y = fb.reward > 0
    losses = []
    for c in grid:
        q_hat, _ = cross_fit(fb, folds, c, own_position=True)
        p = np.clip(q_hat[n, fb.action, 0], 1e-9, 1 - 1e-9)
        losses.append(-np.mean(np.where(y, np.log(p), np.log1p(-p))))
    return float(grid[int(np.argmin(losses))])
