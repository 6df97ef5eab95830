"""Candidate sources for the agent and their merge.

A `CandidateSource` returns, for every user of a batch, up to k unseen items with a source-local
score. Per user, a decision runs at most one retrieval query per personal source — `tags`
(pgvector tag-profile similarity, tools/retrieval.py; or exact in the process, tools/tag_exact.py)
and `cf` (the trained recommender,
tools/recommender/source.py; proposes nothing until `tagloop train`); `sequence` (what others
played next, tools/sequences.py) walks events and is off by default. `tags` and the other default
sources are `HistorySource`s, handed the batch's `BatchHistory` (one statement per batch: seen
items, top providers, latest strong items): `tags` drops seen items with it, the others read
per-run or precomputed tables and rank in Python from it:
- `trending`: most engaged items of the last week, read once per run;
- `new_from_providers`: the newest items of the user's most played providers, each provider's
  newest items read once per run;
- `co_likes`: neighbours of the user's latest strong items in `item_neighbors` (tools/neighbors.py).
Another source plugs in by implementing either protocol and being listed in `SOURCES`.

`merge` rank-normalises each source per user (best = 1) and takes the weighted maximum per item, so
scores of unlike sources never get added raw; the candidate's `source` names every source that
proposed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol, runtime_checkable

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools import retrieval, tag_exact
from tagloop.tools.errors import ConfigError
from tagloop.tools.neighbors import CoLikeSource
from tagloop.tools.recommender.source import CFSource
from tagloop.tools.retrieval import POSITIVE, BatchHistory, Candidate, FromHistory, load_history
from tagloop.tools.sequences import SequenceSource
from tagloop.tools.store.pending import Pending
from tagloop.tools.timed import Timed

STRONG = ["like", "save", "add_to_playlist", "share", "complete", "convert"]  # as tools/neighbors.py
__all__ = ["BatchHistory", "CFSource", "CoLikeSource", "SequenceSource", "load_history"]


class CandidateSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]: ...


@runtime_checkable
class HistorySource(CandidateSource, Protocol):
    """A source that ranks from the batch's shared `BatchHistory` (its `fetch` loads one itself)."""

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]: ...


@dataclass(frozen=True)
class TagSource(FromHistory):
    """Tag-profile similarity (retrieval.tag_candidates: pgvector HNSW; with `exact`, the exact scan
    in this process of tools/tag_exact.py), the seen items dropped with the batch history's seen
    sets. `send_ahead` sends the next batch's search (exact: its profiles read) early
    (agent/pipeline.py); `fetch_for` then reads it instead of asking again."""

    name: str = "tags"
    weight: float = 1.0
    max_k: int = 50
    exact: bool = False
    _sent: list[retrieval.SentTagTop | tuple[frozenset[str], Pending[tag_exact.Profiles]]] = field(
        default_factory=list, compare=False, repr=False
    )

    def send_ahead(self, conn: psycopg.Connection[Any], user_ids: list[str], k: int) -> None:
        if self.exact:
            self._sent[:] = [(frozenset(user_ids), tag_exact.request_profiles(conn, user_ids))]
        else:
            self._sent[:] = [retrieval.send_tag_top(conn, user_ids, min(k, self.max_k))]

    def drop_sent(self) -> None:
        """Forget a read sent ahead (a batch that failed: its pipeline's results are gone)."""
        self._sent.clear()

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        sent = self._sent.pop() if self._sent else None
        k = min(k, self.max_k)
        if not self.exact:
            return retrieval.tag_candidates(conn, history.user_ids, k, history.seen, sent)
        users = history.user_ids
        if isinstance(sent, tuple) and sent[0].issuperset(users):
            profiles = sent[1].result()
        else:
            profiles = tag_exact.request_profiles(conn, users).result()
        found = tag_exact.catalogue(conn, now).top(
            {u: profiles[u] for u in users if u in profiles}, history.seen, k
        )
        new = tuple.__new__
        return {u: [new(Candidate, (*c, self.name)) for c in found.get(u, ())] for u in users}


_TRENDING = """
select e.item_id, i.title, i.provider_id,
       sum(case when e.type = any(%(strong)s) then 3 else 1 end)::float8 as score
from events e join items i on i.id = e.item_id
where e.ts > %(since)s and e.ts <= %(now)s and e.type = any(%(pos)s) and i.kind <> 'message'
group by e.item_id, i.title, i.provider_id
order by score desc, e.item_id
limit %(pool)s
"""


@dataclass(frozen=True)
class TrendingSource(FromHistory):
    """The same ranking for everyone, read once per run and reused for `max_age` by later runs of
    the same instance (a worker shares its sources across claim cycles, agent/worker.py: the read
    aggregates a week of events, ~0.2 s on the 10,000-user demo data, once per batch of 200
    otherwise); each user gets its first k items they have not seen (from a pool of 2k)."""

    name: str = "trending"
    weight: float = 0.5
    window: timedelta = timedelta(days=7)
    max_k: int = 50
    max_age: timedelta = timedelta(minutes=10)
    _trend: Timed[list[Candidate]] = field(default_factory=Timed, compare=False, repr=False)

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:

        def read() -> list[Candidate]:
            params = {"since": now - self.window, "now": now, "pos": POSITIVE, "strong": STRONG}
            with conn.cursor(row_factory=tuple_row) as cur:
                rows = cur.execute(_TRENDING, {**params, "pool": 2 * self.max_k}).fetchall()
            return [Candidate(i, t, p, s, self.name) for i, t, p, s in rows]

        trend = self._trend.get(now, self.max_age, read)
        k = min(k, self.max_k)
        out = {}
        for user, seen in history.seen.items():
            out[user] = [c for c in trend if c[0] not in seen][:k]  # c[0]: item_id, without the property
        return out


_NEWEST = """
select p.provider_id, f.id, f.title, extract(epoch from (%(now)s - f.created_at))::float8 as age
from unnest(%(providers)s::text[]) as p(provider_id)
cross join lateral (
    select i.id, i.title, i.created_at from items i
    where i.provider_id = p.provider_id and i.created_at > %(since)s and i.created_at <= %(now)s
      and i.kind <> 'message'
    order by i.created_at desc, i.id
    limit %(pool)s
) f
order by p.provider_id, f.created_at desc, f.id
"""


@dataclass(frozen=True)
class NewFromProvidersSource(FromHistory):
    """The newest items (within `window`) of the user's most played providers, scored
    ln(1 + plays) · 0.5^(age / 14 days); each provider's newest 2k items are read once per run."""

    name: str = "new_from_providers"
    weight: float = 0.7
    window: timedelta = timedelta(days=30)
    max_k: int = 25
    _newest: dict[tuple[datetime, str], list[tuple[str, str, float]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        k = min(k, self.max_k)
        self._load(conn, {p for top in history.providers.values() for p, _ in top}, now)
        out, new, name = {}, tuple.__new__, self.name
        for user, top in history.providers.items():
            seen, found = history.seen[user], []
            for provider, n in top:  # already in (plays desc, provider) order
                fresh = [x for x in self._newest[(now, provider)] if x[0] not in seen][:k]
                boost = math.log1p(n)
                found += [
                    new(Candidate, (i, t, provider, boost * 0.5 ** (age / 1209600.0), name))
                    for i, t, age in fresh
                ]
                if len(found) >= k:
                    break
            out[user] = sorted(found[:k], key=_score, reverse=True)
        return out

    def _load(self, conn: psycopg.Connection[Any], providers: set[str], now: datetime) -> None:
        if next(iter(self._newest), (now,))[0] != now:  # kept for one `now` (shared across runs)
            self._newest.clear()
        missing = sorted(p for p in providers if (now, p) not in self._newest)
        if not missing:
            return
        for p in missing:
            self._newest[(now, p)] = []
        params = {"providers": missing, "now": now, "since": now - self.window, "pool": 2 * self.max_k}
        with conn.cursor(row_factory=tuple_row) as cur:
            for provider, item, title, age in cur.execute(_NEWEST, params):
                self._newest[(now, provider)].append((item, title, age))


SOURCES: dict[str, Callable[[], CandidateSource]] = {
    "tags": TagSource,
    "trending": TrendingSource,
    "new_from_providers": NewFromProvidersSource,
    "co_likes": CoLikeSource,
    "sequence": SequenceSource,
    "cf": CFSource,
}


def sources_named(names: Sequence[str], *, tag_search: str = "hnsw") -> tuple[CandidateSource, ...]:
    """New sources by name; `tag_search` "exact" makes `tags` scan in this process (settings)."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ConfigError(
            f"TAGLOOP_CANDIDATE_SOURCES names unknown candidate source(s) {unknown}; "
            f"known: {', '.join(SOURCES)}"
        )
    made = [SOURCES[n]() for n in names]
    return tuple(
        replace(s, exact=True) if isinstance(s, TagSource) and tag_search == "exact" else s for s in made
    )


def gather(
    conn: psycopg.Connection[Any],
    sources: Sequence[CandidateSource],
    user_ids: list[str],
    k: int,
    now: datetime,
    history: BatchHistory | None = None,
) -> dict[str, dict[str, list[Candidate]]]:
    """Every source for the batch (the history loaded once, for the sources that use it; pass it
    when it was read already — a history of more users is narrowed to `user_ids`)."""
    if history is not None:
        history = history.restricted(user_ids)
    found = {}
    for s in sources:
        if isinstance(s, HistorySource):
            history = history or load_history(conn, user_ids, now)
            found[s.name] = s.fetch_for(conn, history, k, now)
        else:
            found[s.name] = s.fetch(conn, user_ids, k, now)
    return found


def merge(
    per_source: Mapping[str, Mapping[str, list[Candidate]]],
    weights: Mapping[str, float],
    user_id: str,
    k: int,
) -> list[Candidate]:
    """One ranked candidate list for a user: weighted rank-normalised score, max over sources
    (ties by item id)."""
    best: dict[str, list[Any]] = {}  # item → [score, candidate, "source+source"]
    for source, by_user in per_source.items():
        found = by_user.get(user_id)
        if not found:
            continue
        w, n = weights.get(source, 1.0), len(found)
        step = w / n
        # reverse=True keeps equal scores in their given order, as a key of -score would
        for rank, c in enumerate(sorted(found, key=_score, reverse=True)):
            score = w - rank * step
            entry = best.get(c[0])
            if entry is None:
                best[c[0]] = [score, c, source]
            else:
                entry[2] += "+" + source
                if score > entry[0]:
                    entry[0], entry[1] = score, c
    rows = [(-e[0], item, e[1], e[2]) for item, e in best.items()]
    rows.sort()  # item ids are unique, so candidates are never compared
    new = tuple.__new__
    return [new(Candidate, (item, c[1], c[2], -neg, names)) for neg, item, c, names in rows[:k]]


_score = itemgetter(3)  # Candidate.score
