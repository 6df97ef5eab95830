"""Exact top-k of the active model in this process, for catalogues small enough to scan.

The CF candidate source (source.py) searches the model's HNSW index on the server. On real data
that search is the run's most expensive statement: Last.fm users have played ~130 items each, the
model ranks them at the top, so the unfiltered top k + k/2 holds fewer than k unseen items for most
users and they are asked again with the seen filter on the server (an iterative scan, ~1.8 ms of
server time per user; `tagloop run --all` waited on it for a quarter of its time). The process
serving the model already holds every trained item's vector (`RecModel.item_vecs`, used to fold
users in), so when items × dimensions is at most `EXACT_MAX_CELLS` a chunk of users is scored
against the whole catalogue by one matrix product (~0.25 ms per user for 20,000 items × 384
dimensions on one BLAS thread), the seen items masked, and the top taken exactly: no approximation,
no second statement, no server time.

`Catalogue` is the model's item vectors plus the items placed after training (`item_vectors.cold`,
written by any process: re-read once per `max_age` of the run clock and after this process placed
some). Items deleted since training are still rows here; the caller drops them by their info.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.rows import tuple_row

from tagloop.tools.recommender.history import Served

EXACT_MAX_CELLS = 16_000_000  # items × dimensions; ~0.5 ms of CPU per user at this size
_COLD = "select item_id, vec from item_vectors where model_id = %(m)s and cold order by item_id"


def fits(served: Served, max_cells: int = EXACT_MAX_CELLS) -> bool:
    model = served.model
    return int(model.item_vecs.shape[0]) * model.dim <= max_cells


@dataclass(frozen=True)
class Catalogue:
    """Every item the model can propose, as rows: the trained items, then the cold-placed ones."""

    model_id: int
    trained_at: Any
    ids: np.ndarray  # row → item id (object array)
    trained: np.ndarray  # trained items × d, float32 (the model's own array, not a copy)
    cold: np.ndarray  # cold items × d, float32
    index: Mapping[str, int]  # item id → row
    order: np.ndarray  # row → rank of its id among all ids (ties broken by item id, as in SQL)

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], served: Served) -> Catalogue:
        """The served model's rows and the cold rows stored now (one statement)."""
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            rows = cur.execute(_COLD, {"m": served.row.id}).fetchall()
        model = served.model
        known = served.index
        rows = [r for r in rows if r[0] not in known]
        d = model.dim
        cold = np.asarray([as_array(r[1]) for r in rows], dtype=np.float32).reshape(len(rows), d)
        ids = np.concatenate(
            [np.asarray(model.item_ids, dtype=object), np.array([r[0] for r in rows], dtype=object)]
        )
        index = dict(known)
        index.update((r[0], len(known) + n) for n, r in enumerate(rows))
        order = np.empty(len(ids), dtype=np.int64)
        order[np.argsort(ids.astype(str), kind="stable")] = np.arange(len(ids))
        return cls(served.row.id, served.row.trained_at, ids, model.item_vecs, cold, index, order)

    def matches(self, served: Served) -> bool:
        return (self.model_id, self.trained_at) == (served.row.id, served.row.trained_at)

    def top(
        self, vectors: Mapping[str, np.ndarray], seen: Mapping[str, frozenset[str]], k: int
    ) -> dict[str, list[tuple[str, float]]]:
        """Each user's k best unseen rows by inner product, best first (equal scores by item id)."""
        users = list(vectors)
        if not users or not len(self.ids):
            return {u: [] for u in users}
        u = np.vstack([as_array(vectors[x]) for x in users])
        scores = u @ self.trained.T
        if len(self.cold):
            scores = np.hstack([scores, u @ self.cold.T])
        out: dict[str, list[tuple[str, float]]] = {}
        index, ids, order, n = self.index, self.ids, self.order, scores.shape[1]
        for row, user in zip(scores, users, strict=True):
            masked = _seen_rows(index, seen.get(user, frozenset()))
            if len(masked):
                row[masked] = -np.inf
            want = min(k, n - len(masked))
            if want <= 0:
                out[user] = []
                continue
            top = np.argpartition(-row, want - 1)[:want] if want < n else np.arange(n)
            top = top[np.lexsort((order[top], -row[top]))]
            out[user] = [(ids[i], float(row[i])) for i in top.tolist()]
        return out


def as_array(vec: Vector | np.ndarray) -> np.ndarray:
    """A vector as read in binary (pgvector's `Vector`) or folded here, as float32."""
    return np.asarray(vec.to_numpy() if isinstance(vec, Vector) else vec, dtype=np.float32)


def _seen_rows(index: Mapping[str, int], seen: Sequence[str] | frozenset[str]) -> np.ndarray:
    get = index.get
    return np.fromiter((r for r in map(get, seen) if r is not None), dtype=np.int64)
