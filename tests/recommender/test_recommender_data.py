"""CSV reading and validation: every bad input is a clear InvalidInput, duplicates are summed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.recommender.confidence import confidence_matrix
from tagloop.tools.recommender.data import build_interactions, read_item_tags, read_triples, split_per_user


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("user_id,item_id,weight\n", "no data rows"),
        ("user,item,weight\n1,2,3\n", "lacks column"),
        ("user_id,item_id,weight\n1,2,lots\n", r":2: weight 'lots' is not a number"),
        ("user_id,item_id,weight\n1,2,3\n1,3,-1\n", r":3: weight '-1' must be"),
        ("user_id,item_id,weight\n1,2,nan\n", "finite"),
        ("user_id,item_id,weight\n1,,3\n", "item_id is empty"),
    ],
)
def test_bad_interaction_files_raise_invalid_input_naming_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        read_triples(path)


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        read_triples(tmp_path / "nope.csv")


def test_duplicate_rows_are_summed() -> None:
    inter = build_interactions([("u", "a", 2.0), ("u", "a", 3.0), ("v", "b", 1.0)])
    assert inter.matrix.shape == (2, 2)
    assert inter.matrix[0, 0] == pytest.approx(5.0)


def test_item_tags_weight_defaults_to_one_and_tags_are_lowercased(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    path.write_text("item_id,tag\na,Shoegaze\n")
    assert read_item_tags(path) == [("a", "shoegaze", 1.0)]


def test_confidence_is_log_scaled_to_each_users_max() -> None:
    inter = build_interactions([("u", "a", 9.0), ("u", "b", 99.0), ("v", "a", 1.0)])
    conf = confidence_matrix(inter.matrix).toarray()
    assert conf[0, 1] == pytest.approx(1.0)
    assert conf[0, 0] == pytest.approx(np.log(10) / np.log(100))
    assert conf[1, 0] == pytest.approx(1.0)


def test_split_holds_out_a_fifth_of_each_users_items_only_for_users_with_five() -> None:
    triples = [(f"u{u}", f"i{i}", 1.0) for u in range(6) for i in range(10 if u else 4)]
    inter = build_interactions(triples)
    fit, held = split_per_user(inter, np.random.default_rng(1))
    per_user = np.diff(held.tocsr().indptr)
    assert per_user[0] == 0 and all(per_user[1:] == 2)
    assert fit.nnz + held.nnz == inter.matrix.nnz
    assert fit.multiply(held).nnz == 0
