"""Randomised SVD on an operator: the top right singular vectors and values of a matrix given only
by its products match numpy's dense SVD, and the same seed gives the same vectors."""

from __future__ import annotations

import numpy as np

from tagloop.tools.recommender.lowrank import Operator, top_right_vectors


def _op(a: np.ndarray) -> Operator:
    return Operator(a.shape, lambda v: a @ v, lambda u: a.T @ u)


def test_top_right_vectors_match_the_dense_svd() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6)) @ np.diag([9.0, 7, 5, 3, 2, 1]) @ rng.normal(size=(6, 90))
    v, sigma = top_right_vectors(_op(a), 3, 4, np.random.default_rng(1))
    _, s_ref, vt_ref = np.linalg.svd(a, full_matrices=False)
    assert np.allclose(sigma, s_ref[:3], rtol=1e-6)
    assert np.allclose(np.abs(v.T @ vt_ref[:3].T), np.eye(3), atol=1e-6)  # same vectors up to sign


def test_sums_and_scaling_of_operators_and_the_seed() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 20)), rng.normal(size=(10, 20))
    op = _op(a) + _op(b).scaled(0.5)
    w = rng.normal(size=(20, 3))
    assert np.allclose(op.times(w), (a + 0.5 * b) @ w)
    first = top_right_vectors(op, 4, 2, np.random.default_rng(5))[0]
    assert np.array_equal(first, top_right_vectors(op, 4, 2, np.random.default_rng(5))[0])
