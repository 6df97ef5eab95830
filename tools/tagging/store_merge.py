"""Moving everything keyed by a tag id from merged spelling variants to their canonical tag.

A tag's id is its dimension in every sparse vector, so `merge_tag_ids(conn, {variant: canonical})`
(called by `sync_vocabulary` when it merges variants) moves, in the caller's transaction:
- `item_tags`: one row per item and tag (highest weight and confidence, an `import` row's source
  wins over auto sources, what an import row took over stays `underneath`);
- `tag_embeddings`: a variant's learned vector becomes the canonical tag's when that has none;
- `item_tag_rejections`: a tag the owner took off an item stays off under the canonical tag (a
  variant's row that would bring it back, e.g. an import's new spelling, is dropped);
- `user_profiles.tags` (sparsevec, text index = id + 1): a variant's weight is added to the
  canonical tag's; and the per-tag stats the online update keeps under the tag id in `stats`
  (`source_tags` per source: weights added; `fresh`: play counts added, the later window kept);
then deletes the variant tags, recounts `tags.item_count` and recomputes the tag vectors of every
item carrying a canonical tag (its count, and so its idf, changed). It holds the profile folder's
lock meanwhile, so no fold can write a variant id back into a profile. Before, the variant's id stayed
in item vectors and profiles after its row was deleted: search split the tag in two, and profiles
lost it from their top tags. Never commits.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from tagloop.tools.profile_folder import FOLD_LOCK
from tagloop.tools.profiles import sparsevec_parse, sparsevec_text
from tagloop.tools.store.catalogue import refresh_item_vectors, refresh_tag_counts

AUTO_SOURCES = ("keyword", "llm", "cooccurrence", "colisten", "provider", "embedding", "popular")

_PAIRS = "unnest(%(variant)s::int[], %(canonical)s::int[]) as m(variant_id, canonical_id)"

MOVE_ITEM_TAGS = f"""
    with m as (select * from {_PAIRS}),
    moved as (
        select it.item_id, m.canonical_id as tag_id,
               max(it.weight) as weight, max(it.confidence) as confidence,
               (array_agg(it.source order by it.source <> all(%(auto)s) desc, it.confidence desc))[1]
                   as source,
               (array_agg(it.underneath) filter (where it.underneath is not null))[1] as underneath
        from item_tags it join m on m.variant_id = it.tag_id
        group by it.item_id, m.canonical_id
    )
    insert into item_tags (item_id, tag_id, weight, source, confidence, underneath)
    select item_id, tag_id, weight, source, confidence, underneath from moved
    on conflict (item_id, tag_id) do update set
        weight = greatest(item_tags.weight, excluded.weight),
        confidence = greatest(item_tags.confidence, excluded.confidence),
        source = case when item_tags.source <> all(%(auto)s) then item_tags.source else excluded.source end,
        underneath = coalesce(item_tags.underneath, excluded.underneath)
"""

MOVE_REJECTIONS = f"""
    insert into item_tag_rejections (item_id, tag_id, rejected_at)
    select r.item_id, m.canonical_id, max(r.rejected_at)
    from item_tag_rejections r join {_PAIRS} on m.variant_id = r.tag_id
    group by r.item_id, m.canonical_id
    on conflict (item_id, tag_id) do nothing
"""

# a row the merge gave an item (a variant's, moved) or left on it (the variant became canonical)
# for a tag the owner took off it: removed, as `tag remove` promises
DROP_REJECTED = """
    delete from item_tags it using item_tag_rejections r
    where r.item_id = it.item_id and r.tag_id = it.tag_id and it.tag_id = any(%(canonical)s::int[])
    returning it.item_id
"""

MOVE_EMBEDDINGS = f"""
    update tag_embeddings e set tag_id = pick.canonical_id
    from (select distinct on (m.canonical_id) m.canonical_id, m.variant_id
          from {_PAIRS} join tag_embeddings v on v.tag_id = m.variant_id
          where not exists (select 1 from tag_embeddings c where c.tag_id = m.canonical_id)
          order by m.canonical_id, m.variant_id) pick
    where e.tag_id = pick.variant_id
"""

# profiles holding a variant: in the tag vector (text index id + 1) or under the id in the stats
PROFILES = """
    select user_id, tags::text as tags, stats::text as stats from user_profiles
    where tags::text ~ %(pattern)s
       or (jsonb_typeof(stats -> 'fresh') = 'object' and stats -> 'fresh' ?| %(keys)s)
       or (jsonb_typeof(stats -> 'source_tags') = 'object' and exists (
               select 1 from jsonb_each(stats -> 'source_tags') s
               where jsonb_typeof(s.value) = 'object' and s.value ?| %(keys)s))
    order by user_id
    for update
"""
SAVE_PROFILE = """
    update user_profiles set tags = %(tags)s::sparsevec(1000000), stats = %(stats)s::jsonb, updated_at = now()
    where user_id = %(user_id)s
"""


def merge_tag_ids(conn: psycopg.Connection[Any], moves: dict[int, int]) -> None:
    """Move everything keyed by each variant id to its canonical id and delete the variants."""
    if not moves:
        return
    # A fold in flight may hold a profile read with a variant id, to write it back: wait for it to
    # commit (its write is then moved here), and keep new folds out until this transaction ends.
    conn.execute("select pg_advisory_xact_lock(%(ns)s, %(key)s)", FOLD_LOCK)
    pairs = {"variant": list(moves), "canonical": [moves[v] for v in moves]}
    conn.execute(MOVE_ITEM_TAGS, {**pairs, "auto": list(AUTO_SOURCES)})
    conn.execute(MOVE_REJECTIONS, pairs)
    dropped = {r["item_id"] for r in conn.execute(DROP_REJECTED, pairs).fetchall()}
    conn.execute(MOVE_EMBEDDINGS, pairs)
    _move_profiles(conn, moves)
    conn.execute("delete from tags where id = any(%(ids)s)", {"ids": list(moves)})
    refresh_tag_counts(conn)
    items = conn.execute(
        "select distinct item_id from item_tags where tag_id = any(%(ids)s)",
        {"ids": sorted(set(moves.values()))},
    ).fetchall()
    if items or dropped:
        refresh_item_vectors(conn, sorted({r["item_id"] for r in items} | dropped))


def _move_profiles(conn: psycopg.Connection[Any], moves: dict[int, int]) -> None:
    vec_moves = {str(v + 1): str(c + 1) for v, c in moves.items()}
    stat_moves = {str(v): str(c) for v, c in moves.items()}
    pattern = "[{,](" + "|".join(sorted(vec_moves)) + "):"
    rows = conn.execute(PROFILES, {"pattern": pattern, "keys": sorted(stat_moves)}).fetchall()
    updates = []
    for r in rows:
        tags = _summed(sparsevec_parse(r["tags"]), vec_moves)
        stats = orjson.loads(r["stats"])
        sources = stats.get("source_tags")
        if isinstance(sources, dict):
            for source, weights in sources.items():
                if isinstance(weights, dict):
                    sources[source] = {k: round(v, 4) for k, v in _summed(weights, stat_moves).items()}
        fresh = stats.get("fresh")
        if isinstance(fresh, dict):
            stats["fresh"] = _fresh(fresh, stat_moves)
        updates.append(
            {"user_id": r["user_id"], "tags": sparsevec_text(tags), "stats": orjson.dumps(stats).decode()}
        )
    if updates:
        with conn.cursor() as cur:
            cur.executemany(SAVE_PROFILE, updates)


def _summed(weights: dict[str, float], moves: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in weights.items():
        target = moves.get(key, key)
        out[target] = out.get(target, 0.0) + value
    return out


def _fresh(fresh: dict[str, Any], moves: dict[str, str]) -> dict[str, Any]:
    """Per tag [plays in the window, window start]: a variant's plays join the canonical tag's."""
    out: dict[str, Any] = {}
    for key, seen in fresh.items():
        target = moves.get(key, key)
        have = out.get(target)
        if have is None or not (isinstance(have, list) and isinstance(seen, list) and len(seen) == 2):
            out[target] = seen if have is None else have
        else:
            out[target] = [have[0] + seen[0], max(have[1], seen[1])]
    return out
