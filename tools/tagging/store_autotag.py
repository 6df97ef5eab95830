"""Auto-tagging against the store: read what `autotag` needs, store its proposals, confirm them.

- `autotag_inputs(conn, kind)`: items as `ItemText` (title, text, string attribute values,
  provider), their *known* tags (every source but the auto ones: `import`, `confirmed`, …) and
  implicit feedback (user, item, log(1 + positive events)) for co-consumption.
- `store_proposals(conn, targets, proposals)`: deletes the auto-sourced rows of the target items
  (never an `import` or `confirmed` row) and writes the proposals with their source, confidence
  (none the owner took off the item: `store_rejections`)
  and weight = confidence; then refreshes tag counts and the target items' tag vectors, which
  take tags with confidence ≥ 0.5 only, so provisional proposals stay out of vectors and profiles.
- `confirm_by_behaviour(conn)`: the "confirmed by behaviour" rule. A provisional auto tag t on item
  i is confirmed when ≥ `min_users` users who engaged positively (like, save, add_to_playlist,
  share, complete) with i have also engaged positively with *another* item carrying t as one of its
  own tags (imported or given by people: confirmed and proposed tags do not count, or each run
  would confirm more on the strength of the last)
  — t is in their taste — and they are ≥ `min_share` of i's positive users, and that share is
  ≥ `min_lift` times the share of all engaged users who engage with items carrying t (a broad tag
  such as rock or seen-live is in almost everyone's taste, so it says nothing about i: without the
  lift, 78,291 of ~170k Last.fm proposals were confirmed, Michael Jackson as female-vocalists). The
  row becomes source `confirmed` with confidence 0.5 + 0.5·share, so it enters vectors and
  profiles and later runs of `tag items` keep it.
Functions take a connection and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from tagloop.tools.store.catalogue import NOT_REJECTED, ensure_tags, refresh_item_vectors, refresh_tag_counts
from tagloop.tools.tagging.autotag import CONFIRM_AT, TagProposal
from tagloop.tools.tagging.sources import ItemText
from tagloop.tools.tagging.store import AUTO_SOURCES
from tagloop.tools.tagging.vocabulary import tag_key

POSITIVE = ("like", "save", "add_to_playlist", "share", "complete")
CONSUMED = ("play", "complete", "like", "save", "add_to_playlist", "share")

ITEMS = """
    select id, title, coalesce(text, '') as text, attributes, provider_id from items
    where %(kind)s::text is null or kind = %(kind)s::text order by id
"""
KNOWN_TAGS = """
    select it.item_id, t.name, it.weight from item_tags it join tags t on t.id = it.tag_id
    where it.source <> all(%(auto)s)
"""
INTERACTIONS = """
    select user_id, item_id, ln(1 + count(*)) as weight from events
    where item_id is not null and type = any(%(types)s) group by user_id, item_id
"""
DELETE_AUTO = "delete from item_tags where item_id = any(%(items)s) and source = any(%(auto)s)"
INSERT_PROPOSALS = f"""
    insert into item_tags (item_id, tag_id, weight, source, confidence)
    select * from unnest(%(items)s::text[], %(tags)s::int[], %(confidence)s::real[], %(sources)s::text[],
                         %(confidence)s::real[]) as p(item_id, tag_id, weight, source, confidence)
    where {NOT_REJECTED}
    on conflict (item_id, tag_id) do nothing
"""
CONFIRM = """
    with pos as (select distinct user_id, item_id from events
                 where item_id is not null and type = any(%(types)s)),
    item_users as (select item_id, count(*) as users from pos group by item_id),
    everyone as (select count(distinct user_id)::real as n from pos),
    -- taste comes from the catalogue's own tags (imported, given by people), never from tags this
    -- rule confirmed: those would confirm more on every run (27,937 more on a second Last.fm run)
    taste as (select distinct p.user_id, it.tag_id from pos p
              join item_tags it on it.item_id = p.item_id and it.confidence >= %(confirm_at)s
              where it.source <> 'confirmed' and it.source <> all(%(auto)s)),
    reach as (select tag_id, count(*)::real as users from taste group by tag_id),
    prov as (select item_id, tag_id from item_tags
             where source = any(%(auto)s) and confidence < %(confirm_at)s),
    -- a provisional tag is not confident on its own item, so a user's taste for it always comes
    -- from another item: one hash join, no per-row subquery
    support as (
        select pr.item_id, pr.tag_id, count(*) as n
        from prov pr join pos p on p.item_id = pr.item_id
        join taste ta on ta.user_id = p.user_id and ta.tag_id = pr.tag_id
        group by pr.item_id, pr.tag_id),
    scored as (
        select s.item_id, s.tag_id, s.n, s.n::real / iu.users as share,
               (s.n::real / iu.users) / (r.users / e.n) as lift
        from support s join item_users iu on iu.item_id = s.item_id
        join reach r on r.tag_id = s.tag_id cross join everyone e)
    update item_tags it set source = 'confirmed',
        confidence = least(1.0, %(confirm_at)s + (1 - %(confirm_at)s) * s.share)
    from scored s
    where it.item_id = s.item_id and it.tag_id = s.tag_id
      and s.n >= %(min_users)s and s.share >= %(min_share)s and s.lift >= %(min_lift)s
    returning it.item_id
"""


@dataclass
class AutotagInputs:
    items: list[ItemText]
    known: list[tuple[str, str, float]]
    interactions: list[tuple[str, str, float]]
    providers: dict[str, str]


def _attribute_text(attributes: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in attributes.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = " . ".join(value)
    return out


def _tag_ids(conn: psycopg.Connection[Any], names: set[str]) -> dict[str, int]:
    """Proposal name → tag id: the stored tag with the same merge key when there is one (the most
    used), else a new tag. The vocabulary names tags by a cleaned spelling that can differ from the
    stored one ("(hed) p.e." is stored `(hed)-p.e.`, cleaned `hed) p.e`): written as is, it made a
    second tag, into which the next `tag vocab` merged the user's own."""
    stored: dict[str, int] = {}
    for r in conn.execute("select id, name from tags order by item_count desc, id"):
        stored.setdefault(tag_key(r["name"]), r["id"])
    ids = {n: stored[tag_key(n)] for n in names if tag_key(n) in stored}
    ids.update(ensure_tags(conn, names - ids.keys()))
    return ids


def autotag_inputs(conn: psycopg.Connection[Any], kind: str | None = None) -> AutotagInputs:
    """Items (of `kind`, or all), known tag rows and implicit feedback, as `autotag` takes them."""
    items, providers = [], {}
    for r in conn.execute(ITEMS, {"kind": kind}):
        attrs = _attribute_text(r["attributes"] or {})
        items.append(ItemText(r["id"], r["title"] or "", r["text"], attrs, r["provider_id"]))
        if r["provider_id"]:
            providers[r["id"]] = r["provider_id"]
    known = [
        (r["item_id"], r["name"], float(r["weight"]))
        for r in conn.execute(KNOWN_TAGS, {"auto": list(AUTO_SOURCES)})
    ]
    inter = [
        (r["user_id"], r["item_id"], float(r["weight"]))
        for r in conn.execute(INTERACTIONS, {"types": list(CONSUMED)})
    ]
    return AutotagInputs(items, known, inter, providers)


def store_proposals(
    conn: psycopg.Connection[Any], targets: Sequence[str], proposals: Sequence[TagProposal]
) -> int:
    """Replace the auto tags of `targets` by `proposals`; returns the number of rows written."""
    targets = list(dict.fromkeys(targets))
    if not targets:
        return 0
    conn.execute(DELETE_AUTO, {"items": targets, "auto": list(AUTO_SOURCES)})
    ids = _tag_ids(conn, {p.tag for p in proposals})
    written = 0
    if proposals:
        cur = conn.execute(
            INSERT_PROPOSALS,
            {
                "items": [p.item_id for p in proposals],
                "tags": [ids[p.tag] for p in proposals],
                "confidence": [max(p.confidence, 1e-6) for p in proposals],
                "sources": [p.source for p in proposals],
            },
        )
        written = max(cur.rowcount, 0)
    refresh_tag_counts(conn)
    refresh_item_vectors(conn, targets)
    return written


def confirm_by_behaviour(
    conn: psycopg.Connection[Any], *, min_users: int = 2, min_share: float = 0.25, min_lift: float = 2.0
) -> int:
    """Promote provisional auto tags that behaviour supports (module docstring); returns how many."""
    # fresh statistics: right after `tag items` stored ~170k proposals (Last.fm) the planner saw the
    # old table and the query ran for minutes instead of ~3 s
    conn.execute("analyze item_tags")
    rows = conn.execute(
        CONFIRM,
        {
            "types": list(POSITIVE),
            "auto": list(AUTO_SOURCES),
            "confirm_at": CONFIRM_AT,
            "min_users": min_users,
            "min_share": min_share,
            "min_lift": min_lift,
        },
    ).fetchall()
    items = sorted({r["item_id"] for r in rows})
    if items:
        refresh_tag_counts(conn)
        refresh_item_vectors(conn, items)
    return len(rows)
