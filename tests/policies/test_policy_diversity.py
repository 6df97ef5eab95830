"""MMR and calibration: one knob each; λ=0 is relevance, λ>0 buys diversity / a closer tag mix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tagloop.policies import PolicyConfig, calibrated_rerank, calibration_kl, choose_slate, mmr_rerank
from tagloop.policies.diversity import MMRState, tag_similarity


def _clusters() -> tuple[np.ndarray, np.ndarray]:
    """Ten items: the 6 best all carry tag 0, the rest tags 1..4; scores decrease with index."""
    tags = np.zeros((10, 5))
    tags[:6, 0] = 1.0
    for i in range(6, 10):
        tags[i, i - 5] = 1.0
    return np.linspace(1.0, 0.5, 10), tags


def _intra_list_similarity(order: np.ndarray, tags: np.ndarray) -> float:
    sim = tag_similarity(tags)
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    return float(np.mean([sim[a, b] for a, b in pairs]))


def test_mmr_lambda_zero_is_relevance_and_larger_lambda_diversifies() -> None:
    scores, tags = _clusters()
    assert list(mmr_rerank(scores, tags, 5, 0.0)) == [0, 1, 2, 3, 4]
    ils = [_intra_list_similarity(mmr_rerank(scores, tags, 5, lam), tags) for lam in (0.0, 0.3, 0.7)]
    assert ils[0] == pytest.approx(1.0)
    assert ils[1] < ils[0] and ils[2] <= ils[1]


def test_mmr_similarity_rows_equal_dense_cosine() -> None:
    rng = np.random.default_rng(2)
    tags = sp.random(30, 12, density=0.3, random_state=3, format="csr")
    state = MMRState(tags)
    dense = tag_similarity(tags)
    for j in rng.choice(30, 5, replace=False):
        assert np.allclose(state.similarity_row(int(j)), dense[j])


def test_calibration_moves_the_slate_mix_towards_the_user() -> None:
    scores, tags = _clusters()
    user = np.array([0.2, 0.2, 0.2, 0.2, 0.2])  # likes all five tags equally
    kl0 = calibration_kl(calibrated_rerank(scores, tags, user, 5, 0.0), tags, user)
    kl5 = calibration_kl(calibrated_rerank(scores, tags, user, 5, 0.5), tags, user)
    assert kl5 < kl0
    perfect = np.array([0, 6, 7, 8, 9])
    assert calibration_kl(perfect, tags, user) == pytest.approx(0.0, abs=1e-12)


def test_choose_slate_applies_mmr_only_when_tags_are_given() -> None:
    scores, tags = _clusters()
    cfg = PolicyConfig.model_validate(
        {
            "k": 5,
            "exploration": {"epsilon": 0},
            "fairness": {"lambda": 0, "long_tail_min_share": 0},
            "diversity": {"mmr_lambda": 0.5},
        }
    )
    no_tags = choose_slate(cfg, scores, ["p"] * 10, None, None, {}, np.zeros(10, bool), 0)
    with_tags = choose_slate(cfg, scores, ["p"] * 10, tags, None, {}, np.zeros(10, bool), 0)
    assert no_tags.actions == (0, 1, 2, 3, 4) and no_tags.context["skipped"] == ["mmr: no item_tags"]
    assert _intra_list_similarity(np.array(with_tags.actions), tags) < 1.0


def test_sparse_row_path_agrees_with_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    tags = sp.random(40, 15, density=0.25, random_state=7, format="csr")
    dense = MMRState(tags.toarray())  # dense rows, one matrix-vector product per placed item
    monkeypatch.setattr(MMRState, "DENSE_CELLS", 0)
    rows = MMRState(tags)  # sparse input: sparse unit rows
    # the same entries in a tag space of a million columns (only the used ones are kept)
    wide = sp.csr_array((tags.data, tags.indices * 50_000 + 7, tags.indptr), shape=(40, 1_000_000))
    rows_wide = MMRState(wide)
    monkeypatch.setattr(MMRState, "DENSE_CELLS", 20_000)
    narrow = MMRState(tags)  # sparse input of 600 cells: densified
    monkeypatch.setattr(MMRState, "DENSE_LIMIT", 10)
    lazy = MMRState(tags)
    assert dense.dense is not None and rows.unit is not None and rows_wide.unit is not None
    assert rows_wide.unit.shape[1] <= 15 and narrow.dense is not None
    assert lazy.dense is None and lazy.unit is None
    for j in (0, 7, 39):
        expected = dense.similarity_row(j)
        for state in (rows, rows_wide, narrow, lazy):
            assert np.allclose(state.similarity_row(j), expected, atol=1e-12)


def test_mmr_slates_are_the_same_from_dense_and_sparse_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MMRState, "DENSE_CELLS", 0)  # the sparse rows, not densified
    rng = np.random.default_rng(11)
    for _ in range(20):
        tags = sp.random(60, 40, density=0.1, random_state=int(rng.integers(1 << 30)), format="csr")
        scores = rng.random(60)
        assert list(mmr_rerank(scores, tags, 10, 0.4)) == list(mmr_rerank(scores, tags.toarray(), 10, 0.4))
