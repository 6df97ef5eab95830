"""Cold items: a small tag tower trained so that users' served vectors rank items from their tags.

A cold item has only its aggregated tag counts (never who applied them). The tower maps them to a
vector in the served space, so the item is ranked by the same inner product as every other item:

    x_i  = tf-idf tag vector of the item (unit row, tags.py),  a_i = log1p(tag applications)
    h_i  = relu(x_i A + a_i/5 · e + h0)                       (hidden, `cold_hidden` units)
    z_i  = (1 + g · a_i) · (x_i W + h_i B)                    (the factor dimensions)
    b_i  = x_i w + β · a_i + h_i c                            (the last, popularity dimension)
    item_vec(i) = κ · [z_i | b_i]

It is trained on the warm items with the served user vectors u (fixed, from the trained model) by
full softmax over warm items: each user's confidences, normalised to sum 1, are the target of
softmax_i(u · item_vec(i)) (Adam, `cold_epochs` full-batch steps, L2). κ is then the least-squares
scale of the warm items' per-user-centred scores times `cold_level` (1.5, picked on warm validation
NDCG), plus a shared offset (a per-user constant: it never reorders cold items) whose popularity
component keeps every tagged item <= 0 there. Held-out Last.fm items ranked among themselves
(bench/recsys.py `cold_start`): recall@20 0.559 with the ridge map and prior -> 0.588; on two
validation hold-outs carved from train 0.604 -> 0.621 and 0.619 -> 0.646 (see model.py for what
else was tried).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import scipy.sparse as sp


class TowerParams(Protocol):
    cold_hidden: int
    cold_epochs: int
    cold_level: float


LEARNING_RATE = 1e-3
L2_LINEAR = 1e-4
L2_HIDDEN = 3e-3


@dataclass
class TagTower:
    """Parameters of the tower; rows of `lin`, `lin_bias` and `hidden_in` are aligned with the tags."""

    lin: np.ndarray  # n_tags × d
    lin_bias: np.ndarray  # n_tags
    hidden_in: np.ndarray  # n_tags × h
    activity_in: np.ndarray  # h
    hidden_bias: np.ndarray  # h
    hidden_out: np.ndarray  # h × d
    hidden_out_bias: np.ndarray  # h
    scalars: np.ndarray  # [β, g, κ]
    offset: np.ndarray  # d + 1, the same for every cold item: a per-user constant, no reordering

    def vectors(self, x: sp.csr_matrix, activity: np.ndarray) -> np.ndarray:
        """items × (d + 1) vectors from tf-idf rows `x` and tag applications per item."""
        a = np.log1p(np.maximum(np.asarray(activity, dtype=np.float64), 0.0))
        beta, gain, kappa = (float(v) for v in self.scalars)
        pre = np.asarray(x @ self.hidden_in) + np.outer(a / 5.0, self.activity_in) + self.hidden_bias
        hidden = np.maximum(pre, 0.0)
        z = (1.0 + gain * a)[:, None] * (np.asarray(x @ self.lin) + hidden @ self.hidden_out)
        b = np.asarray(x @ self.lin_bias).ravel() + beta * a + hidden @ self.hidden_out_bias
        out = kappa * np.hstack([z, b[:, None]]) + self.offset
        out[np.asarray(x.getnnz(axis=1)) == 0] = 0.0  # no known tag: nothing to place the item by
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"tower_{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TagTower | None:
        """The tower stored by `arrays`, or None for a model saved before towers existed."""
        names = [f"tower_{f.name}" for f in fields(cls)]
        if not all(n in arrays for n in names):
            return None
        return cls(*(np.asarray(arrays[n]) for n in names))


def _adam(
    params: list[np.ndarray], grads: list[np.ndarray], state: list[list[np.ndarray]], step: int
) -> None:
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        state[0][k] = 0.9 * state[0][k] + 0.1 * g
        state[1][k] = 0.999 * state[1][k] + 0.001 * g * g
        m_hat, v_hat = state[0][k] / (1 - 0.9**step), state[1][k] / (1 - 0.999**step)
        p -= (LEARNING_RATE * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(p.dtype)


def fit_tower(
    tag_vectors: sp.csr_matrix,
    activity: np.ndarray,
    user_vecs: np.ndarray,
    confidence: sp.csr_matrix,
    warm: np.ndarray,
    hidden: int,
    epochs: int,
    rng: np.random.Generator,
) -> TagTower:
    """Train on the `warm` items: user_vecs (users × (d + 1), last column the constant 1) and
    confidence (users × items) of the same users; users without warm items are skipped."""
    conf = sp.csr_matrix(confidence[:, warm], dtype=np.float32)
    sums = np.asarray(conf.sum(axis=1)).ravel()
    keep = sums > 0
    target = np.asarray((sp.diags(1.0 / sums[keep]) @ conf[keep]).todense(), dtype=np.float32)
    users = np.ascontiguousarray(user_vecs[keep, :-1], dtype=np.float32)
    x = sp.csr_matrix(tag_vectors[warm], dtype=np.float32)
    a = np.log1p(np.maximum(np.asarray(activity, dtype=np.float64)[warm], 0.0)).astype(np.float32)
    n_tags, d = tag_vectors.shape[1], users.shape[1]
    on_warm = (x.getnnz(axis=0) > 0).astype(np.float32)[:, None]  # other tags keep zero weights
    tower = TagTower(
        lin=np.zeros((n_tags, d), np.float32),
        lin_bias=np.zeros(n_tags, np.float32),
        hidden_in=(0.1 * rng.standard_normal((n_tags, hidden)) * on_warm).astype(np.float32),
        activity_in=np.zeros(hidden, np.float32),
        hidden_bias=np.zeros(hidden, np.float32),
        hidden_out=np.zeros((hidden, d), np.float32),
        hidden_out_bias=np.zeros(hidden, np.float32),
        scalars=np.array([0.0, 0.0, 1.0], np.float32),
        offset=np.zeros(d + 1, np.float32),
    )
    t = tower
    params = [t.lin, t.lin_bias, t.hidden_in, t.activity_in, t.hidden_bias, t.hidden_out, t.hidden_out_bias]
    params.append(t.scalars[:2])  # a view: β and g are trained in place, κ is set after training
    state = [[np.zeros_like(p) for p in params] for _ in range(2)]
    for step in range(1, epochs + 1):
        pre = np.asarray(x @ t.hidden_in) + np.outer(a / 5.0, t.activity_in) + t.hidden_bias
        h = np.maximum(pre, 0.0)
        z = np.asarray(x @ t.lin) + h @ t.hidden_out
        scale = 1.0 + t.scalars[1] * a
        bias = np.asarray(x @ t.lin_bias).ravel() + t.scalars[0] * a + h @ t.hidden_out_bias
        s = users @ (z * scale[:, None]).T + bias[None, :]
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - target) / users.shape[0]
        dzs = g.T @ users
        gi = g.sum(axis=0)
        dz = dzs * scale[:, None]
        dpre = (dz @ t.hidden_out.T + np.outer(gi, t.hidden_out_bias)) * (pre > 0)
        grads = [
            np.asarray(x.T @ dz) + L2_LINEAR * t.lin,
            np.asarray(x.T @ gi).ravel() + L2_LINEAR * t.lin_bias,
            np.asarray(x.T @ dpre) + L2_HIDDEN * t.hidden_in,
            (a / 5.0) @ dpre,
            dpre.sum(axis=0),
            h.T @ dz + L2_HIDDEN * t.hidden_out,
            h.T @ gi,
            np.array([gi @ a, ((dzs * z).sum(axis=1)) @ a], np.float32),
        ]
        _adam(params, [gr.astype(np.float32) for gr in grads], state, step)
    return tower


def calibrate(
    tower: TagTower,
    x: sp.csr_matrix,
    activity: np.ndarray,
    user_vecs: np.ndarray,
    trained: np.ndarray,
    level: float,
    catalogue: tuple[sp.csr_matrix, np.ndarray],
) -> None:
    """Set κ and the offset from the warm items (tf-idf rows `x`, `trained` vectors): κ = `level` ×
    the least-squares fit of the tower's scores to the trained ones, both centred per user, and
    the offset adds each user's mean score difference (so it never reorders items for a user).
    Its popularity component is then lowered until no item of the `catalogue` (tf-idf rows, tag
    applications) is above 0 there: a user without evidence keeps the popularity order of warm items."""
    tower.scalars[2], tower.offset[:] = 1.0, 0.0
    mine_vecs = tower.vectors(x, activity).astype(np.float32)
    users = np.asarray(user_vecs, dtype=np.float32)
    mine, theirs = users @ mine_vecs.T, users @ np.asarray(trained, dtype=np.float32).T
    mine -= mine.mean(axis=1, keepdims=True)
    theirs -= theirs.mean(axis=1, keepdims=True)
    denom = float((mine * mine).sum())
    kappa = level * float((mine * theirs).sum()) / denom if denom > 0 else level
    tower.scalars[2] = kappa
    tower.offset[:] = np.asarray(trained, dtype=np.float64).mean(axis=0) - kappa * mine_vecs.mean(axis=0)
    tower.offset[-1] -= max(float(tower.vectors(*catalogue)[:, -1].max(initial=0.0)), 0.0)


def train_tower(
    tag_vectors: sp.csr_matrix,
    activity: np.ndarray,
    user_vecs: np.ndarray,
    confidence: sp.csr_matrix,
    warm: np.ndarray,
    item_vecs: np.ndarray,
    params: TowerParams,
    rng: np.random.Generator,
) -> TagTower:
    """`fit_tower` on the warm items, then `calibrate` against their trained `item_vecs`."""
    tower = fit_tower(
        tag_vectors, activity, user_vecs, confidence, warm, params.cold_hidden, params.cold_epochs, rng
    )
    x = sp.csr_matrix(tag_vectors[warm])
    tagged = np.flatnonzero(tag_vectors.getnnz(axis=1) > 0)
    catalogue = (sp.csr_matrix(tag_vectors[tagged]), np.asarray(activity)[tagged])
    calibrate(tower, x, np.asarray(activity)[warm], user_vecs, item_vecs[warm], params.cold_level, catalogue)
    return tower
