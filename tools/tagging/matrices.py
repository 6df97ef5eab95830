"""Sparse matrices the tagging algorithms work on, built from plain rows.

- `ItemTags`: an item × tag matrix (CSR, float weights) with the item ids and tag names of its
  rows and columns. `item_tag_matrix(rows)` builds one from `(item_id, tag, weight)` rows,
  summing duplicates; pass `items`/`tags` to fix the row/column order (unknown ones are dropped).
- `interaction_matrix(rows, items)`: a user × item matrix aligned to a given item order, from
  `(user_id, item_id, weight)` rows; items outside the order are ignored.
- `cooccurrence(x)`: the tag × tag co-occurrence counts of a binary item × tag matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class ItemTags:
    """Rows are items, columns tags; values are tag weights (> 0)."""

    matrix: sp.csr_matrix
    items: list[str]
    tags: list[str]

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}

    def tag_index(self) -> dict[str, int]:
        return {tag: j for j, tag in enumerate(self.tags)}

    def tags_of(self, row: int) -> dict[str, float]:
        lo, hi = self.matrix.indptr[row], self.matrix.indptr[row + 1]
        return {
            self.tags[j]: float(v)
            for j, v in zip(self.matrix.indices[lo:hi], self.matrix.data[lo:hi], strict=True)
        }

    def binary(self) -> sp.csr_matrix:
        out = self.matrix.copy()
        out.data = np.ones_like(out.data)
        return out


def item_tag_matrix(
    rows: Iterable[tuple[str, str, float]],
    items: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
) -> ItemTags:
    """Build an `ItemTags` from rows; ids are kept in first-seen order unless `items`/`tags` are given."""
    item_ix: dict[str, int] = {item: i for i, item in enumerate(items)} if items is not None else {}
    tag_ix: dict[str, int] = {tag: j for j, tag in enumerate(tags)} if tags is not None else {}
    r: list[int] = []
    c: list[int] = []
    v: list[float] = []
    for item, tag, weight in rows:
        i = item_ix.get(item)
        if i is None:
            if items is not None:
                continue
            i = item_ix.setdefault(item, len(item_ix))
        j = tag_ix.get(tag)
        if j is None:
            if tags is not None:
                continue
            j = tag_ix.setdefault(tag, len(tag_ix))
        r.append(i)
        c.append(j)
        v.append(float(weight))
    shape = (len(item_ix), len(tag_ix))
    matrix = sp.csr_matrix((np.asarray(v, dtype=np.float64), (r, c)), shape=shape)
    matrix.sum_duplicates()
    return ItemTags(matrix=matrix, items=list(item_ix), tags=list(tag_ix))


def interaction_matrix(rows: Iterable[tuple[str, str, float]], items: Sequence[str]) -> sp.csr_matrix:
    """User × item matrix (users in first-seen order) aligned to `items`; duplicates are summed."""
    item_ix = {item: i for i, item in enumerate(items)}
    user_ix: dict[str, int] = {}
    r: list[int] = []
    c: list[int] = []
    v: list[float] = []
    for user, item, weight in rows:
        i = item_ix.get(item)
        if i is None:
            continue
        r.append(user_ix.setdefault(user, len(user_ix)))
        c.append(i)
        v.append(float(weight))
    matrix = sp.csr_matrix((np.asarray(v, dtype=np.float64), (r, c)), shape=(len(user_ix), len(items)))
    matrix.sum_duplicates()
    return matrix


def cooccurrence(binary: sp.csr_matrix) -> sp.csr_matrix:
    """Tag × tag counts of items carrying both tags; the diagonal holds each tag's item count."""
    return sp.csr_matrix(binary.T @ binary)
