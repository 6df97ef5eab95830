"""Catalogue SQL: providers, the tag vocabulary, item tags and item tag vectors."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from pgvector import SparseVector

TAG_DIM = 1_000_000  # sparsevec dimension: tag ids live below it


def existing_ids(conn: psycopg.Connection[Any], table: str, ids: Iterable[str]) -> set[str]:
    wanted = list(set(ids))
    if not wanted:
        return set()
    if table not in {"users", "items", "providers"}:
        raise ValueError(table)
    rows = conn.execute(
        psycopg.sql.SQL("select id from {} where id = any(%(ids)s)").format(psycopg.sql.Identifier(table)),
        {"ids": wanted},
    ).fetchall()
    return {r["id"] for r in rows}


def upsert_providers(conn: psycopg.Connection[Any], names: Iterable[str]) -> None:
    names = sorted(set(names))
    if names:
        conn.execute(
            """insert into providers (id, name) select n, n from unnest(%(names)s::text[]) as n
               on conflict (id) do nothing""",
            {"names": names},
        )


# a name is its own tag's, else the most used tag that merged it as an alias (tags.aliases)
_KNOWN_TAGS = """
    select distinct on (n) n as name, t.id from unnest(%(names)s::text[]) as n
    join tags t on t.name = n or t.aliases @> array[n]
    order by n, t.name = n desc, t.item_count desc, t.id
"""


def ensure_tags(conn: psycopg.Connection[Any], names: Iterable[str]) -> dict[str, int]:
    """Tag name → id, creating the missing ones. A spelling merged into another tag (one of its
    `aliases`, tools/tagging/store.py) is that tag: written as a tag of its own, it split the tag
    until the next merge."""
    names = sorted(set(names))
    if not names:
        return {}
    known = {r["name"]: r["id"] for r in conn.execute(_KNOWN_TAGS, {"names": names})}
    missing = [n for n in names if n not in known]
    if missing:
        conn.execute(
            "insert into tags (name) select n from unnest(%(names)s::text[]) as n on conflict do nothing",
            {"names": missing},
        )
        known.update((r["name"], r["id"]) for r in conn.execute(_KNOWN_TAGS, {"names": missing}))
    return known


# the condition on a pair `p(item_id, tag_id)` that the owner has not taken that tag off that item
# (`tagloop tag remove`, tools/tagging/store_rejections.py): imports and proposals leave it out
NOT_REJECTED = """not exists (
    select 1 from item_tag_rejections r where r.item_id = p.item_id and r.tag_id = p.tag_id)"""


def replace_item_tags(
    conn: psycopg.Connection[Any], tags_by_item: Mapping[str, Mapping[str, float]], *, source: str
) -> None:
    """Set the `source` tags of each item, then refresh tag vectors. Tags of other sources are
    kept: a tag written here takes over the row of another source it repeats (one row per item and
    tag) and keeps it in `underneath`, and when a later call leaves the tag out the row goes back
    to what it took over (migration 0078). A tag the owner took off the item (`tagloop tag remove`,
    table `item_tag_rejections`) is not written: it stays off until `tagloop tag restore`."""
    if not tags_by_item:
        return
    ids = ensure_tags(conn, {t for tags in tags_by_item.values() for t in tags})
    item_ids = list(tags_by_item)
    pairs: dict[tuple[str, int], float] = {}  # a name and its merged alias given together: one row
    for item, tags in tags_by_item.items():
        for name, weight in tags.items():
            pairs[item, ids[name]] = max(pairs.get((item, ids[name]), 0.0), float(weight))
    rows = [(item, tag, weight) for (item, tag), weight in pairs.items()]
    params = {
        "items": item_ids,
        "source": source,
        "pair_items": [r[0] for r in rows],
        "pair_tags": [r[1] for r in rows],
        "weights": [float(r[2]) for r in rows],
    }
    dropped = """it.item_id = any(%(items)s) and it.source = %(source)s and not exists (
        select 1 from unnest(%(pair_items)s::text[], %(pair_tags)s::int[]) as p(item_id, tag_id)
        where p.item_id = it.item_id and p.tag_id = it.tag_id)"""
    conn.execute(
        f"""update item_tags it set source = it.underneath ->> 'source',
                   weight = (it.underneath ->> 'weight')::real,
                   confidence = (it.underneath ->> 'confidence')::real, underneath = null
            where it.underneath is not null and {dropped}""",
        params,
    )
    conn.execute(f"delete from item_tags it where {dropped}", params)
    conn.execute(
        f"""insert into item_tags as it (item_id, tag_id, weight, source)
           select p.item_id, p.tag_id, p.weight, %(source)s
           from unnest(%(pair_items)s::text[], %(pair_tags)s::int[], %(weights)s::real[])
                as p(item_id, tag_id, weight)
           where {NOT_REJECTED}
           on conflict (item_id, tag_id) do update set
               underneath = case when it.source <> excluded.source
                                 then jsonb_build_object('source', it.source, 'weight', it.weight,
                                                         'confidence', it.confidence)
                                 else it.underneath end,
               source = excluded.source, weight = excluded.weight, confidence = excluded.confidence""",
        params,
    )
    refresh_tag_counts(conn)
    refresh_item_vectors(conn, item_ids)


def refresh_tag_counts(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """update tags t set item_count = coalesce(c.n, 0)
           from (select t2.id, count(it.item_id) as n from tags t2
                 left join item_tags it on it.tag_id = t2.id and it.confidence >= 0.5
                 group by t2.id) c
           where c.id = t.id and t.item_count is distinct from coalesce(c.n, 0)"""
    )


def refresh_item_vectors(conn: psycopg.Connection[Any], item_ids: list[str] | None = None) -> int:
    """Recompute tf-idf, L2-normalised tag vectors (confident tags only) for the given items, or all."""
    n_items = conn.execute("select count(*) as n from items").fetchone()
    total = max(int(n_items["n"]) if n_items else 1, 1)
    rows = conn.execute(
        """select it.item_id, it.tag_id, it.weight, t.item_count
           from item_tags it join tags t on t.id = it.tag_id
           where it.confidence >= 0.5 and (%(all)s or it.item_id = any(%(items)s))
           order by it.item_id""",
        {"all": item_ids is None, "items": item_ids or []},
    ).fetchall()
    vectors: dict[str, dict[int, float]] = {}
    for r in rows:
        idf = math.log((1 + total) / (1 + r["item_count"])) + 1.0
        vectors.setdefault(r["item_id"], {})[r["tag_id"]] = float(r["weight"]) * idf
    payload = []
    for item_id, vec in vectors.items():
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        payload.append((item_id, SparseVector({k: v / norm for k, v in vec.items()}, TAG_DIM)))
    with conn.cursor() as cur:
        cur.execute("create temp table if not exists stage_vecs (item_id text, v sparsevec) on commit drop")
        cur.execute("truncate stage_vecs")
        with cur.copy("copy stage_vecs from stdin") as copy:
            for item_id, v in payload:
                copy.write_row((item_id, v.to_text()))
        cur.execute(
            "update items i set tag_vec = s.v::sparsevec(1000000) from stage_vecs s where s.item_id = i.id"
        )
        if item_ids is not None:
            cur.execute(
                "update items set tag_vec = null where id = any(%(items)s) and id <> all(%(have)s)",
                {"items": item_ids, "have": list(vectors)},
            )
    return len(payload)
