"""EASE/EDLAE solver: the users-space (Woodbury) path equals the items-space path, the diagonal
stays zero, and the tag-feature CF block folds declared interests into the CF scores."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tagloop.tools.recommender.ease import solve


def _matrix(users: int, items: int, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.3) * rng.random((users, items))
    return sp.csr_matrix(dense)


def test_dual_and_primal_solutions_agree() -> None:
    x = _matrix(12, 30)
    dual, primal = solve(x, 2.0, 0.3, dual=True), solve(x, 2.0, 0.3, dual=False)
    eye = np.eye(30)
    assert np.allclose(dual.scores_times(eye), primal.scores_times(eye), atol=1e-8)
    v = np.random.default_rng(2).normal(size=(30, 4))
    u = np.random.default_rng(3).normal(size=(12, 4))
    assert np.allclose(dual.apply(v), primal.apply(v), atol=1e-8)
    assert np.allclose(dual.scores_t_times(u), primal.scores_t_times(u), atol=1e-8)
    assert primal.weights is not None
    assert np.allclose(np.diag(primal.weights), 0.0)
    assert np.allclose(primal.scores_times(eye), x.toarray() @ primal.weights)
    assert np.allclose(primal.scores_t_times(u), (x.toarray() @ primal.weights).T @ u)


def test_dropout_shrinks_the_weights_of_frequent_items() -> None:
    x = _matrix(40, 15, seed=4)
    plain, dropped = solve(x, 1.0, 0.0), solve(x, 1.0, 0.5)
    assert plain.weights is not None and dropped.weights is not None
    assert np.abs(dropped.weights).sum() < np.abs(plain.weights).sum()
