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
written by any process), one per process for the served model (`catalogue`: every run and HTTP
request shares it), read again once per `max_age` of the run clock and after this process placed
items. An item deleted since is masked from the next read on (its `item_vectors` row went with it),
so for up to `max_age` it can still be proposed, as a co-likes neighbour can until the next run.
The cap counts the cold items too, and bounds the items alone: a chunk's score matrix is 50 users ×
items floats (20 MB at `EXACT_MAX_ITEMS`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.rows import tuple_row

from tagloop.tools.recommender.history import Served
from tagloop.tools.timed import Timed

EXACT_MAX_CELLS = 16_000_000  # items × dimensions; ~0.5 ms of CPU per user at this size
EXACT_MAX_ITEMS = 100_000
# every stored row of the model: the ids say which trained items still exist, cold rows bring vectors
_ROWS = """select item_id, case when cold then vec end as vec from item_vectors
where model_id = %(m)s order by item_id"""
_SHARED: dict[tuple[int, Any], Timed[Catalogue]] = {}
_LOCK = threading.Lock()


def fits(served: Served, max_cells: int = EXACT_MAX_CELLS, cold: int | None = None) -> bool:
    """Whether the model's items (with `cold` placed items; by default as many as the last read
    found) are few enough to scan here."""
    if cold is None:
        held = _timed(served).latest()
        cold = len(held.cold) if held is not None else 0
    items = int(served.model.item_vecs.shape[0]) + cold
    return items <= EXACT_MAX_ITEMS and items * served.model.dim <= max_cells


def catalogue(
    conn: psycopg.Connection[Any], served: Served, now: datetime, max_age: timedelta, *, renew: bool = False
) -> Catalogue:
    """The process's catalogue of `served`: read at most `max_age` before `now`, or now (`renew`)."""
    return _timed(served).get(now, timedelta() if renew else max_age, lambda: Catalogue.read(conn, served))


def _timed(served: Served) -> Timed[Catalogue]:
    key = (served.row.id, served.row.trained_at)
    with _LOCK:
        held = _SHARED.get(key)
        if held is None:
            _SHARED.clear()  # one model is served at a time: drop the last one's
            held = _SHARED[key] = Timed()
        return held


@dataclass(frozen=True)
class Catalogue:
    """Every item the model can propose, as rows: the trained items, then the cold-placed ones."""

    ids: np.ndarray  # row → item id (object array)
    trained: np.ndarray  # trained items × d, float32 (the model's own array, not a copy)
    cold: np.ndarray  # cold items × d, float32
    index: Mapping[str, int]  # item id → row
    order: np.ndarray  # row → rank of its id among all ids (ties broken by item id, as in SQL)
    gone: np.ndarray  # rows of trained items deleted since training (no item_vectors row any more)

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], served: Served) -> Catalogue:
        """The served model's rows, what is left of them and the cold rows stored now (one statement)."""
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            rows = cur.execute(_ROWS, {"m": served.row.id}).fetchall()
        model = served.model
        known = served.index
        stored = {r[0] for r in rows}
        gone = np.fromiter((n for i, n in known.items() if i not in stored), dtype=np.int64)
        rows = [r for r in rows if r[0] not in known and r[1] is not None]
        d = model.dim
        cold = np.asarray([as_array(r[1]) for r in rows], dtype=np.float32).reshape(len(rows), d)
        ids = np.concatenate(
            [np.asarray(model.item_ids, dtype=object), np.array([r[0] for r in rows], dtype=object)]
        )
        index = dict(known)
        index.update((r[0], len(known) + n) for n, r in enumerate(rows))
        order = np.empty(len(ids), dtype=np.int64)
        order[np.argsort(ids.astype(str), kind="stable")] = np.arange(len(ids))
        return cls(ids, model.item_vecs, cold, index, order, gone)

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
        if len(self.gone):
            scores[:, self.gone] = -np.inf
        out: dict[str, list[tuple[str, float]]] = {}
        index, ids, order, total = self.index, self.ids, self.order, scores.shape[1]
        for row, user in zip(scores, users, strict=True):
            masked = _seen_rows(index, seen.get(user, frozenset()))
            if len(self.gone) and len(masked):
                masked = np.setdiff1d(masked, self.gone)
            if len(masked):
                row[masked] = -np.inf
            want = min(k, total - len(self.gone) - len(masked))  # the rows left are at -inf
            if want <= 0:
                out[user] = []
                continue
            top = np.argpartition(-row, want - 1)[:want] if want < total else np.arange(total)
            top = top[np.lexsort((order[top], -row[top]))]
            out[user] = [(ids[i], float(row[i])) for i in top.tolist()]
        return out


def as_array(vec: Vector | np.ndarray) -> np.ndarray:
    """A vector as read in binary (pgvector's `Vector`) or folded here, as float32."""
    return np.asarray(vec.to_numpy() if isinstance(vec, Vector) else vec, dtype=np.float32)


def _seen_rows(index: Mapping[str, int], seen: Sequence[str] | frozenset[str]) -> np.ndarray:
    get = index.get
    return np.fromiter((r for r in map(get, seen) if r is not None), dtype=np.int64)
