"""Logged bandit feedback: the one data shape every OPE data source is turned into.

A data source (the Open Bandit Dataset today, tagloop's own decision logs later) produces a
`BanditFeedback` of the behaviour policy's rounds plus the target policy's `action_dist`; the
estimators, reward model and bootstrap only ever see these arrays. Decision logs with per-round
candidate sets fit too: actions outside a round's candidate set get zero target probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagloop.tools.errors import InvalidInput


@dataclass(frozen=True)
class BanditFeedback:
    """n logged rounds over A actions and L positions.

    action (n,) int in [0, A); position (n,) int in [0, L); reward (n,) float; pscore (n,) logging
    propensity in (0, 1]; context (n, d_x) round features; action_context (A, d_a) action features.
    """

    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    context: np.ndarray
    action_context: np.ndarray
    len_list: int

    def __post_init__(self) -> None:
        n = self.action.shape[0]
        if n == 0:
            raise InvalidInput("the logged feedback has no rounds")
        for name in ("position", "reward", "pscore"):
            if getattr(self, name).shape != (n,):
                raise InvalidInput(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.context.ndim != 2 or self.context.shape[0] != n:
            raise InvalidInput(f"context must have shape ({n}, d_x), got {self.context.shape}")
        if self.action_context.ndim != 2:
            raise InvalidInput(
                f"action_context must be 2-d (n_actions, d_a), got {self.action_context.shape}"
            )
        if self.action.min() < 0 or self.action.max() >= self.n_actions:
            raise InvalidInput(
                f"action ids must lie in [0, {self.n_actions}) (one row of action_context each)"
            )
        if self.position.min() < 0 or self.position.max() >= self.len_list:
            raise InvalidInput(f"positions must lie in [0, {self.len_list})")
        if not np.all((self.pscore > 0) & (self.pscore <= 1)):
            raise InvalidInput("every logging propensity (pscore) must lie in (0, 1]")

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.action_context.shape[0])

    def take(self, idx: np.ndarray) -> BanditFeedback:
        """The rounds `idx` (with repeats, for a bootstrap resample); action features are shared."""
        return BanditFeedback(
            action=self.action[idx],
            position=self.position[idx],
            reward=self.reward[idx],
            pscore=self.pscore[idx],
            context=self.context[idx],
            action_context=self.action_context,
            len_list=self.len_list,
        )


def context_free_action_dist(per_position: np.ndarray, n_rounds: int) -> np.ndarray:
    """Broadcast a context-free policy's (A, L) distribution to the (n, A, L) estimator shape (no copy)."""
    if per_position.ndim != 2:
        raise InvalidInput(
            f"a context-free action distribution has shape (n_actions, len_list), got {per_position.shape}"
        )
    if not np.allclose(per_position.sum(axis=0), 1.0):
        raise InvalidInput("each position's action distribution must sum to 1")
    return np.broadcast_to(per_position[None, :, :], (n_rounds, *per_position.shape))
