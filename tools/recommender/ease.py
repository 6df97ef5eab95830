"""EASE item-item weights with dropout emphasis (EDLAE), solved in whichever space is smaller.

EASE (Steck 2019) learns B = argmin ‖X − XB‖² + ‖Λ^½ B‖²  with diag(B) = 0, closed form
    P = (XᵀX + Λ)⁻¹,   B = I − P · diag(1 / diag P).
With Λ = λ I this is plain EASE; `dropout` p adds the denoising penalty of EDLAE (Steck 2020),
Λ = λ I + p/(1−p) · diag(XᵀX), which shrinks the weights of frequent items more and was worth
about +1.5% NDCG@10 on the Last.fm validation part.

The item-space inverse costs O(items³). When there are fewer users than items (Last.fm: 1.9k users,
5k warm items) the Woodbury identity gives everything from a users × users inverse instead:
    K = (I + X Λ⁻¹ Xᵀ)⁻¹,   P = Λ⁻¹ − Λ⁻¹ Xᵀ K X Λ⁻¹,   X P = K X Λ⁻¹,
so the training scores X B = X − (K X Λ⁻¹) diag(1/diag P) and the fold-in map B V for any V are
exact without forming the items × items matrix. Both paths agree to rounding (see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class EaseSolution:
    """Training scores X B (users × items) and what is needed to apply B to other matrices."""

    scores: np.ndarray
    inv_lam: np.ndarray  # 1 / Λ (items)
    inv_diag_p: np.ndarray  # 1 / diag(P) (items)
    x: sp.csr_matrix  # the training matrix (dual form only)
    k: np.ndarray | None  # users × users K (dual form) or None
    weights: np.ndarray | None  # the items × items B (primal form) or None

    def apply(self, v: np.ndarray) -> np.ndarray:
        """B @ v for an items × d matrix v (the fold-in map of a user's history onto v)."""
        if self.weights is not None:
            return np.asarray(self.weights @ v)
        assert self.k is not None
        w = v * self.inv_diag_p[:, None]  # D⁻¹ V
        lw = w * self.inv_lam[:, None]  # Λ⁻¹ D⁻¹ V
        p_w = lw - (self.x.T @ (self.k @ np.asarray(self.x @ lw))) * self.inv_lam[:, None]
        return np.asarray(v - p_w)


def solve(x: sp.csr_matrix, lam: float, dropout: float = 0.0, dual: bool | None = None) -> EaseSolution:
    """EASE/EDLAE on a users × items confidence matrix; `dual=None` picks the cheaper space."""
    x = sp.csr_matrix(x, dtype=np.float64)
    n_users, n_items = x.shape
    sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    penalty = lam + (dropout / (1.0 - dropout)) * sq
    inv_lam = 1.0 / penalty
    if dual is None:
        dual = n_users < n_items
    dense = x.toarray()
    if not dual:
        gram = np.asarray((x.T @ x).toarray())
        gram[np.diag_indices_from(gram)] += penalty
        p = np.linalg.inv(gram)
        inv_diag_p = 1.0 / np.diag(p)
        weights = -p * inv_diag_p[None, :]
        np.fill_diagonal(weights, 0.0)
        return EaseSolution(dense @ weights, inv_lam, inv_diag_p, x, None, weights)
    xl = dense * inv_lam[None, :]  # X Λ⁻¹
    k = np.linalg.inv(xl @ dense.T + np.eye(n_users))
    kxl = k @ xl  # = X P
    diag_p = inv_lam - np.einsum("ui,ui->i", xl, kxl)
    inv_diag_p = 1.0 / diag_p
    # X B = X − X P D⁻¹ (the diagonal of B is zero by construction)
    scores = dense - kxl * inv_diag_p[None, :]
    return EaseSolution(scores, inv_lam, inv_diag_p, x, k, None)
