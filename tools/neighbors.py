"""Precomputed item neighbours for the `co_likes` candidate source: `item_neighbors(item_id,
neighbor_id, score, support)` holds each item's top `per_item` neighbours by co-occurrence in the
same users' latest strong events (like, save, add_to_playlist, share, complete, convert).

score = co / sqrt(n_i · n_j) · co / (co + shrink) — cosine over strong likers, shrunk towards 0
for pairs seen by few users (so two items liked by one common user do not outrank a pair that
many share); support = co, the number of users behind it. Each user contributes at most their
`recent` latest strong events, which bounds the pair count at users × recent².

`refresh_if_stale` is called where runs start (agent/runner.make_context; the worker calls it when
it renews its run facts, before it claims a batch; a run requested over HTTP only computes a
missing table): it recomputes when the table is older than `max_age` against the run clock, or
the event log grew by more than `growth` since; a concurrent refresh (another worker) is skipped
rather than waited for. Like every store function it never commits: the refresh belongs to the
caller's transaction.

The same refresh fills `user_top_providers` (each user's `providers` most played providers by
positive events), which the batch history (tools/retrieval.py) reads for `new_from_providers`.

`CoLikeSource` (the agent's `co_likes` candidate source) reads it per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools.iteminfo import ItemInfo
from tagloop.tools.retrieval import POSITIVE, BatchHistory, Candidate, FromHistory
from tagloop.tools.store.pending import Pending, request

STRONG = ("like", "save", "add_to_playlist", "share", "complete", "convert")  # as candidates.STRONG
REFRESH_LOCK = (0x74676C, 0x6E6272)  # advisory lock keys: tagloop, "nbr"

_STATE = "select as_of, events_seq from item_neighbors_state"
_MAX_SEQ = "select coalesce(max(seq), 0) as seq from events"

_REFRESH = """
with strong as (  -- each user's latest strong items (distinct), at most %(recent)s
    select user_id, item_id from (
        select user_id, item_id, row_number() over (partition by user_id order by max(ts) desc, item_id) as r
        from events
        where item_id is not null and ts <= %(now)s
          and type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert')
        group by user_id, item_id
    ) x where r <= %(recent)s
), counts as (
    select item_id, count(*)::float8 as n from strong group by item_id
), pairs as (
    select a.item_id, b.item_id as neighbor_id, count(*) as co
    from strong a join strong b on b.user_id = a.user_id and b.item_id <> a.item_id
    group by 1, 2
), scored as (
    select p.item_id, p.neighbor_id, p.co,
           p.co / sqrt(ca.n * cb.n) * p.co / (p.co + %(shrink)s) as score
    from pairs p join counts ca on ca.item_id = p.item_id join counts cb on cb.item_id = p.neighbor_id
), ranked as (
    select s.*, row_number() over (partition by s.item_id order by s.score desc, s.neighbor_id) as r
    from scored s
)
insert into item_neighbors (item_id, neighbor_id, score, support)
select item_id, neighbor_id, score, co from ranked where r <= %(per_item)s
"""

_TOP_PROVIDERS = """
insert into user_top_providers (user_id, providers, counts)
select user_id, array_agg(provider_id order by n desc, provider_id), array_agg(n order by n desc, provider_id)
from (
    select user_id, provider_id, n, row_number() over (partition by user_id order by n desc, provider_id) as r
    from (
        select e.user_id, i.provider_id, count(*)::int as n from events e join items i on i.id = e.item_id
        where e.type = any(%(pos)s) and i.provider_id is not null
        group by 1, 2
    ) c
) x where r <= %(providers)s
group by user_id
"""

_SAVE_STATE = """
insert into item_neighbors_state (singleton, as_of, events_seq, refreshed_at)
values (true, %(as_of)s, %(seq)s, now())
on conflict (singleton) do update
set as_of = excluded.as_of, events_seq = excluded.events_seq, refreshed_at = excluded.refreshed_at
"""


def refresh_neighbors(
    conn: psycopg.Connection[Any],
    now: datetime,
    *,
    per_item: int = 20,
    recent: int = 50,
    shrink: float = 2.0,
    providers: int = 5,
) -> int:
    """Recompute both tables for the run clock `now`; returns the number of neighbour rows. The
    state row is locked first: an erasure marking the table stale meanwhile waits for this to
    commit (tools/store/users.erase_user), rather than have its mark overwritten by this save."""
    conn.execute("select 1 from item_neighbors_state for update")
    seq = conn.execute(_MAX_SEQ).fetchone()
    conn.execute("delete from item_neighbors")
    cur = conn.execute(_REFRESH, {"now": now, "recent": recent, "per_item": per_item, "shrink": shrink})
    conn.execute("delete from user_top_providers")
    conn.execute(_TOP_PROVIDERS, {"pos": POSITIVE, "providers": providers})
    conn.execute(_SAVE_STATE, {"as_of": now, "seq": seq["seq"] if seq else 0})
    return cur.rowcount


def is_stale(conn: psycopg.Connection[Any], now: datetime, max_age: timedelta, growth: float = 0.1) -> bool:
    """Never computed, computed for a clock more than `max_age` away from `now`, or the event log
    grew by more than `growth` (a share of its size then) since."""
    state = conn.execute(_STATE).fetchone()
    if state is None:
        return True
    if abs(now - state["as_of"]) > max_age:
        return True
    seq = conn.execute(_MAX_SEQ).fetchone()
    grown = (seq["seq"] if seq else 0) - state["events_seq"]
    return bool(grown > growth * max(state["events_seq"], 1))


def refresh_if_stale(
    conn: psycopg.Connection[Any],
    now: datetime,
    max_age: timedelta = timedelta(hours=24),
    growth: float = 0.1,
) -> bool:
    """Refresh when stale (`is_stale`) and no other session is refreshing; True when this call
    refreshed. `max_age=timedelta.max, growth=math.inf`: only when never computed."""
    if not is_stale(conn, now, max_age, growth):
        return False
    with conn.transaction():
        got = conn.execute(
            "select pg_try_advisory_xact_lock(%(a)s, %(b)s) as ok",
            {"a": REFRESH_LOCK[0], "b": REFRESH_LOCK[1]},
        ).fetchone()
        if not (got and got["ok"]) or not is_stale(conn, now, max_age, growth):
            return False
        refresh_neighbors(conn, now)
    return True


_NEIGHBOR_LISTS = "select item_id, neighbor_id, score from item_neighbors where item_id = any(%(ids)s)"

Neighbors = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class CoLikeSource(FromHistory):
    """What the people who liked this user's latest strong items also liked: the neighbours of the
    batch history's seeds, score = the sum of their neighbour scores over the seeds; unseen only.
    Neighbour lists are read once per run per seed item (one statement per batch for new seeds),
    and the titles and providers of the items that make a user's top k once per run per item
    (tools/iteminfo.py)."""

    name: str = "co_likes"
    weight: float = 0.8
    max_k: int = 25
    _neighbors: Neighbors = field(default_factory=dict, compare=False, repr=False)
    _info: ItemInfo = field(default_factory=ItemInfo, compare=False, repr=False)
    _sent: list[Pending[Neighbors]] = field(default_factory=list, compare=False, repr=False)

    def send_ahead(self, conn: psycopg.Connection[Any], history: BatchHistory) -> None:
        """Send the read of the next batch's seeds not cached yet (agent/pipeline.py); `fetch_for`
        takes its rows."""
        seeds = dict.fromkeys(s for user_seeds in history.seeds.values() for s in user_seeds)
        missing = [i for i in seeds if i not in self._neighbors]
        if missing:
            self._sent.append(
                request(conn, _NEIGHBOR_LISTS, {"ids": missing}, _by_seed(missing), tuples=True)
            )

    def drop_sent(self) -> None:
        """Forget reads sent ahead (a batch that failed: its pipeline's results are gone)."""
        self._sent.clear()

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        k = min(k, self.max_k)
        for sent in self._sent:
            for seed, found in sent.result().items():
                self._neighbors.setdefault(seed, found)
        self._sent.clear()
        self._load(conn, {i for seeds in history.seeds.values() for i in seeds})
        best = {user: self._best(seeds, history.seen[user], k) for user, seeds in history.seeds.items()}
        while self._info.describe(conn, {i for found in best.values() for _, i in found}):
            # an item deleted since the neighbours were computed: rank again without it
            best = {u: self._best(history.seeds[u], history.seen[u], k) for u in best}
        new, name, info = tuple.__new__, self.name, self._info.known
        out = {}
        for user, found in best.items():
            out[user] = [new(Candidate, (i, *info[i], -neg, name)) for neg, i in found]
        return out

    def _best(self, seeds: list[str], seen: Any, k: int) -> list[tuple[float, str]]:
        """The user's top k unseen neighbours as (-score, item), score desc then id."""
        score: dict[str, float] = {}
        get, lists = score.get, self._neighbors
        for seed in seeds:
            for neighbor, s in lists[seed]:
                if neighbor not in seen:
                    score[neighbor] = get(neighbor, 0.0) + s
        ranked = sorted([(-s, i) for i, s in score.items()])
        gone = self._info.gone
        if gone:
            ranked = [(s, i) for s, i in ranked if i not in gone]
        return ranked[:k]

    def _load(self, conn: psycopg.Connection[Any], item_ids: set[str]) -> None:
        missing = [i for i in item_ids if i not in self._neighbors]
        if not missing:
            return
        with conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(_NEIGHBOR_LISTS, {"ids": missing}).fetchall()  # not row by row
        self._neighbors.update(_by_seed(missing)(rows))


def _by_seed(seeds: list[str]) -> Callable[[list[Any]], Neighbors]:
    """Rows of `_NEIGHBOR_LISTS` as seed → [(neighbour, score)] (seeds without any: empty lists)."""

    def parse(rows: list[Any]) -> Neighbors:
        out: Neighbors = {i: [] for i in seeds}
        for item, neighbor, score in rows:
            out[item].append((neighbor, score))
        return out

    return parse
