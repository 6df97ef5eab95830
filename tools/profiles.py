"""Tag-level user profiles built from the event stream.

A profile is a sparse vector over the tag vocabulary: every event on an item adds
`event_weight × decay × item-tag weight` to each of the item's confident tags, where decay halves
the contribution every `half_life_days`. Clear positives (like, save, add_to_playlist, share,
complete) weigh most; plays count by log(1 + count); negatives (dislike, dismiss, unsubscribe)
subtract; skips are calibrated per user — a user who skips a lot loses less per skip.
`stats` carries the hour-of-week activity histogram in the user's own time zone, device and
source counts, and the skip rate.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from pgvector import SparseVector

from tagloop.tools.store.catalogue import TAG_DIM

EVENT_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "play": 1.0,  # × log(1 + value) where value is a play count
    "complete": 1.5,
    "skip": -0.5,  # × (1 − the user's skip rate)
    "like": 4.0,
    "dislike": -4.0,
    "save": 4.0,
    "add_to_playlist": 4.0,
    "share": 5.0,
    "open": 0.5,
    "click": 1.0,
    "convert": 5.0,
    "dismiss": -1.0,
    "unsubscribe": -2.0,
}


def event_weight(type_: str, value: float | None, skip_rate: float = 0.0) -> float:
    """The signed strength of one event on the item's tags (before decay and tag weight)."""
    base = EVENT_WEIGHTS.get(type_, 0.0)
    if type_ == "play":
        return base * math.log1p(max(value if value is not None else 1.0, 0.0))
    if type_ == "skip":
        return base * (1.0 - min(max(skip_rate, 0.0), 0.95))
    return base


def decay(age_seconds: float, half_life_days: float) -> float:
    return 0.5 ** (max(age_seconds, 0.0) / (half_life_days * 86400.0))


_AGGREGATE = """
with rate as (
    select user_id,
           count(*) filter (where type = 'skip')::float8
             / greatest(count(*) filter (where type in ('skip', 'play', 'complete')), 1) as skip_rate
    from events where (%(all)s or user_id = any(%(users)s)) group by user_id
)
select e.user_id, it.tag_id,
       sum(case when e.type = 'play' then ln(1 + greatest(coalesce(e.value, 1), 0))
                when e.type = 'skip' then -0.5 * (1 - least(r.skip_rate, 0.95))
                else coalesce((%(weights)s::jsonb ->> e.type)::float8, 0) end
           * power(0.5, greatest(extract(epoch from (%(now)s - e.ts)), 0) / %(half_life)s)
           * it.weight) as w
from events e
join rate r on r.user_id = e.user_id
join item_tags it on it.item_id = e.item_id and it.confidence >= 0.5
where (%(all)s or e.user_id = any(%(users)s)) and e.ts <= %(now)s
group by e.user_id, it.tag_id
"""

_STATS = """
select e.user_id,
       count(*) as n_events,
       count(*) filter (where e.type = 'skip')::float8
         / greatest(count(*) filter (where e.type in ('skip', 'play', 'complete')), 1) as skip_rate,
       array_agg(((extract(isodow from e.ts at time zone u.timezone)::int - 1) * 24
                  + extract(hour from e.ts at time zone u.timezone)::int)) as how
from events e join users u on u.id = e.user_id
where (%(all)s or e.user_id = any(%(users)s)) and e.ts <= %(now)s
group by e.user_id
"""

_UPSERT = """
insert into user_profiles (user_id, tags, decayed_to, n_events, stats, updated_at)
values (%(user_id)s, %(tags)s, %(now)s, %(n_events)s, %(stats)s, now())
on conflict (user_id) do update set tags = excluded.tags, decayed_to = excluded.decayed_to,
    n_events = excluded.n_events, stats = excluded.stats, updated_at = now()
"""


def rebuild_profiles(
    conn: psycopg.Connection[Any], *, now: datetime, half_life_days: float, user_ids: list[str] | None = None
) -> int:
    """Recompute profiles from all stored events (for `user_ids`, or everyone). Returns users written."""
    params = {
        "all": user_ids is None,
        "users": user_ids or [],
        "now": now,
        "half_life": half_life_days * 86400.0,
        "weights": json.dumps(EVENT_WEIGHTS),
    }
    weights: dict[str, dict[int, float]] = defaultdict(dict)
    for r in conn.execute(_AGGREGATE, params):
        if abs(r["w"]) > 1e-9:
            weights[r["user_id"]][r["tag_id"]] = float(r["w"])
    rows = []
    for r in conn.execute(_STATS, params):
        histogram = [0] * 168
        for slot in r["how"]:
            histogram[slot] += 1
        stats = {"hour_of_week": histogram, "skip_rate": round(float(r["skip_rate"]), 4)}
        rows.append(
            {
                "user_id": r["user_id"],
                "tags": SparseVector(weights.get(r["user_id"], {}), TAG_DIM),
                "now": now,
                "n_events": r["n_events"],
                "stats": json.dumps(stats),
            }
        )
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    return len(rows)


@dataclass
class Profile:
    user_id: str
    timezone: str
    tags: dict[int, float]
    top_tags: list[tuple[str, float]] = field(default_factory=list)
    n_events: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def load_profiles(conn: psycopg.Connection[Any], user_ids: list[str], top: int = 10) -> dict[str, Profile]:
    """Profiles of the given users (users without events get an empty profile)."""
    rows = conn.execute(
        """select u.id, u.timezone, p.tags, coalesce(p.n_events, 0) as n_events, coalesce(p.stats, '{}') as stats
           from users u left join user_profiles p on p.user_id = u.id where u.id = any(%(ids)s)""",
        {"ids": user_ids},
    ).fetchall()
    profiles = {}
    tag_ids: set[int] = set()
    for r in rows:
        tags = dict(zip(r["tags"].indices(), r["tags"].values(), strict=True)) if r["tags"] is not None else {}
        profiles[r["id"]] = Profile(r["id"], r["timezone"], tags, n_events=r["n_events"], stats=r["stats"])
        tag_ids.update(sorted(tags, key=tags.__getitem__, reverse=True)[:top])
    names = {
        r["id"]: r["name"]
        for r in conn.execute("select id, name from tags where id = any(%(ids)s)", {"ids": list(tag_ids)})
    }
    for p in profiles.values():
        best = sorted(p.tags.items(), key=lambda kv: kv[1], reverse=True)[:top]
        p.top_tags = [(names[t], round(w, 3)) for t, w in best if w > 0 and t in names]
    return profiles
