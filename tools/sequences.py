"""Candidate sources that walk other users' events from this user's latest ones: `sequence` (what
people play next after what this user just played) and `co_likes` (what the people who liked this
user's latest likes also liked, bounded at `seeds` × `fanout` × `fanout` events).

`sequence`:
First-order item transitions read from ordered events, one SQL statement per batch of users: take
the user's last `seeds` positive events (newest first), find up to `fanout` other users' most
recent positive events on each of those items, and follow each to that user's next positive event
on another item (the transition `item → next`). A transition counts `0.5^(seed rank)`, so what the
user played last weighs most; items the user has already interacted with are skipped. The index
`events (user_id, ts)` serves both the seeds and the "next event" look-up, `events (item_id, ts)`
(migration 0025) the fan-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tagloop.tools.retrieval import Candidate

POSITIVE = ["play", "complete", "like", "save", "add_to_playlist", "share", "click", "convert"]

_NEXT_ITEMS = """
with recent as (  -- the user's latest positive events, newest first (index order, then a limit)
    select u.user_id, x.item_id, x.ts, x.r
    from unnest(%(users)s::text[]) as u(user_id)
    cross join lateral (
        select e.item_id, e.ts, row_number() over (order by e.ts desc, e.seq desc) as r
        from events e
        where e.user_id = u.user_id and e.type = any(%(pos)s) and e.item_id is not null
          and e.ts <= %(now)s
        order by e.ts desc, e.seq desc
        limit %(seeds)s
    ) x
), transitions as (
    select rc.user_id, n.item_id, sum(power(0.5, rc.r - 1))::float8 as score
    from recent rc
    cross join lateral (
        select o.user_id, o.ts from events o
        where o.item_id = rc.item_id and o.type = any(%(pos)s) and o.user_id <> rc.user_id
          and o.ts <= %(now)s
        order by o.ts desc
        limit %(fanout)s
    ) other
    cross join lateral (
        select e.item_id from events e
        where e.user_id = other.user_id and e.ts > other.ts and e.ts <= %(now)s
          and e.type = any(%(pos)s) and e.item_id is not null and e.item_id <> rc.item_id
        order by e.ts
        limit 1
    ) n
    group by 1, 2
), ranked as (
    select t.*, row_number() over (partition by t.user_id order by t.score desc, t.item_id) as r
    from transitions t
    where not exists (select 1 from events e where e.user_id = t.user_id and e.item_id = t.item_id)
)
select r.user_id, r.item_id, i.title, i.provider_id, r.score
from ranked r join items i on i.id = r.item_id
where r.r <= %(k)s
"""


@dataclass(frozen=True)
class SequenceSource:
    """Items that follow the user's latest plays in other users' listening order."""

    name: str = "sequence"
    weight: float = 0.8
    seeds: int = 3
    fanout: int = 10
    max_k: int = 25

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        if not user_ids:
            return {}
        rows = conn.execute(
            _NEXT_ITEMS,
            {
                "users": user_ids,
                "pos": POSITIVE,
                "now": now,
                "seeds": self.seeds,
                "fanout": self.fanout,
                "k": min(k, self.max_k),
            },
        ).fetchall()
        out = group_rows(rows, user_ids, self.name)
        for found in out.values():
            found.sort(key=lambda c: (-c.score, c.item_id))
        return out


def group_rows(rows: list[dict[str, Any]], user_ids: list[str], source: str) -> dict[str, list[Candidate]]:
    """(user_id, item_id, title, provider_id, score) rows → candidates per user (every user a key)."""
    out: dict[str, list[Candidate]] = {u: [] for u in user_ids}
    for r in rows:
        out[r["user_id"]].append(
            Candidate(r["item_id"], r["title"], r["provider_id"], float(r["score"]), source)
        )
    return out


# The strong types are written out (as in migration 0026's partial indexes, which they must match
# for the planner to use them); keep them equal to STRONG.
_CO_LIKES = """
with seen as (  -- the user's items, once, as an array (cheaper than a probe per candidate)
    select user_id, array_agg(item_id) as items from events
    where user_id = any(%(users)s) and item_id is not null
    group by user_id
), likers as (
    select u.user_id, l.other from unnest(%(users)s::text[]) as u(user_id)
    cross join lateral (
        select e.item_id from events e
        where e.user_id = u.user_id and e.ts <= %(now)s and e.item_id is not null
          and e.type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert')
        order by e.ts desc
        limit %(seeds)s
    ) m
    cross join lateral (
        select e.user_id as other from events e
        where e.item_id = m.item_id and e.user_id <> u.user_id
          and e.type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert')
        order by e.ts desc
        limit %(fanout)s
    ) l
), co as (
    select k.user_id, o.item_id, count(*)::float8 as score from likers k
    cross join lateral (
        select e.item_id from events e
        where e.user_id = k.other and e.item_id is not null
          and e.type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert')
        order by e.ts desc
        limit %(fanout)s
    ) o
    group by 1, 2
), pooled as (  -- the best few per user before the (per-row) seen check
    select * from (
        select co.*, row_number() over (partition by co.user_id order by co.score desc, co.item_id) as r
        from co
    ) x where r <= %(pool)s
), ranked as (
    select p.user_id, p.item_id, p.score,
           row_number() over (partition by p.user_id order by p.score desc, p.item_id) as r
    from pooled p
    join seen s on s.user_id = p.user_id
    where p.item_id <> all(s.items)
)
select r.user_id, r.item_id, i.title, i.provider_id, r.score
from ranked r join items i on i.id = r.item_id where r.r <= %(k)s
"""


@dataclass(frozen=True)
class CoLikeSource:
    name: str = "co_likes"
    weight: float = 0.8
    seeds: int = 5
    fanout: int = 10
    max_k: int = 25

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        rows = conn.execute(
            _CO_LIKES,
            {
                "users": user_ids,
                "now": now,
                "seeds": self.seeds,
                "fanout": self.fanout,
                "k": min(k, self.max_k),
                "pool": 3 * min(k, self.max_k),
            },
        ).fetchall()
        return group_rows(rows, user_ids, self.name)
