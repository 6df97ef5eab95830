"""The `sequence` candidate source, which walks other users' events from this user's latest ones
(what people play next after what this user just played; `co_likes` reads the precomputed
`item_neighbors` instead, tools/neighbors.py).

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
where r.r <= %(k)s and i.kind <> 'message'
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
