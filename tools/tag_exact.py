"""Exact tag-profile retrieval in this process (`TAGLOOP_TAG_SEARCH=exact`), the alternative to the
pgvector HNSW search of tools/retrieval.py.

The HNSW graph is approximate, and pgvector builds it at random: two builds over the same items can
return different neighbours, so whatever a run decides depends on the index build (the simulator's
"same seed, same JSON" held only while its world database was reused). Scanning every item on the
server is exact but costs a sparse inner product per item and user (~5 ms per user over the 17,632
Last.fm artists). Here the items' tag vectors are held once per process as a sparse tags × items
matrix, and a chunk of users' profiles is multiplied by it: the work is proportional to the items
sharing a tag with each profile, not to the catalogue.

Message templates (items of kind `message`) are not in the catalogue: they are copy, not content.
Semantics are those of `retrieval.tag_candidates`: score = the inner product of the user's profile
(`user_profiles.tags`) and the item's `tag_vec`, only items scoring above 0, the user's seen items
excluded, best first and equal scores in item id order, users without a profile getting nothing.
Scores are summed in float64 (pgvector sums in float32), so they can differ in the last digits.

The catalogue is shared by the process's runs (`catalogue`) and read again once per `max_age` of the
run clock: an item added or retagged since is found (or ranked by its new tags) at the next read.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import scipy.sparse as sp
from psycopg.rows import tuple_row

from tagloop.tools.sparsevec import parse_sparsevecs
from tagloop.tools.store.pending import Pending, request
from tagloop.tools.timed import Timed

MAX_AGE = timedelta(minutes=1)
# in byte order (collate "C"), which is Python's string order: ties go by item id as with HNSW
# (retrieval._best_first), whatever the database's collation
_ITEMS = """select id, title, provider_id, sparsevec_send(tag_vec) from items
where tag_vec is not null and kind <> 'message' order by id collate "C"
"""
_PROFILES = """select user_id, sparsevec_send(tags) from user_profiles
where user_id = any(%(users)s) and tags is not null"""
_SHARED: dict[tuple[str, str, str], Timed[TagCatalogue]] = {}  # per database: (host, port, dbname)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TagCatalogue:
    """Every tagged item (in id order, so a lower column is a smaller id) and their tag vectors as a
    tags × items CSR matrix over the tags some item carries (`carried`: those tag ids, sorted)."""

    ids: list[str]
    titles: list[str | None]
    providers: list[str | None]
    carried: np.ndarray
    by_tag: sp.csr_array  # len(carried) × items
    index: dict[str, int]  # item id → column

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> TagCatalogue:
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            rows = cur.execute(_ITEMS).fetchall()
        ids = [r[0] for r in rows]
        nnz, tags, weights = parse_sparsevecs([bytes(r[3]) for r in rows])
        carried, rows_of = np.unique(tags, return_inverse=True)
        items = np.repeat(np.arange(len(ids)), nnz)
        matrix = sp.csr_array((weights, (rows_of, items)), shape=(carried.size, len(ids)))
        index = dict(zip(ids, range(len(ids)), strict=True))
        return cls(ids, [r[1] for r in rows], [r[2] for r in rows], carried, matrix, index)

    def top(
        self, profiles: Mapping[str, tuple[np.ndarray, np.ndarray]], seen: Mapping[str, Any], k: int
    ) -> dict[str, list[tuple[str, str | None, str | None, float]]]:
        """Per user with a profile ((tag ids, weights)): the k best unseen items scoring above 0, as
        (item, title, provider, score), best first, equal scores in item id order."""
        users = list(profiles)
        if not users or not self.ids or not self.carried.size:
            return {u: [] for u in users}
        lens = np.fromiter((profiles[u][0].size for u in users), np.int64, len(users))
        tags = np.concatenate([profiles[u][0] for u in users])
        weights = np.concatenate([profiles[u][1] for u in users])
        owner = np.repeat(np.arange(len(users)), lens)
        at = np.minimum(np.searchsorted(self.carried, tags), self.carried.size - 1)
        known = self.carried[at] == tags  # tags no item carries add nothing
        wanted = sp.csr_array(
            (weights[known], (owner[known], at[known])), shape=(len(users), self.carried.size)
        )
        scores = (wanted @ self.by_tag).tocsr()
        return {n_user: self._best(scores, n, seen.get(n_user, ()), k) for n, n_user in enumerate(users)}

    def _best(
        self, scores: sp.csr_array, n: int, seen: Any, k: int
    ) -> list[tuple[str, str | None, str | None, float]]:
        lo, hi = scores.indptr[n], scores.indptr[n + 1]
        items, s = scores.indices[lo:hi], scores.data[lo:hi]
        keep = s > 0
        if seen:
            index = self.index
            gone = np.fromiter((index.get(i, -1) for i in seen), np.int64, len(seen))
            keep &= ~np.isin(items, gone)
        items, s = items[keep], s[keep]
        if s.size > k:  # the k best and whatever ties the k-th, then exactly ordered
            kth = -np.partition(-s, k - 1)[k - 1]
            tied = s >= kth
            items, s = items[tied], s[tied]
        order = np.lexsort((items, -s))[:k]  # score desc, then item id (column order is id order)
        ids, titles, providers = self.ids, self.titles, self.providers
        return [
            (ids[j], titles[j], providers[j], float(v))
            for j, v in zip(items[order].tolist(), s[order].tolist(), strict=True)
        ]


def catalogue(conn: psycopg.Connection[Any], now: datetime, max_age: timedelta = MAX_AGE) -> TagCatalogue:
    """The process's catalogue of the connection's database, read again when it is `max_age` older
    than the run clock `now` (or newer: a run clock set in the past reads its own)."""
    info = conn.info
    key = (info.host, str(info.port), info.dbname)
    with _LOCK:
        return _SHARED.setdefault(key, Timed()).get(now, max_age, lambda: TagCatalogue.read(conn))


Profiles = dict[str, tuple[np.ndarray, np.ndarray]]  # user → (tag ids, weights)


def request_profiles(conn: psycopg.Connection[Any], user_ids: list[str]) -> Pending[Profiles]:
    """Send the read of the users' tag profiles (users without one are left out)."""
    return request(conn, _PROFILES, {"users": user_ids}, _profiles, tuples=True, binary=True)


def _profiles(rows: list[Any]) -> Profiles:
    nnz, tags, weights = parse_sparsevecs([bytes(r[1]) for r in rows])
    ends = np.cumsum(nnz)
    return {
        r[0]: (tags[end - n : end], weights[end - n : end])
        for r, n, end in zip(rows, nnz.tolist(), ends.tolist(), strict=True)
    }
