"""Interaction and item-tag data for the recommender: CSV reading, validation, sparse matrices.

Owns the in-memory shapes every other recommender module consumes:
- `Interactions`: a users × items CSR matrix of raw weights (e.g. listen counts) with id maps.
- `ItemTags`: an items × tags CSR matrix of tag weights aligned to a given item id list.

Documented handling of imperfect input (never a traceback):
- empty file / missing columns / non-numeric, negative, NaN or infinite weight → `InvalidInput`
  naming the file, line and field;
- duplicate (user, item) rows → their weights are summed (repeated events add up);
- rows with weight 0 are kept as "seen" but carry no confidence.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.readers import not_utf8


@dataclass(frozen=True)
class Interactions:
    """Users × items weights; row u is user_ids[u], column i is item_ids[i]."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    def user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        return {str(t): i for i, t in enumerate(self.item_ids)}


@dataclass(frozen=True)
class ItemTags:
    """Items × tags weights; row i is item i of the item id list it was aligned to."""

    matrix: sp.csr_matrix
    tags: np.ndarray


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV with a header, checking the header names `required`."""
    if not path.exists():
        raise InvalidInput(f"{path}: file not found")
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, expected a CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM is not a column name
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise InvalidInput(f"{path}: file is empty (expected a header {','.join(required)})")
            missing = [c for c in required if c not in header]
            if missing:
                raise InvalidInput(
                    f"{path}: header lacks column(s) {', '.join(missing)}; got {','.join(header)}"
                )
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}
    except UnicodeDecodeError:  # decoded in blocks: the line is found by a scan
        raise not_utf8(path) from None


def parse_weight(path: Path, line: int, text: str, default: float | None) -> float:
    """A CSV weight: a finite number >= 0 (0 keeps the row as seen); empty is `default` when given.
    `eval tagging` reads its files' weights with it too."""
    if text == "" and default is not None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{path}:{line}: weight {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{path}:{line}: weight {text!r} must be a finite number >= 0")
    return value


def read_triples(path: Path) -> list[tuple[str, str, float]]:
    """`user_id,item_id,weight[,ts]` rows as (user, item, weight); validates every line."""
    out: list[tuple[str, str, float]] = []
    for line, row in csv_rows(path, ("user_id", "item_id", "weight")):
        user, item = row["user_id"], row["item_id"]
        if not user or not item:
            field = "user_id" if not user else "item_id"
            raise InvalidInput(f"{path}:{line}: {field} is empty")
        out.append((user, item, parse_weight(path, line, row["weight"], None)))
    if not out:
        raise InvalidInput(f"{path}: no data rows (expected user_id,item_id,weight lines after the header)")
    return out


def read_item_tags(path: Path) -> list[tuple[str, str, float]]:
    """`item_id,tag[,weight]` rows as (item, tag, weight); a missing weight counts as 1."""
    out: list[tuple[str, str, float]] = []
    for line, row in csv_rows(path, ("item_id", "tag")):
        item, tag = row["item_id"], row["tag"].lower()
        if not item or not tag:
            raise InvalidInput(f"{path}:{line}: {'item_id' if not item else 'tag'} is empty")
        out.append((item, tag, parse_weight(path, line, row.get("weight", ""), 1.0)))
    if not out:
        raise InvalidInput(f"{path}: no data rows (expected item_id,tag[,weight] lines after the header)")
    return out


def build_interactions(
    triples: Sequence[tuple[str, str, float]], item_ids: Sequence[str] | None = None
) -> Interactions:
    """Sparse matrix from (user, item, weight); duplicates are summed. `item_ids` fixes the column
    order (and may list items without interactions); items not in it are appended."""
    items: dict[str, int] = {str(i): n for n, i in enumerate(item_ids or [])}
    users: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for user, item, weight in triples:
        rows.append(users.setdefault(user, len(users)))
        cols.append(items.setdefault(item, len(items)))
        vals.append(weight)
    matrix = sp.coo_matrix(
        (np.asarray(vals, dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
        shape=(len(users), len(items)),
    ).tocsr()
    matrix.sum_duplicates()
    return Interactions(matrix, np.asarray(list(users), dtype=object), np.asarray(list(items), dtype=object))


def build_item_tags(triples: Sequence[tuple[str, str, float]], item_ids: Sequence[str]) -> ItemTags:
    """Items × tags matrix aligned to `item_ids`; tags of items outside that list are dropped."""
    index = {str(i): n for n, i in enumerate(item_ids)}
    tags: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for item, tag, weight in triples:
        row = index.get(item)
        if row is None:
            continue
        rows.append(row)
        cols.append(tags.setdefault(tag, len(tags)))
        vals.append(weight)
    matrix = sp.coo_matrix(
        (
            np.asarray(vals, dtype=np.float64),
            (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        ),
        shape=(len(index), len(tags)),
    ).tocsr()
    matrix.sum_duplicates()
    return ItemTags(matrix, np.asarray(list(tags), dtype=object))


def split_per_user(
    interactions: Interactions, rng: np.random.Generator, share: float = 0.2, min_items: int = 5
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hold out round(share·n) (min 1) of each user's items for users with ≥ min_items items, users
    visited in row order with one generator (the protocol of the Last.fm split). Returns (fit, held)."""
    matrix = interactions.matrix.tocsr()
    held_mask = np.zeros(matrix.nnz, dtype=bool)
    for u in range(matrix.shape[0]):
        start, end = matrix.indptr[u], matrix.indptr[u + 1]
        if end - start < min_items:
            continue
        n_out = max(1, round(share * (end - start)))
        held_mask[start + rng.choice(end - start, size=n_out, replace=False)] = True
    coo = matrix.tocoo()
    parts = []
    for mask in (~held_mask, held_mask):
        parts.append(sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=matrix.shape))
    return parts[0], parts[1]
