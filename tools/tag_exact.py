"""Exact tag-profile retrieval in this process (`TAGLOOP_TAG_SEARCH=exact`), the alternative to the
pgvector HNSW search of tools/retrieval.py.

The HNSW graph is approximate, and pgvector builds it at random: two builds over the same items can
return different neighbours, so whatever a run decides depends on the index build (the simulator's
"same seed, same JSON" held only while its world database was reused). Scanning every item on the
server is exact but costs a sparse inner product per item and user (~5 ms per user over the 17,632
Last.fm artists). Here the items' tag vectors are held once per process as a sparse items × tags
matrix, and a chunk of users' profiles (dense tag columns) is multiplied by it in one sparse × dense
product; each user's k best are then picked from the chunk's dense score rows by array operations
(a sparse × sparse product with one sparse score row per user cost twice as much: users' profiles
cover hundreds of tags, so nearly every item scores). Users go through in slices of at most
`MAX_CELLS` users × items scores (or users × tags profile columns), so memory stays bounded on a large
catalogue or tag space.

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
from itertools import chain, repeat
from typing import Any

import numpy as np
import psycopg
import scipy.sparse as sp
from psycopg.rows import tuple_row

from tagloop.tools.sparsevec import parse_sparsevecs
from tagloop.tools.store.pending import Pending, request
from tagloop.tools.timed import Timed

MAX_AGE = timedelta(minutes=1)
MAX_CELLS = 1 << 22  # users × items scores (and users × tags profile columns) per slice: 32 MiB of float64
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
    """Every tagged item (in id order, so a lower row is a smaller id) and their tag vectors as an
    items × tags CSR matrix over the tags some item carries (`carried`: those tag ids, sorted)."""

    ids: list[str]
    titles: list[str | None]
    providers: list[str | None]
    carried: np.ndarray
    by_item: sp.csr_array  # items × len(carried), column indices sorted
    index: dict[str, int]  # item id → row

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> TagCatalogue:
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            rows = cur.execute(_ITEMS).fetchall()
        nnz, tags, weights = parse_sparsevecs([r[3] for r in rows])
        return cls.build([(r[0], r[1], r[2]) for r in rows], nnz, tags, weights)

    @classmethod
    def build(
        cls,
        items: list[tuple[str, str | None, str | None]],
        nnz: np.ndarray,
        tags: np.ndarray,
        weights: np.ndarray,
    ) -> TagCatalogue:
        """From (id, title, provider) in id order and their tag vectors, item after item: `nnz[i]`
        entries each in `tags` / `weights`, each item's in tag order."""
        ids = [i[0] for i in items]
        carried, cols = np.unique(tags, return_inverse=True)
        rows = np.repeat(np.arange(len(ids)), nnz)
        matrix = sp.csr_array((weights, (rows, cols)), shape=(len(ids), carried.size))
        matrix.sum_duplicates()  # sorted column indices: each score sums its terms in tag order
        index = dict(zip(ids, range(len(ids)), strict=True))
        return cls(ids, [i[1] for i in items], [i[2] for i in items], carried, matrix, index)

    def top(
        self, profiles: Mapping[str, tuple[np.ndarray, np.ndarray]], seen: Mapping[str, Any], k: int
    ) -> dict[str, list[tuple[str, str | None, str | None, float]]]:
        """Per user with a profile ((tag ids, weights)): the k best unseen items scoring above 0, as
        (item, title, provider, score), best first, equal scores in item id order."""
        users = list(profiles)
        if not users or not self.ids or not self.carried.size or k <= 0:
            return {u: [] for u in users}
        step = max(1, MAX_CELLS // max(len(self.ids), self.carried.size))
        out: dict[str, list[tuple[str, str | None, str | None, float]]] = {}
        for lo in range(0, len(users), step):
            out.update(self._top(users[lo : lo + step], profiles, seen, k))
        return out

    def _top(
        self,
        users: list[str],
        profiles: Mapping[str, tuple[np.ndarray, np.ndarray]],
        seen: Mapping[str, Any],
        k: int,
    ) -> dict[str, list[tuple[str, str | None, str | None, float]]]:
        n_users, n_items = len(users), len(self.ids)
        lens = np.fromiter((profiles[u][0].size for u in users), np.int64, n_users)
        tags = np.concatenate([profiles[u][0] for u in users])
        weights = np.concatenate([profiles[u][1] for u in users])
        owner = np.repeat(np.arange(n_users), lens)
        at = np.minimum(np.searchsorted(self.carried, tags), self.carried.size - 1)
        known = self.carried[at] == tags  # tags no item carries add nothing
        wanted = np.zeros((self.carried.size, n_users))
        wanted[at[known], owner[known]] = weights[known]
        scores = np.ascontiguousarray((self.by_item @ wanted).T)  # users × items
        # seen items score 0, which is not above 0 (a user's seen set may name unknown items)
        per_user = [seen.get(u, ()) for u in users]
        rows = np.fromiter(map(self.index.get, chain.from_iterable(per_user), repeat(-1)), np.int64)
        flat = rows + np.repeat(np.arange(n_users) * n_items, [len(s) for s in per_user])
        scores.reshape(-1)[flat[rows >= 0]] = 0.0
        # everything at least each user's k-th best score and above 0: the k best and whatever ties
        # the k-th, then ordered exactly (rows are in id order, so ties go by item id)
        kth = np.partition(scores, n_items - k, axis=1)[:, n_items - k] if n_items > k else 0.0
        floor = np.maximum(kth, np.nextafter(0.0, 1.0))
        user, item = np.nonzero(scores >= np.reshape(floor, (-1, 1)))
        value = scores[user, item]
        order = np.lexsort((item, -value, user))
        user, item, value = user[order], item[order], value[order]
        bounds = np.searchsorted(user, np.arange(n_users + 1)).tolist()
        ids, titles, providers = self.ids, self.titles, self.providers
        items, values = item.tolist(), value.tolist()
        out = {}
        for n, u in enumerate(users):
            lo, hi = bounds[n], min(bounds[n + 1], bounds[n] + k)
            out[u] = [
                (ids[j], titles[j], providers[j], v) for j, v in zip(items[lo:hi], values[lo:hi], strict=True)
            ]
        return out


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
    nnz, tags, weights = parse_sparsevecs([r[1] for r in rows])
    ends = np.cumsum(nnz)
    return {
        r[0]: (tags[end - n : end], weights[end - n : end])
        for r, n, end in zip(rows, nnz.tolist(), ends.tolist(), strict=True)
    }
