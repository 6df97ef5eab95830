"""Patterns from the event stream, as functions the agent and its candidate sources can call.

Here: co-likes and sequences. Trends with a lifetime are in patterns_trends.py, hour-of-week and
weekday/weekend preferences per tag in patterns_timing.py. Every function reads positive events
(`POSITIVE`) in a window `(now − window, now]` with one SQL statement and never writes.

- `co_likes(seed)`: "users who like X also like Y". At `level="item"` a user likes an item after
  one positive event on it; at `level="tag"` a user likes a tag after positive events on at least
  `min_items` items carrying it (confident tags). With N users liking anything, n_x fans of X, n_y
  of Y and n_xy of both: support = n_xy (users), share = n_xy / N, confidence = n_xy / n_x,
  lift = n_xy · N / (n_x · n_y). Pairs under `min_support` users are dropped. Raw lift is largest
  for niche items all of whose few fans like X, so the ranking uses the shrunk lift
  score = n_xy / (n_x · n_y / N + `prior`) (prior = 5 expected co-likes), then support.
  Cost: one pass over the window's positive events; the tag level joins them with item_tags
  (Last.fm, 249k events: < 1 s per item seed, ~30 s per tag seed on a loaded 2-core machine —
  call it offline or cache it).
- `sequence_next(history)`: a first-order Markov model over consecutive positive events of the same
  user less than `session_gap` apart, over items or over tags; P(y | x) = transitions x→y /
  transitions out of x. At `level="tag"` a step from an item carrying confident tag x to another
  item is a transition x → y for every confident tag y of the next item that the previous item
  lacks (every tag of an item counts, not only its strongest one, so broad tags such as "jazz"
  that are rarely an item's first tag still have transitions). The last `order` history entries vote with
  weights decay^j (the latest weighs most): score(y) = Σ_j w_j P(y | x_j) / Σ_j w_j — "A, B, C → D"
  (Σ over the entries with a transition to something new). Entries already in the history are not
  proposed; self-transitions are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from tagloop.tools.errors import InvalidInput

POSITIVE = ["play", "complete", "like", "save", "add_to_playlist", "share", "click", "convert"]
Level = Literal["item", "tag"]

_ITEM_LIKES = """
    select distinct e.user_id, e.item_id as key from events e
    where e.type = any(%(pos)s) and e.item_id is not null and e.ts > %(since)s and e.ts <= %(now)s
"""

_TAG_LIKES = """
    select e.user_id, t.name as key from events e
    join item_tags it on it.item_id = e.item_id and it.confidence >= 0.5
    join tags t on t.id = it.tag_id
    where e.type = any(%(pos)s) and e.ts > %(since)s and e.ts <= %(now)s
    group by e.user_id, t.name
    having count(distinct e.item_id) >= %(min_items)s
"""

_CO_LIKES = """
with likes as materialized ({likes}),
fans as (select user_id from likes where key = %(seed)s),
co as (
    select l.key, count(*) as n_xy from likes l join fans f on f.user_id = l.user_id
    where l.key <> %(seed)s group by l.key having count(*) >= %(min_support)s
),
pop as (select l.key, count(*) as n_y from likes l join co on co.key = l.key group by l.key),
totals as (select count(distinct user_id) as n, (select count(*) from fans) as n_x from likes)
select co.key, co.n_xy, t.n_x, pop.n_y, t.n
from co join pop on pop.key = co.key cross join totals t
"""


@dataclass(frozen=True)
class CoLike:
    key: str
    support: int
    share: float
    confidence: float
    lift: float
    score: float  # shrunk lift, the ranking key


def _window(now: datetime, window: timedelta) -> dict[str, Any]:
    if now.tzinfo is None:
        raise InvalidInput("now must be timezone-aware")
    return {"since": now - window, "now": now, "pos": POSITIVE}


def co_likes(
    conn: psycopg.Connection[Any],
    seed: str,
    *,
    now: datetime,
    level: Level = "item",
    k: int = 20,
    min_support: int = 2,
    min_items: int = 2,
    window: timedelta = timedelta(days=365),
    prior: float = 5.0,
) -> list[CoLike]:
    """Items (or tags) most over-represented among the fans of `seed` (see the module docstring)."""
    likes = _ITEM_LIKES if level == "item" else _TAG_LIKES
    query = sql.SQL(_CO_LIKES).format(likes=sql.SQL(likes))
    params = {**_window(now, window), "seed": seed, "min_support": min_support, "min_items": min_items}
    out = []
    for r in conn.execute(query, params):
        n_x, n_y, n, n_xy = int(r["n_x"]), int(r["n_y"]), int(r["n"]), int(r["n_xy"])
        expected = n_x * n_y / n
        out.append(CoLike(r["key"], n_xy, n_xy / n, n_xy / n_x, n_xy / expected, n_xy / (expected + prior)))
    out.sort(key=lambda c: (-c.score, -c.support, c.key))
    return out[:k]


_ITEM_KEYS = """
    select e.user_id, e.item_id as key, e.ts, e.seq from events e
    where e.type = any(%(pos)s) and e.item_id is not null and e.ts > %(since)s and e.ts <= %(now)s
"""

_TRANSITIONS = """
with ev as ({keys}),
steps as (
    select key, lag(key) over w as prev, ts - lag(ts) over w as gap
    from ev window w as (partition by user_id order by ts, seq)
)
select prev, key, count(*) as n from steps
where prev = any(%(prevs)s) and key <> prev and gap <= %(gap)s
group by prev, key
"""

# Tags: a step from an item carrying tag x to the next item counts x → y for each confident tag y of
# the next item that the previous item does not carry (what the listener moved on to).
_TAG_TRANSITIONS = """
with ev as ({keys}),
steps as (
    select key, lag(key) over w as prev, ts - lag(ts) over w as gap
    from ev window w as (partition by user_id order by ts, seq)
),
tagged as materialized (
    select it.item_id, t.name from item_tags it join tags t on t.id = it.tag_id
    where it.confidence >= 0.5
)
select px.name as prev, nx.name as key, count(*) as n
from steps s
join tagged px on px.item_id = s.prev and px.name = any(%(prevs)s)
join tagged nx on nx.item_id = s.key
where s.key <> s.prev and s.gap <= %(gap)s
  and not exists (select 1 from tagged o where o.item_id = s.prev and o.name = nx.name)
group by 1, 2
"""


@dataclass(frozen=True)
class NextStep:
    key: str
    score: float  # weighted transition probability, in [0, 1]
    support: int  # transitions into `key` from the history entries used


def transitions(
    conn: psycopg.Connection[Any],
    prevs: Sequence[str],
    *,
    now: datetime,
    level: Level = "item",
    window: timedelta = timedelta(days=90),
    session_gap: timedelta = timedelta(minutes=30),
) -> dict[str, dict[str, int]]:
    """Transition counts {x: {y: n}} out of each x in `prevs` (first-order, within sessions)."""
    if level not in ("item", "tag"):
        raise InvalidInput(f"level must be item or tag, got {level!r}")
    query = sql.SQL(_TRANSITIONS if level == "item" else _TAG_TRANSITIONS).format(keys=sql.SQL(_ITEM_KEYS))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    params = {**_window(now, window), "prevs": list(prevs), "gap": session_gap}
    for r in conn.execute(query, params):
        out[r["prev"]][r["key"]] = int(r["n"])
    return dict(out)


def sequence_next(
    conn: psycopg.Connection[Any],
    history: Sequence[str],
    *,
    now: datetime,
    level: Level = "item",
    k: int = 10,
    order: int = 3,
    decay: float = 0.5,
    window: timedelta = timedelta(days=90),
    session_gap: timedelta = timedelta(minutes=30),
) -> list[NextStep]:
    """Likely next items (or tags) after `history` (oldest first): see the module docstring."""
    if not history:
        return []
    # latest first, each entry once (its latest place): "A A A" counted A's transitions three times
    recent = list(dict.fromkeys(reversed(history)))[:order]
    counts = transitions(conn, recent, now=now, level=level, window=window, session_gap=session_gap)
    return next_from_counts(counts, recent, set(history), k=k, decay=decay)


def next_from_counts(
    counts: dict[str, dict[str, int]],
    recent: Sequence[str],
    exclude: set[str],
    *,
    k: int,
    decay: float,
) -> list[NextStep]:
    """The weighted mixture of first-order rows for `recent` (latest first); pure."""
    scores: dict[str, float] = defaultdict(float)
    support: dict[str, int] = defaultdict(int)
    total_weight = 0.0
    for j, x in enumerate(recent):
        weight = decay**j
        row = counts.get(x, {})
        out_of_x = sum(row.values())
        eligible = {y: n for y, n in row.items() if y not in exclude}
        if not eligible:
            continue  # an entry that leads nowhere new does not dilute the others
        total_weight += weight
        for y, n in eligible.items():
            scores[y] += weight * n / out_of_x
            support[y] += n
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [NextStep(y, s / total_weight, support[y]) for y, s in ranked]


def resolve_keys(conn: psycopg.Connection[Any], keys: Sequence[str], level: Level) -> dict[str, str | None]:
    """Each distinct key as the store holds it, or None when it holds none: item ids match exactly;
    tags resolve as `tagloop tag` resolves them (`find_tag`: the name, a merged alias or a spelling
    variant, so "Hip Hop" is hip-hop and "alternativerock" is alternative-rock)."""
    unique = list(dict.fromkeys(keys))
    if level == "item":
        rows = conn.execute("select id from items where id = any(%(keys)s)", {"keys": unique})
        known = {r["id"] for r in rows}
        return {key: key if key in known else None for key in unique}
    # here, not at the top: the tagging store's imports (scipy, via the store merge) would make
    # importing this module four times slower for every caller that never resolves a tag
    from tagloop.tools.tagging.store import find_tag

    return {key: found[1] if (found := find_tag(conn, key)) else None for key in unique}
