"""EASE item-item weights with dropout emphasis (EDLAE), solved in whichever space is smaller.

EASE (Steck 2019) learns B = argmin ‖X − XB‖² + ‖Λ^½ B‖²  with diag(B) = 0, closed form
    P = (XᵀX + Λ)⁻¹,   B = I − P · diag(1 / diag P).
With Λ = λ I this is plain EASE; `dropout` p adds the denoising penalty of EDLAE (Steck 2020),
Λ = λ I + p/(1−p) · diag(XᵀX), which shrinks the weights of frequent items more and was worth
about +1.5% NDCG@10 on the Last.fm validation part.

The item-space inverse costs O(items³). When there are fewer users than items (Last.fm: 1.9k users,
11k warm items) the Woodbury identity gives everything from a users × users inverse instead:
    K = (I + X Λ⁻¹ Xᵀ)⁻¹,   P = Λ⁻¹ − Λ⁻¹ Xᵀ K X Λ⁻¹,   X P = K X Λ⁻¹,
so X B = X − K X Λ⁻¹ D⁻¹ (D = diag P) and B V are exact without the items × items matrix. Nothing
users × items is dense either: the solution is an operator (`scores_times`, `scores_t_times`,
`apply`) over the sparse X and the dense K, which is all a randomised SVD needs; only diag P is
computed column block by column block. Both paths agree to rounding (see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

BLOCK = 2048  # columns of K X Λ⁻¹ held at once while computing diag P


class SplitMatrix:
    """A users × items matrix with its dense-ish columns (e.g. tag profile features, ~30% non-zero
    on Last.fm) held as a dense array and the rest sparse, so products use BLAS where it pays."""

    def __init__(self, x: sp.csr_matrix, dense_share: float = 0.05) -> None:
        x = sp.csc_matrix(x, dtype=np.float64)
        self.shape: tuple[int, int] = x.shape
        dense = x.getnnz(axis=0) > dense_share * max(x.shape[0], 1)
        self.dense_cols, self.sparse_cols = np.flatnonzero(dense), np.flatnonzero(~dense)
        self.xd = np.asarray(x[:, self.dense_cols].toarray())
        self.xs = sp.csr_matrix(x[:, self.sparse_cols])

    def times(self, w: np.ndarray) -> np.ndarray:
        """X @ w for an items × d array w."""
        return np.asarray(self.xs @ w[self.sparse_cols]) + self.xd @ w[self.dense_cols]

    def t_times(self, u: np.ndarray) -> np.ndarray:
        """Xᵀ @ u for a users × d array u."""
        out = np.empty((self.shape[1], u.shape[1]))
        out[self.sparse_cols] = np.asarray(self.xs.T @ u)
        out[self.dense_cols] = self.xd.T @ u
        return out

    def gram(self, inv_lam: np.ndarray) -> np.ndarray:
        """X Λ⁻¹ Xᵀ (users × users)."""
        xs_l = self.xs @ sp.diags(inv_lam[self.sparse_cols])
        return np.asarray((xs_l @ self.xs.T).toarray()) + (self.xd * inv_lam[self.dense_cols]) @ self.xd.T

    def quad_diag(self, k: np.ndarray, inv_lam: np.ndarray) -> np.ndarray:
        """diag(Λ⁻¹ Xᵀ K X Λ⁻¹) (items), the sparse columns a block at a time."""
        out = np.empty(self.shape[1])
        dl = self.xd * inv_lam[self.dense_cols]
        out[self.dense_cols] = np.einsum("ui,ui->i", dl, k @ dl)
        xs_l = sp.csc_matrix(self.xs @ sp.diags(inv_lam[self.sparse_cols]))
        for start in range(0, xs_l.shape[1], BLOCK):
            block = xs_l[:, start : start + BLOCK]
            kxl = np.asarray(block.T @ k).T  # K X Λ⁻¹ for these columns (users × block)
            cols = self.sparse_cols[start : start + BLOCK]
            out[cols] = np.asarray(block.multiply(kxl).sum(axis=0)).ravel()
        return out


@dataclass(frozen=True)
class EaseSolution:
    """What is needed to apply B and the training scores X B to other matrices."""

    inv_lam: np.ndarray  # 1 / Λ (items)
    inv_diag_p: np.ndarray  # 1 / diag(P) (items)
    x: SplitMatrix  # the training matrix
    k: np.ndarray | None  # users × users K (dual form) or None
    weights: np.ndarray | None  # the items × items B (primal form) or None

    def apply(self, v: np.ndarray) -> np.ndarray:
        """B @ v for an items × d matrix v (the fold-in map of a user's history onto v)."""
        if self.weights is not None:
            return np.asarray(self.weights @ v)
        assert self.k is not None
        lw = v * (self.inv_diag_p * self.inv_lam)[:, None]  # Λ⁻¹ D⁻¹ V
        p_w = lw - self.x.t_times(self.k @ self.x.times(lw)) * self.inv_lam[:, None]
        return np.asarray(v - p_w)

    def scores_times(self, v: np.ndarray) -> np.ndarray:
        """(X B) @ v: users × d."""
        if self.weights is not None:
            return self.x.times(self.weights @ v)
        assert self.k is not None
        lw = v * (self.inv_diag_p * self.inv_lam)[:, None]
        return self.x.times(v) - self.k @ self.x.times(lw)

    def scores_t_times(self, u: np.ndarray) -> np.ndarray:
        """(X B)ᵀ @ u: items × d."""
        if self.weights is not None:
            return np.asarray(self.weights.T @ self.x.t_times(u))
        assert self.k is not None
        xt_ku = self.x.t_times(self.k @ u)
        return self.x.t_times(u) - xt_ku * (self.inv_diag_p * self.inv_lam)[:, None]


def solve(x: sp.csr_matrix, lam: float, dropout: float = 0.0, dual: bool | None = None) -> EaseSolution:
    """EASE/EDLAE on a users × items confidence matrix; `dual=None` picks the cheaper space."""
    x = sp.csr_matrix(x, dtype=np.float64)
    n_users, n_items = x.shape
    sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    penalty = lam + (dropout / (1.0 - dropout)) * sq
    inv_lam = 1.0 / penalty
    if dual is None:
        dual = n_users < n_items
    split = SplitMatrix(x)
    if not dual:
        gram = np.asarray((x.T @ x).toarray())
        gram[np.diag_indices_from(gram)] += penalty
        p = np.linalg.inv(gram)
        inv_diag_p = 1.0 / np.diag(p)
        weights = -p * inv_diag_p[None, :]
        np.fill_diagonal(weights, 0.0)
        return EaseSolution(inv_lam, inv_diag_p, split, None, weights)
    k = np.linalg.inv(split.gram(inv_lam) + np.eye(n_users))
    k = (k + k.T) / 2.0
    diag_p = inv_lam - split.quad_diag(k, inv_lam)
    return EaseSolution(inv_lam, 1.0 / diag_p, split, k, None)
