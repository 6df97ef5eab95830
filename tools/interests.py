"""Declared interests (`users.attributes.interests`: a list of tag names or an object tag → weight):
parsed to stored tag names, and the unseen items carrying them, for users whose events give no tag
yet. The tags candidate source falls back to them (a new user's first run, before any training,
decided "nothing to send" while the recommendations endpoint served their interests), and so does
the recommendations endpoint before any training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools.tagging_names import normalize_tag


def parse_interests(value: Any) -> dict[str, float]:
    """Declared interests as stored tag names (`normalize_tag`: "Hip Hop" is `hip-hop`, as on items)
    → weight; spellings of one tag add up."""
    if isinstance(value, list):
        pairs = [(t, 1.0) for t in value]
    elif isinstance(value, dict):
        pairs = [(t, float(w)) for t, w in value.items() if isinstance(w, int | float) and w > 0]
    else:
        return {}
    out: dict[str, float] = {}
    for tag, weight in pairs:
        name = normalize_tag(str(tag))
        if name:
            out[name] = out.get(name, 0.0) + weight
    return out


_INTERESTS = """
select id, attributes -> 'interests' from users
where id = any(%(users)s) and jsonb_typeof(attributes -> 'interests') in ('array', 'object')
"""

# per user, the unseen items carrying their interests (confident tags), by the interests' weights
# times the tags', with the interests each carries, heaviest first. Each interest tag is read once
# per statement and only its `per_tag` heaviest items (item_tags_tag_weight_idx): all of a broad
# tag's items, per user, cost ~350 ms a user on a 200,000-item catalogue. An item carrying several
# interests but among the heaviest of none of them is missed: these users have nothing else yet.
_DECLARED = """
with wanted(user_id, name, w) as (
    select * from unnest(%(users)s::text[], %(names)s::text[], %(weights)s::float8[])
), tag as (
    select distinct t.id, t.name from tags t where t.name = any(%(names)s::text[])
), top as (
    select tag.name, x.item_id, x.weight from tag
    cross join lateral (
        select it.item_id, it.weight from item_tags it
        join items i on i.id = it.item_id and i.kind <> 'message'
        where it.tag_id = tag.id and it.confidence >= 0.5
        order by it.weight desc, it.item_id
        limit %(per_tag)s
    ) x
), scored as (
    select wanted.user_id, top.item_id, sum(top.weight * wanted.w)::float8 as score,
           array_agg(top.name order by top.weight * wanted.w desc, top.name) as shared
    from wanted join top on top.name = wanted.name
    where not exists (select 1 from events s where s.user_id = wanted.user_id and s.item_id = top.item_id)
    group by wanted.user_id, top.item_id
), ranked as (
    select s.*, row_number() over (partition by s.user_id order by s.score desc, s.item_id) as r from scored s
)
select r.user_id, r.item_id, i.title, i.provider_id, r.score, r.shared
from ranked r join items i on i.id = r.item_id
where r.r <= %(k)s
order by r.user_id, r.r
"""
PER_TAG = 4  # items read per interest tag: this many times k (users with events skip some as seen)


def interests_of(conn: psycopg.Connection[Any], user_ids: list[str]) -> dict[str, dict[str, float]]:
    """The declared interests of those of `user_ids` that have any (one statement)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_INTERESTS, {"users": user_ids}).fetchall()
    return {user: parsed for user, value in rows if (parsed := parse_interests(value))}


def declared_items(
    conn: psycopg.Connection[Any], interests: Mapping[str, Mapping[str, float]], k: int
) -> dict[str, list[tuple[str, str, str | None, float, list[str]]]]:
    """Per user, up to k unseen items carrying their interests, best first: (item id, title,
    provider, score, the interests it carries, heaviest first)."""
    users, names, weights = [], [], []
    for user, wanted in interests.items():
        for name, weight in wanted.items():
            users.append(user)
            names.append(name)
            weights.append(weight)
    out: dict[str, list[tuple[str, str, str | None, float, list[str]]]] = {u: [] for u in interests}
    if not users:
        return out
    with conn.cursor(row_factory=tuple_row) as cur:
        params = {"users": users, "names": names, "weights": weights, "k": k, "per_tag": PER_TAG * k}
        for user, item, title, provider, score, shared in cur.execute(_DECLARED, params):
            out[user].append((item, title, provider, float(score), list(shared)))
    return out
