"""PPMI + SVD tag embeddings, related tags and the held-out co-occurrence AUC."""

from __future__ import annotations

import numpy as np
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.tagging.embeddings import auc, heldout_cooccurrence_auc, ppmi, related_tags, tag_embeddings
from tagloop.tools.tagging.matrices import cooccurrence, item_tag_matrix

GROUPS = {
    "rockish": ["rock", "grunge", "shoegaze", "post-rock", "indie"],
    "rapish": ["hip-hop", "rap", "trap", "grime", "boom bap"],
    "jazzy": ["jazz", "bebop", "swing", "fusion", "cool jazz"],
}
ALL_TAGS = [t for group in GROUPS.values() for t in group]


def synthetic_items(
    rng: np.random.Generator, n: int = 600, noise: float = 0.1
) -> list[tuple[str, str, float]]:
    rows = []
    names = list(GROUPS)
    for i in range(n):
        group = GROUPS[names[i % 3]]
        for tag in rng.choice(group, size=3, replace=False):
            rows.append((f"i{i}", str(tag), 1.0))
        if rng.random() < noise:  # noise across groups
            rows.append((f"i{i}", str(rng.choice(ALL_TAGS)), 1.0))
    return rows


def test_neighbours_of_a_tag_come_from_its_own_group() -> None:
    m = item_tag_matrix(synthetic_items(np.random.default_rng(1)))
    emb = tag_embeddings(cooccurrence(m.binary()), 8, np.random.default_rng(0))
    near = [t for t, _ in related_tags(emb, m.tags, "shoegaze", 4)]
    assert set(near) <= set(GROUPS["rockish"])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0)


def test_embeddings_are_deterministic_for_a_seed() -> None:
    cooc = cooccurrence(item_tag_matrix(synthetic_items(np.random.default_rng(1))).binary())
    a = tag_embeddings(cooc, 6, np.random.default_rng(3))
    b = tag_embeddings(cooc, 6, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_ppmi_is_nonnegative_and_ignores_the_diagonal() -> None:
    cooc = cooccurrence(item_tag_matrix(synthetic_items(np.random.default_rng(2))).binary())
    p = ppmi(cooc)
    assert p.min() >= 0 and p.diagonal().sum() == 0 and p.nnz > 0


def test_heldout_pairs_score_above_random_pairs() -> None:
    rng = np.random.default_rng(4)
    groups = [[f"g{g}t{t}" for t in range(12)] for g in range(4)]
    rows = [
        (f"i{i}", str(tag), 1.0) for i in range(2000) for tag in rng.choice(groups[i % 4], 3, replace=False)
    ]
    cooc = cooccurrence(item_tag_matrix(rows).binary())
    score, n = heldout_cooccurrence_auc(cooc, 4, np.random.default_rng(0), hide=0.2, min_count=2)
    assert n > 10
    assert score > 0.85


def test_auc_of_separated_scores_is_one_and_of_equal_scores_one_half() -> None:
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_unknown_tag_and_empty_vocabulary_are_invalid_input() -> None:
    emb = np.eye(2)
    with pytest.raises(InvalidInput, match="unknown tag"):
        related_tags(emb, ["a", "b"], "zz")
    with pytest.raises(InvalidInput, match="empty"):
        tag_embeddings(cooccurrence(item_tag_matrix([]).binary()), 4, np.random.default_rng(0))
