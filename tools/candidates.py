"""Candidate sources for the agent, each one SQL statement per batch of users, and their merge.

A `CandidateSource` returns, for every user of a batch, up to k unseen items with a source-local
score. Sources here: `tags` (pgvector tag-profile similarity, tools/retrieval.py), `trending`
(most engaged items of the last week, read once per run), `new_from_providers` (recent items from
the user's top providers, one LATERAL look-up per (user, provider) on items(provider_id,
created_at)), `co_likes` (items liked by users who liked what this user recently liked — bounded
item co-occurrence) and `sequence` (what others played next) — both walks over events, in
tools/sequences.py — and `cf` (the trained
recommender, tools/recommender/source.py). Each source proposes at most 25–50 items per user.
Another source plugs in by implementing the protocol and being listed in `SOURCES` (settings names →
factories).

`merge` rank-normalises each source per user (best = 1) and takes the weighted maximum per item, so
scores of unlike sources never get added raw; the candidate's `source` names every source that
proposed it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from tagloop.tools import retrieval
from tagloop.tools.errors import ConfigError
from tagloop.tools.recommender.source import CFSource
from tagloop.tools.retrieval import Candidate
from tagloop.tools.sequences import CoLikeSource, SequenceSource, group_rows

POSITIVE = ["play", "complete", "like", "save", "add_to_playlist", "share", "click", "convert"]
STRONG = ["like", "save", "add_to_playlist", "share", "complete", "convert"]  # as in sequences.py
__all__ = ["CoLikeSource", "SequenceSource"]  # behaviour-walk sources live in tools/sequences.py


class CandidateSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]: ...


@dataclass(frozen=True)
class TagSource:
    name: str = "tags"
    weight: float = 1.0
    max_k: int = 50

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        return retrieval.tag_candidates(conn, user_ids, min(k, self.max_k))


_TRENDING = """
select e.item_id, i.title, i.provider_id,
       sum(case when e.type = any(%(strong)s) then 3 else 1 end)::float8 as score
from events e join items i on i.id = e.item_id
where e.ts > %(since)s and e.ts <= %(now)s and e.type = any(%(pos)s)
group by e.item_id, i.title, i.provider_id
order by score desc, e.item_id
limit %(pool)s
"""


@dataclass(frozen=True)
class TrendingSource:
    """The same ranking for everyone, so it is read once per run (per `now` and k; a source instance
    lives for one run) and each batch only checks which of its items the users have seen."""

    name: str = "trending"
    weight: float = 0.5
    window: timedelta = timedelta(days=7)
    max_k: int = 50
    _trend: dict[tuple[datetime, int], list[Candidate]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        k = min(k, self.max_k)
        trend = self._trend.get((now, k))
        if trend is None:
            rows = conn.execute(
                _TRENDING,
                {"since": now - self.window, "now": now, "pos": POSITIVE, "strong": STRONG, "pool": 2 * k},
            ).fetchall()
            trend = [
                Candidate(r["item_id"], r["title"], r["provider_id"], r["score"], self.name) for r in rows
            ]
            self._trend.clear()
            self._trend[(now, k)] = trend
        seen = _seen(conn, user_ids, [c.item_id for c in trend])
        return {u: [c for c in trend if (u, c.item_id) not in seen][:k] for u in user_ids}


_NEW_FROM_PROVIDERS = """
with counts as (
    select e.user_id, i.provider_id, count(*) as n
    from events e join items i on i.id = e.item_id
    where e.user_id = any(%(users)s) and e.type = any(%(pos)s) and i.provider_id is not null
    group by 1, 2
), played as (
    select * from (
        select c.*, row_number() over (partition by c.user_id order by c.n desc, c.provider_id) as pr
        from counts c
    ) x where pr <= %(providers)s
), seen as (  -- the user's items, once, as an array (cheaper than a probe per candidate)
    select user_id, array_agg(item_id) as items from events
    where user_id = any(%(users)s) and item_id is not null
    group by user_id
), fresh as (
    select p.user_id, f.id as item_id, f.title, f.provider_id,
           ln(1 + p.n) * power(0.5, extract(epoch from (%(now)s - f.created_at)) / 1209600.0) as score,
           row_number() over (partition by p.user_id order by p.n desc, f.created_at desc, f.id) as r
    from played p
    join seen s on s.user_id = p.user_id
    cross join lateral (  -- the provider's newest unseen items: newest few first, then the seen check
        select f0.* from (
            select i.id, i.title, i.provider_id, i.created_at from items i
            where i.provider_id = p.provider_id and i.created_at > %(since)s and i.created_at <= %(now)s
            order by i.created_at desc, i.id
            limit %(pool)s
        ) f0
        where f0.id <> all(s.items)
        order by f0.created_at desc, f0.id
        limit %(k)s
    ) f
)
select user_id, item_id, title, provider_id, score from fresh where r <= %(k)s
"""


@dataclass(frozen=True)
class NewFromProvidersSource:
    name: str = "new_from_providers"
    weight: float = 0.7
    window: timedelta = timedelta(days=30)
    providers: int = 5  # the user's most played providers
    max_k: int = 25

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        rows = conn.execute(
            _NEW_FROM_PROVIDERS,
            {
                "users": user_ids,
                "pos": POSITIVE,
                "now": now,
                "since": now - self.window,
                "k": min(k, self.max_k),
                "pool": 2 * min(k, self.max_k),
                "providers": self.providers,
            },
        ).fetchall()
        return group_rows(rows, user_ids, self.name)


SOURCES: dict[str, Callable[[], CandidateSource]] = {
    "tags": TagSource,
    "trending": TrendingSource,
    "new_from_providers": NewFromProvidersSource,
    "co_likes": CoLikeSource,
    "sequence": SequenceSource,
    "cf": CFSource,
}


def sources_named(names: Sequence[str]) -> tuple[CandidateSource, ...]:
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown candidate source(s) {unknown}; known: {', '.join(SOURCES)}")
    return tuple(SOURCES[n]() for n in names)


def merge(
    per_source: Mapping[str, Mapping[str, list[Candidate]]],
    weights: Mapping[str, float],
    user_id: str,
    k: int,
) -> list[Candidate]:
    """One ranked candidate list for a user: weighted rank-normalised score, max over sources."""
    best: dict[str, list[Any]] = {}  # item → [score, candidate, "source+source"]
    for source, by_user in per_source.items():
        found = by_user.get(user_id)
        if not found:
            continue
        w, n = weights.get(source, 1.0), len(found)
        for rank, c in enumerate(sorted(found, key=_neg_score)):
            score = w * (1.0 - rank / n)
            entry = best.get(c.item_id)
            if entry is None:
                best[c.item_id] = [score, c, source]
            else:
                entry[2] += "+" + source
                if score > entry[0]:
                    entry[0], entry[1] = score, c
    ranked = heapq.nsmallest(k, best.items(), key=_merge_order)
    return [Candidate(i, c.title, c.provider, round(s, 6), names) for i, (s, c, names) in ranked]


def _neg_score(c: Candidate) -> float:
    return -c.score


def _merge_order(kv: tuple[str, list[Any]]) -> tuple[float, str]:
    return -kv[1][0], kv[0]


def _seen(conn: psycopg.Connection[Any], user_ids: list[str], item_ids: list[str]) -> set[tuple[str, str]]:
    if not item_ids:
        return set()
    rows = conn.execute(
        "select distinct user_id, item_id from events where user_id = any(%(u)s) and item_id = any(%(i)s)",
        {"u": user_ids, "i": item_ids},
    ).fetchall()
    return {(r["user_id"], r["item_id"]) for r in rows}
