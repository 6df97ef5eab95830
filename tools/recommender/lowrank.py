"""Top singular vectors of a matrix known only through products (randomised SVD, Halko et al. 2011).

The recommender's score matrices (users × items: EASE scores X B, tag cosines P Tᵀ, their blend)
are products of sparse matrices and a small dense one, so `A @ Ω` and `Aᵀ @ Ω` are cheap while A
itself would be a dense users × items array (Last.fm: 1.9k × 17.6k, 270 MB, and most of the
training time when factorised densely). `top_right_vectors` runs the randomised range finder with
`iters` power iterations (QR-normalised on the row side) and `oversample` extra columns on such
an operator and returns the top right singular vectors and values; the seeded generator makes it
deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Product = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Operator:
    """A rows × cols matrix given by `times(V)` = A V (V: cols × d) and `t_times(U)` = Aᵀ U."""

    shape: tuple[int, int]
    times: Product
    t_times: Product

    def __add__(self, other: Operator) -> Operator:
        return Operator(
            self.shape,
            lambda v: self.times(v) + other.times(v),
            lambda u: self.t_times(u) + other.t_times(u),
        )

    def scaled(self, factor: float) -> Operator:
        return Operator(self.shape, lambda v: factor * self.times(v), lambda u: factor * self.t_times(u))


def top_right_vectors(
    op: Operator, dim: int, iters: int, rng: np.random.Generator, oversample: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(cols × d right singular vectors, d singular values), d = min(dim, rank bound)."""
    n_rows, n_cols = op.shape
    dim = max(1, min(dim, n_rows, n_cols))
    width = min(dim + oversample, n_rows, n_cols)
    q, _ = np.linalg.qr(op.times(rng.standard_normal((n_cols, width))))
    for _ in range(iters):  # subspace iteration, orthonormalised on the (smaller) row side only
        q, _ = np.linalg.qr(op.times(op.t_times(q)))
    small = op.t_times(q).T  # Qᵀ A: width × cols
    _, sigma, vt = np.linalg.svd(small, full_matrices=False)
    return np.ascontiguousarray(vt[:dim].T), sigma[:dim]
