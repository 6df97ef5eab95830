"""The collaborative-filtering candidate source: the active recommender, served from Postgres.

A `HistorySource` (tools/candidates.py): the batch history's seen sets drop seen items in Python.
When the model's items fit `exact.fits` (at most 100,000, and 16M items × dimensions: Last.fm and
the demo data do), the search runs in this process, exactly (exact.py): the users' fresh stored
vectors are read (one statement per chunk, sent a chunk ahead in the agent's pipeline,
agent/pipeline.py), the others folded in (fold_batch.py, their inputs sent with it), and the chunk
scored against every item with the seen items masked. On the Last.fm import with a trained model
this took `tagloop run --all` from 126-136 to 182-194 users/s (runs paired a minute apart): the
server-side search below needed its second, filtered statement for 1,745 of the 1,892 users.
A larger catalogue is searched on the server, over the model's HNSW index, without a per-row filter,
as the tag source's is (tools/retrieval.py):
1. Users whose stored vector (`rec_user_vectors`, written by `tagloop train` and by serving) is
   fresh — no event since it was folded, the same declared interests — are searched with it on
   the server: one statement for the batch, the unfiltered top k + k/2 over the model's HNSW
   index, the vector never leaving the server. `send_ahead` sends it a chunk early in the agent's
   pipeline (agent/pipeline.py).
2. The others (vector missing or stale) are folded in from their events (fold_batch.py, sent
   ahead with the search for the users the server finds stale) and searched the same way with
   their vectors passed in (binary `vector[]`).
3. Users whose seen items crowd their wide top (fewer than k unseen of the k + k/2 returned), or
   whose approximate search returned fewer rows than asked while the model has more items, are
   asked again with the seen filter on the server (an iterative scan).
The statements return item ids and scores only; titles and providers are read once per run per
item (tools/iteminfo.py), and an item deleted since it was placed (or, on the exact path, trained)
is left out.
Before, every user was folded in and searched with the server-side filter: on the 10,000-user demo
data with a trained model that was ~8 ms of server and ~3 ms of client CPU per decision
(bench/agent.py --train). Without a trained model the source proposes nothing, so listing it in
the settings is harmless before the first `tagloop train`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from tagloop.tools.iteminfo import ItemInfo
from tagloop.tools.recommender import exact, fold_batch, pg, serving
from tagloop.tools.recommender.exact import EXACT_MAX_CELLS, fits
from tagloop.tools.retrieval import HNSW_SETTINGS, BatchHistory, Candidate, FromHistory, wide_k
from tagloop.tools.timed import Timed

# {users}: the users, with their vectors as {vec}; {seen}: the server-side seen filter, or nothing.
# No join to `items` per result (an index probe each, ~0.25 ms per user): titles come from ItemInfo.
_TOP = """
select q.user_id, c.item_id, -c.neg_ip as score
from {users}
cross join lateral (
    select v.item_id, (v.vec::vector({dim})) <#> {vec}::vector({dim}) as neg_ip
    from item_vectors v
    where v.model_id = {model} {seen}
    order by (v.vec::vector({dim})) <#> {vec}::vector({dim})
    limit %(k)s
) c
order by q.n, c.neg_ip, c.item_id
"""
# a lookup per user (`limit 1` keeps the planner from hashing the whole table instead): the fresh vector
_STORED = """unnest(%(users)s::text[]) with ordinality as q(user_id, n)
cross join lateral (select r.vec from rec_user_vectors r where {fresh} limit 1) r"""
_GIVEN = "unnest(%(users)s::text[], %(vecs)b::vector[]) with ordinality as q(user_id, vec, n)"  # binary
_SEEN = "and not exists (select 1 from events e where e.user_id = q.user_id and e.item_id = v.item_id)"


def _vectors_query(served: serving.Served) -> sql.Composed:
    """The users' fresh stored vectors (for the exact search in this process: exact.py)."""
    fresh = pg.fresh_vector(sql.SQL("q.user_id"), served.row.id)
    return sql.SQL("select q.user_id, r.vec from " + _STORED).format(fresh=fresh)


def _query(served: serving.Served, stored: bool, filtered: bool) -> sql.Composed:
    model = sql.Literal(served.row.id)
    users = (
        sql.SQL(_STORED).format(fresh=pg.fresh_vector(sql.SQL("q.user_id"), served.row.id))
        if stored
        else sql.SQL(_GIVEN)
    )
    return sql.SQL(_TOP).format(
        users=users,
        vec=sql.SQL("r.vec" if stored else "q.vec"),
        dim=sql.Literal(served.row.dim),
        model=model,
        seen=sql.SQL(_SEEN if filtered else ""),
    )


@dataclass(frozen=True)
class _Sent:
    """The stored-vector search for `user_ids`, sent and not yet read."""

    model_id: int
    user_ids: frozenset[str]
    wide: int  # 0: the users' stored vectors for the exact search, not a search
    cursor: psycopg.Cursor[Any]
    folds: psycopg.Cursor[Any]  # the fold-in inputs of the users whose stored vector is stale

    def drain(self) -> None:
        self.cursor.fetchall()
        self.folds.fetchall()


@dataclass(frozen=True)
class CFSource(FromHistory):
    """The active model's top k unseen per user. Which model is active is looked up once per
    `max_age` of the run clock (a round trip per batch otherwise, also while no model is trained):
    a model activated meanwhile serves from the next lookup on."""

    name: str = "cf"
    weight: float = 1.0
    max_k: int = 50
    max_age: timedelta = timedelta(minutes=1)
    exact_max_cells: int = EXACT_MAX_CELLS  # items × dimensions searched exactly in this process
    _active: Timed[serving.Served | None] = field(default_factory=Timed, compare=False, repr=False)
    _sent: list[_Sent] = field(default_factory=list, compare=False, repr=False)
    _info: ItemInfo = field(default_factory=ItemInfo, compare=False, repr=False)

    def send_ahead(self, conn: psycopg.Connection[Any], user_ids: list[str], k: int) -> None:
        """Send the next batch's stored-vector search (agent/pipeline.py) when a model was found by
        an earlier batch; `fetch_for` then reads it instead of asking again."""
        served = self._active.latest()
        if served is None or not user_ids:
            return
        if fits(served, self.exact_max_cells):
            wide, cursor = 0, _plain(conn, _vectors_query(served), {"users": user_ids})
        else:
            wide = wide_k(min(k, self.max_k))
            cursor = _send(
                conn, _query(served, stored=True, filtered=False), {"users": user_ids}, wide, "off"
            )
        folds = fold_batch.send(conn, served, user_ids, stale_only=True)
        self._sent[:] = [_Sent(served.row.id, frozenset(user_ids), wide, cursor, folds)]

    def drop_sent(self) -> None:
        """Forget a read sent ahead (a batch that failed: its pipeline's results are gone)."""
        self._sent.clear()

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        users = history.user_ids
        sent = self._sent.pop() if self._sent else None
        served = self._active.get(now, self.max_age, lambda: serving.active(conn))
        if served is None or not users:
            if sent is not None:
                sent.drain()
            return {u: [] for u in users}
        placed = serving.place_new_items(conn, served)
        k = min(k, self.max_k)
        if fits(served, self.exact_max_cells):
            catalogue = exact.catalogue(conn, served, now, self.max_age, renew=placed > 0)
            if fits(served, self.exact_max_cells, len(catalogue.cold)):
                return self._exact(conn, served, history, k, sent, catalogue)
        wide = wide_k(k)
        wanted = set(users)
        prefetched: list[Any] | None = None  # fold-in rows of the users who were stale when sent
        if (
            sent is not None
            and (sent.model_id, sent.wide) == (served.row.id, wide)
            and sent.user_ids >= wanted
        ):
            rows = [r for r in sent.cursor.fetchall() if r[0] in wanted]
            prefetched = sent.folds.fetchall()
        else:
            if sent is not None:
                sent.drain()
            rows = _read(conn, _query(served, stored=True, filtered=False), {"users": users}, wide, "off")
        picks: dict[str, list[tuple[str, float]]] = {u: [] for u in users}  # (item, score), best first
        returned = Counter(map(itemgetter(0), rows))
        _pick(picks, rows, k, history.seen)
        vecs: dict[str, np.ndarray] = {}
        stale = [u for u in users if not returned[u]]
        if stale:  # no fresh stored vector: fold them in
            vecs = _folded(conn, served, stale, prefetched)
            params = {"users": stale, "vecs": list(vecs.values())}
            more = _read(conn, _query(served, stored=False, filtered=False), params, wide, "off")
            returned.update(map(itemgetter(0), more))
            _pick(picks, more, k, history.seen)
        # short of k once the seen items are dropped, their seen items crowding the wide top or the
        # approximate search returning fewer rows than asked and than the model has items (not a
        # catalogue that ran out): the server filters them
        whole = min(wide, len(served.index))
        short = [u for u in users if len(picks[u]) < k and (returned[u] == wide or 0 < returned[u] < whole)]
        if short:
            for u in short:
                picks[u] = []
            by_stored = [u for u in short if u not in vecs]
            by_vec = [u for u in short if u in vecs]
            ef = max(wide, 64)
            if by_stored:
                rows = _read(conn, _query(served, True, True), {"users": by_stored}, k, "relaxed_order", ef)
                _pick(picks, rows, k, None)
            if by_vec:
                params = {"users": by_vec, "vecs": [vecs[u] for u in by_vec]}
                rows = _read(conn, _query(served, False, True), params, k, "relaxed_order", ef)
                _pick(picks, rows, k, None)
            for u in short:  # relaxed_order may swap near-ties
                picks[u].sort(key=lambda p: -p[1])
        return self._candidates(conn, picks, k)

    def _exact(
        self,
        conn: psycopg.Connection[Any],
        served: serving.Served,
        history: BatchHistory,
        k: int,
        sent: _Sent | None,
        catalogue: exact.Catalogue,
    ) -> dict[str, list[Candidate]]:
        """The exact path (exact.py): the users' vectors (stored and fresh, read a chunk ahead when
        sent; else folded in) scored against the whole catalogue here."""
        users = history.user_ids
        if (
            sent is not None
            and (sent.model_id, sent.wide) == (served.row.id, 0)
            and sent.user_ids >= set(users)
        ):
            rows, prefetched = sent.cursor.fetchall(), sent.folds.fetchall()
        else:
            if sent is not None:
                sent.drain()
            with _plain(conn, _vectors_query(served), {"users": users}) as cur:
                rows, prefetched = cur.fetchall(), None
        wanted = set(users)
        vecs = {u: v for u, v in rows if u in wanted}
        stale = [u for u in users if u not in vecs]
        if stale:
            vecs.update(_folded(conn, served, stale, prefetched))
        # a few more than k: an item deleted since the catalogue was read is still a row of it
        return self._candidates(conn, catalogue.top(vecs, history.seen, wide_k(k)), k)

    def _candidates(
        self, conn: psycopg.Connection[Any], picks: dict[str, list[tuple[str, float]]], k: int
    ) -> dict[str, list[Candidate]]:
        """Each user's picks with title and provider (read once per run per item), deleted items left out."""
        self._info.describe(conn, {i for found in picks.values() for i, _ in found})
        info, gone, new, name = self._info.known, self._info.gone, tuple.__new__, self.name
        return {
            u: [new(Candidate, (i, *info[i], s, name)) for i, s in found if i not in gone][:k]
            for u, found in picks.items()
        }


def _folded(
    conn: psycopg.Connection[Any], served: serving.Served, stale: list[str], prefetched: list[Any] | None
) -> dict[str, np.ndarray]:
    """The stale users' vectors, folded from the rows sent ahead with the search; a user missing
    there (fresh when that statement ran, stale for the search) is read now."""
    if prefetched is None:
        return fold_batch.read(conn, served, stale)
    have = {r[0] for r in prefetched}
    found = fold_batch.vectors(conn, served, [u for u in stale if u in have], prefetched)
    missing = [u for u in stale if u not in have]
    if missing:
        found.update(fold_batch.read(conn, served, missing))
    return {u: found[u] for u in stale}


def _send(
    conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any], k: int, scan: str, ef: int = 0
) -> psycopg.Cursor[Any]:
    """Send `query` for the top `k` with the HNSW settings it needs (transaction-local)."""
    conn.execute(HNSW_SETTINGS, {"scan": scan, "ef": str(max(k, ef, 40))})
    return _plain(conn, query, {**params, "k": k})


def _plain(conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any]) -> psycopg.Cursor[Any]:
    """Send `query` (binary rows, not read yet)."""
    cur = conn.cursor(row_factory=tuple_row, binary=True)
    cur.execute(query, params)
    return cur


def _read(
    conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any], k: int, scan: str, ef: int = 0
) -> list[Any]:
    """Run `query` now. The settings last until the end of the transaction, so in autocommit mode it
    gets one of its own; otherwise it runs in the caller's (a savepoint would add a round trip,
    and in pipeline mode wait for every statement sent ahead)."""
    with (
        conn.transaction() if conn.autocommit else nullcontext(),
        _send(conn, query, params, k, scan, ef) as cur,
    ):
        return cur.fetchall()


def _pick(
    picks: dict[str, list[tuple[str, float]]],
    rows: Sequence[Any],
    k: int,
    seen: Mapping[str, frozenset[str]] | None,
) -> None:
    """Append each user's rows (in score order) while fewer than k, skipping seen items."""
    for user, item, score in rows:
        found = picks[user]
        if len(found) < k and (seen is None or item not in seen[user]):
            found.append((item, score))
