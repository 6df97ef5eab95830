"""Ranking metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tagloop.evals.metrics import (
    coverage_at_k,
    hit_at_k,
    ndcg_at_k,
    per_user_ndcg,
    ranking_report,
    recall_at_k,
)
from tagloop.tools.errors import InvalidInput


def test_ndcg_rewards_a_hit_at_rank_one_fully_and_discounts_later_ranks() -> None:
    ranked = np.array([[5, 1, 2], [1, 5, 2]])
    relevant = [np.array([5]), np.array([5])]
    scores = per_user_ndcg(ranked, relevant, 3)
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(1.0 / math.log2(3))


def test_ndcg_ideal_is_capped_at_k_relevant_items() -> None:
    ranked = np.array([[1, 9, 2]])
    relevant = [np.array([1, 2, 3, 4, 5])]
    dcg = 1.0 + 1.0 / math.log2(4)
    idcg = 1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(4)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(dcg / idcg)


def test_recall_counts_unrankable_items_in_the_denominator() -> None:
    ranked = np.array([[1, 2, -1]])
    relevant = [np.array([1, -2, -3, 7])]
    assert recall_at_k(ranked, relevant, 3) == pytest.approx(0.25)


def test_padding_never_matches_and_users_without_relevant_items_are_skipped() -> None:
    ranked = np.array([[-1, -1], [3, 4], [8, 9]])
    relevant = [np.array([-1]), np.array([4]), np.array([], dtype=np.int64)]
    assert hit_at_k(ranked, relevant, 2) == pytest.approx(0.5)
    assert per_user_ndcg(ranked, relevant, 2).shape == (2,)


def test_coverage_is_distinct_items_in_top_k_over_catalogue() -> None:
    ranked = np.array([[1, 2, 7], [2, 3, 8], [-1, 1, 9]])
    assert coverage_at_k(ranked, 2, 10) == pytest.approx(3 / 10)


def test_a_user_without_relevant_items_counts_in_no_metric_not_even_coverage() -> None:
    ranked = np.array([[0, 1, 2], [5, 6, 7]])
    relevant = [np.array([1]), np.array([], dtype=np.int64)]
    report = ranking_report(ranked, relevant, 10, k=2, recall_k=2)
    assert report == pytest.approx(
        {"ndcg@2": 1 / np.log2(3), "recall@2": 1.0, "hit@2": 1.0, "coverage@2": 0.2}
    )
    nobody = ranking_report(ranked[1:], relevant[1:], 10, k=2, recall_k=2)
    assert nobody == {"ndcg@2": 0.0, "recall@2": 0.0, "hit@2": 0.0, "coverage@2": 0.0}


def test_report_names_the_cutoffs_and_bad_k_is_invalid_input() -> None:
    ranked = np.tile(np.arange(20), (2, 1))
    report = ranking_report(ranked, [np.array([0]), np.array([19])], 40, k=10)
    assert set(report) == {"ndcg@10", "recall@20", "hit@10", "coverage@10"}
    assert report["recall@20"] == pytest.approx(1.0)
    assert report["hit@10"] == pytest.approx(0.5)
    with pytest.raises(InvalidInput, match="k must be"):
        ndcg_at_k(ranked, [np.array([0])] * 2, 0)
    with pytest.raises(InvalidInput, match="users"):
        ndcg_at_k(ranked, [np.array([0])], 5)
