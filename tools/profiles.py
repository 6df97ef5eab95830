"""Tag-level user profiles built from the event stream.

A profile is a sparse vector over the tag vocabulary: every event on an item adds
`event_weight × decay × item-tag weight` to each of the item's confident tags, where decay halves
the contribution every `half_life_days`. Clear positives (like, save, add_to_playlist, share,
complete) weigh most; plays count by log(1 + count); negatives (dislike, dismiss, unsubscribe)
subtract; skips are calibrated per user — a user who skips a lot loses less per skip.
The hour-of-week activity histogram in the user's own time zone is stored as `hour_of_week`
(int[168]) and shown by `load_profiles` as `stats["hour_of_week"]`; `stats` also carries the skip
rate (and, from online folds, device and source counts). A rebuild marks the events it read as
folded (`folded_seq`, under the folder's lock), so the profile folder does not count them again.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import psycopg
from pgvector import SparseVector
from scipy import sparse

from tagloop.tools.store.catalogue import TAG_DIM
from tagloop.tools.store.pending import Pending, request

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


# A user's skip rate starts from a prior of one skip in four listens, so the first skip of a new user
# weighs like a skip of a typical listener (0.5 × (1 − 2/5)) instead of almost nothing (1/1 → 0.95).
SKIP_PRIOR_SKIPS, SKIP_PRIOR_LISTENS = 1.0, 4.0
PLAY_VALUE_CAP = 1e6  # a play's value (a play count) beyond this adds nothing: 1e308 added 709


def skip_rate(skips: float, listened: float) -> float:
    """The user's skip rate among skips, plays and completes, with the prior."""
    return (skips + SKIP_PRIOR_SKIPS) / (listened + SKIP_PRIOR_LISTENS)


def event_weight(type_: str, value: float | None, skip_rate: float = 0.0) -> float:
    """The signed strength of one event on the item's tags (before decay and tag weight)."""
    base = EVENT_WEIGHTS.get(type_, 0.0)
    if type_ == "play":
        return base * math.log1p(min(max(value if value is not None else 1.0, 0.0), PLAY_VALUE_CAP))
    if type_ == "skip":
        return base * (1.0 - min(max(skip_rate, 0.0), 0.95))
    return base


def decay(age_seconds: float, half_life_days: float) -> float:
    return 0.5 ** (max(age_seconds, 0.0) / (half_life_days * 86400.0))


MAX_PROFILE_TAGS = 256  # strongest tags kept per profile: enough for fine tastes, cheap to search

_USER_ITEM = """
with rate as (
    select user_id,
           (count(*) filter (where type = 'skip') + %(prior_skips)s)::float8
             / (count(*) filter (where type in ('skip', 'play', 'complete')) + %(prior_listens)s) as skip_rate
    from events where user_id = any(%(users)s) and seq <= %(upto)s group by user_id
)
select e.user_id, e.item_id,
       sum(case when e.type = 'play' then ln(1 + least(greatest(coalesce(e.value, 1), 0), %(play_cap)s))
                when e.type = 'skip' then -0.5 * (1 - least(r.skip_rate, 0.95))
                else coalesce((%(weights)s::jsonb ->> e.type)::float8, 0) end
           * power(0.5, greatest(extract(epoch from (%(now)s - e.ts)), 0) / %(half_life)s)) as w
from events e
join rate r on r.user_id = e.user_id
where e.user_id = any(%(users)s) and e.seq <= %(upto)s and e.item_id is not null
group by e.user_id, e.item_id
"""

_ITEM_TAGS = """
select item_id, tag_id, weight from item_tags
where confidence >= 0.5 and item_id = any(%(items)s)
"""

_STATS = """
select e.user_id,
       count(*) as n_events,
       (count(*) filter (where e.type = 'skip') + %(prior_skips)s)::float8
         / (count(*) filter (where e.type in ('skip', 'play', 'complete')) + %(prior_listens)s) as skip_rate,
       array_agg(((extract(isodow from e.ts at time zone u.timezone)::int - 1) * 24
                  + extract(hour from e.ts at time zone u.timezone)::int)) as how
from events e join users u on u.id = e.user_id
where e.user_id = any(%(users)s) and e.seq <= %(upto)s
group by e.user_id
"""

# what the online update counts besides tags (tools/online.py `_fold`): events per type (skip
# calibration), devices, sources and regions from the context, and engagement per channel with the
# user's own messages
_CONTEXT_STATS = """
with ev as (
    select user_id, type, context, message_id,
           coalesce(nullif(context ->> 'region', ''), nullif(context ->> 'location', ''),
                    nullif(context ->> 'country', '')) as region
    from events
    where user_id = any(%(users)s) and seq <= %(upto)s
), labelled as (
    select user_id, 'counts' as stat, type as k from ev
    union all
    select user_id, 'devices', left(context ->> 'device', 64) from ev
    where jsonb_typeof(context -> 'device') = 'string' and context ->> 'device' <> ''
    union all
    select user_id, 'sources', left(context ->> 'source', 64) from ev
    where jsonb_typeof(context -> 'source') = 'string' and context ->> 'source' <> ''
    union all
    select user_id, 'regions', left(region, 64) from ev where region is not null
), counted as (
    select user_id, stat, jsonb_object_agg(k, n) as j
    from (select user_id, stat, k, count(*) as n from labelled group by 1, 2, 3) c group by 1, 2
), channels as (
    select user_id, 'channels' as stat, jsonb_object_agg(channel, j) as j from (
        select user_id, channel, jsonb_object_agg(type, n) as j from (
            select ev.user_id, m.channel, ev.type, count(*) as n
            from ev join messages m on m.id::text = ev.message_id and m.user_id = ev.user_id
            group by 1, 2, 3
        ) t group by 1, 2
    ) c group by 1
)
select user_id, jsonb_object_agg(stat, j) as stats
from (select * from counted union all select * from channels) s
group by user_id
"""

_UPSERT = """
insert into user_profiles (user_id, tags, decayed_to, n_events, stats, hour_of_week, folded_seq, updated_at)
values (%(user_id)s, %(tags)s, %(now)s, %(n_events)s, %(stats)s, %(hour_of_week)s, %(folded_seq)s, now())
on conflict (user_id) do update set tags = excluded.tags, decayed_to = excluded.decayed_to,
    n_events = excluded.n_events, stats = excluded.stats, hour_of_week = excluded.hour_of_week,
    folded_seq = excluded.folded_seq, updated_at = now()
"""


REBUILD_BATCH_USERS = 1000  # users rebuilt per transaction: the folder waits for one batch at most
_NEXT_USERS = """
select id from users where %(after)s::text is null or id > %(after)s order by id limit %(n)s
"""


def rebuild_profiles(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    half_life_days: float,
    user_ids: list[str] | None = None,
    batch_users: int = REBUILD_BATCH_USERS,
) -> int:
    """Recompute profiles from all stored events (for `user_ids`, or everyone). Returns users written.

    Users are rebuilt `batch_users` at a time, each batch in `conn.transaction()` (committed on its
    own on an idle connection, a savepoint in a caller's transaction) under the profile folder's
    lock (`profile_folder.lock_for_rebuild`): no fold runs between a batch's reads and its writes,
    every read sees the same events (those up to the batch's settled horizon) and the users'
    `folded_seq` is that horizon, so the folder folds exactly the events the batch did not read.

    The database aggregates events to one decayed, signed weight per (user, item); the user × tag
    matrix is then one sparse product with the item × tag matrix, keeping each user's
    `MAX_PROFILE_TAGS` strongest tags. The counts the online update keeps are recounted too
    (events per type, devices, sources, regions, engagement per channel: `_CONTEXT_STATS`), so a
    rebuild keeps what the profile learned from the context. Not rebuilt: the replay bonus of
    repeated listens and per-source tag weights (the online update adds them from then on)."""
    from tagloop.tools.profile_folder import lock_for_rebuild  # the folder imports this module

    if batch_users < 1:
        raise ValueError(f"batch_users must be at least 1, not {batch_users}")
    params = {
        "now": now,
        "half_life": half_life_days * 86400.0,
        "weights": json.dumps(EVENT_WEIGHTS),
        "prior_skips": SKIP_PRIOR_SKIPS,
        "prior_listens": SKIP_PRIOR_LISTENS,
        "play_cap": PLAY_VALUE_CAP,
    }
    wanted = sorted(set(user_ids)) if user_ids is not None else None
    written, after = 0, None
    while True:
        with conn.transaction():
            batch = _next_users(conn, wanted, after, batch_users)
            if not batch:
                return written
            upto = lock_for_rebuild(conn)
            rows = _profile_rows(conn, {**params, "users": batch, "upto": upto})
            _save(conn, rows)
        written += len(rows)
        after = batch[-1]


def _next_users(
    conn: psycopg.Connection[Any], wanted: list[str] | None, after: str | None, n: int
) -> list[str]:
    """The next `n` users after `after` (by id): of `wanted` (sorted), else of everyone."""
    if wanted is not None:
        start = bisect.bisect_right(wanted, after) if after is not None else 0
        return wanted[start : start + n]
    return [r["id"] for r in conn.execute(_NEXT_USERS, {"after": after, "n": n})]


def _profile_rows(conn: psycopg.Connection[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The profile rows of `params["users"]` with events up to `params["upto"]`."""
    tags_by_user = _tag_weights(conn, params)
    counted = {r["user_id"]: r["stats"] for r in conn.execute(_CONTEXT_STATS, params)}
    rows = []
    for r in conn.execute(_STATS, params):
        histogram = [0] * 168
        for slot in r["how"]:
            histogram[slot] += 1
        stats = {"skip_rate": round(float(r["skip_rate"]), 4), **counted.get(r["user_id"], {})}
        rows.append(
            {
                "user_id": r["user_id"],
                "tags": SparseVector(tags_by_user.get(r["user_id"], {}), TAG_DIM),
                "now": params["now"],
                "n_events": r["n_events"],
                "stats": json.dumps(stats),
                "hour_of_week": histogram,
                "folded_seq": params["upto"],
            }
        )
    return rows


def _save(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)


def _tag_weights(conn: psycopg.Connection[Any], params: dict[str, Any]) -> dict[str, dict[int, float]]:
    pairs = conn.execute(_USER_ITEM, params).fetchall()
    if not pairs:
        return {}
    users = sorted({r["user_id"] for r in pairs})
    items = sorted({r["item_id"] for r in pairs})
    u_index = {u: n for n, u in enumerate(users)}
    i_index = {i: n for n, i in enumerate(items)}
    ui = sparse.csr_matrix(
        (
            [float(r["w"]) for r in pairs],
            ([u_index[r["user_id"]] for r in pairs], [i_index[r["item_id"]] for r in pairs]),
        ),
        shape=(len(users), len(items)),
    )
    tag_rows = conn.execute(_ITEM_TAGS, {"items": items}).fetchall()
    if not tag_rows:
        return {}
    tag_ids = sorted({r["tag_id"] for r in tag_rows})
    t_index = {t: n for n, t in enumerate(tag_ids)}
    it = sparse.csr_matrix(
        (
            [float(r["weight"]) for r in tag_rows],
            ([i_index[r["item_id"]] for r in tag_rows], [t_index[r["tag_id"]] for r in tag_rows]),
        ),
        shape=(len(items), len(tag_ids)),
    )
    ut = (ui @ it).tocsr()
    out: dict[str, dict[int, float]] = {}
    tag_array = np.asarray(tag_ids)
    for n, user in enumerate(users):
        lo, hi = ut.indptr[n], ut.indptr[n + 1]
        values, cols = ut.data[lo:hi], ut.indices[lo:hi]
        keep = np.abs(values) > 1e-9
        values, cols = values[keep], cols[keep]
        if len(values) > MAX_PROFILE_TAGS:
            top = np.argpartition(-np.abs(values), MAX_PROFILE_TAGS)[:MAX_PROFILE_TAGS]
            values, cols = values[top], cols[top]
        out[user] = {int(t): float(v) for t, v in zip(tag_array[cols], values, strict=True)}
    return out


def sparsevec_parse(text: str | None) -> dict[str, float]:
    """`{1:0.5,7:-2}/1000000` → {"1": 0.5, "7": -2.0}: weights by text index (tag id + 1)."""
    if not text:
        return {}
    body = text[1 : text.rindex("}")]
    if not body:
        return {}
    parsed: dict[str, float] = orjson.loads('{"' + body.replace(":", '":').replace(",", ',"') + "}")
    return parsed


def sparsevec_text(weights: dict[str, float]) -> str:
    """The inverse of `sparsevec_parse`, dropping weights that have decayed to nothing (compared
    without an abs() per tag: the profile folder runs this for every profile of every fold)."""
    kept = {k: v for k, v in weights.items() if v > 1e-6 or v < -1e-6}
    return orjson.dumps(kept).decode().replace('"', "") + f"/{TAG_DIM}"


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
    return request_profiles(conn, user_ids, top).result()


def request_profiles(
    conn: psycopg.Connection[Any], user_ids: list[str], top: int = 10, names: dict[int, str] | None = None
) -> Pending[dict[str, Profile]]:
    """`load_profiles`, its main statement sent now (tools/store/pending.py); reading it looks up
    the names of the users' top tags — only those missing from `names` when given, which it then
    keeps (a run's cache: after its first batches no lookup is left to wait for)."""

    def parse(rows: list[Any]) -> dict[str, Profile]:
        profiles = {}
        bests: dict[str, list[tuple[int, float]]] = {}
        tag_ids: set[int] = set()
        for r in rows:
            tags = (
                dict(zip(r["tags"].indices(), r["tags"].values(), strict=True))
                if r["tags"] is not None
                else {}
            )
            stats = (
                r["stats"] if r["hour_of_week"] is None else {**r["stats"], "hour_of_week": r["hour_of_week"]}
            )
            profiles[r["id"]] = Profile(r["id"], r["timezone"], tags, n_events=r["n_events"], stats=stats)
            best = bests[r["id"]] = sorted(tags.items(), key=_WEIGHT, reverse=True)[:top]  # = heapq.nlargest
            tag_ids.update(t for t, _ in best)
        known = names if names is not None else {}
        missing = [t for t in tag_ids if t not in known]
        if missing:
            found = conn.execute("select id, name from tags where id = any(%(ids)s)", {"ids": missing})
            known.update((r["id"], r["name"]) for r in found)
        for user, p in profiles.items():
            p.top_tags = [(known[t], round(w, 3)) for t, w in bests[user] if w > 0 and t in known]
        return profiles

    return request(  # sparsevec in binary: no text parsing
        conn,
        """select u.id, u.timezone, p.tags, coalesce(p.n_events, 0)::int8 as n_events,
                  coalesce(p.stats, '{}') as stats, p.hour_of_week
           from users u left join user_profiles p on p.user_id = u.id where u.id = any(%(ids)s)""",
        {"ids": user_ids},
        parse,
        binary=True,
    )


_WEIGHT = itemgetter(1)  # (tag, weight) → weight
