"""The tag vocabulary and taxonomy kept in the store (tables `tags`, `item_tags`).

`sync_vocabulary(conn)` makes the stored tags agree with the tagging rules:
1. builds a `Vocabulary` from every stored tag name and its item count (`build_vocabulary`:
   spelling variants share a `tag_key`; the most used surface form is canonical);
2. merges every other stored tag of a key into its canonical tag: item rows move over (one row per
   item: highest weight and confidence, an `import` row's source wins over auto sources), the
   variant row is deleted and its name kept in the canonical tag's `aliases`;
3. writes each tag's broad `family` and `genre` from `build_taxonomy`, using the stored tag
   embeddings when there are any (rule-less tags then take their neighbours' family).
It returns a `VocabSync` with the vocabulary, taxonomy and what changed. `vocabulary_rows` lists
tags for `tagloop tag vocab` at any level (microgenre = the tag itself, genre, broad).
Functions take a connection and never commit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from tagloop.tools.tagging.taxonomy import Level, Taxonomy, build_taxonomy
from tagloop.tools.tagging.vocabulary import Vocabulary, build_vocabulary, tag_key
from tagloop.tools.tagging_names import normalize_tag as stored_name

AUTO_SOURCES = ("keyword", "llm", "cooccurrence", "colisten", "provider", "embedding", "popular")

TAG_COUNTS = """
    select t.id, t.name, t.aliases, count(it.item_id) as n
    from tags t left join item_tags it on it.tag_id = t.id
    group by t.id order by t.id
"""

MOVE_ITEM_TAGS = """
    with m as (select * from unnest(%(variant)s::int[], %(canonical)s::int[]) as m(variant_id, canonical_id)),
    moved as (
        select it.item_id, m.canonical_id as tag_id,
               max(it.weight) as weight, max(it.confidence) as confidence,
               (array_agg(it.source order by it.source <> all(%(auto)s) desc, it.confidence desc))[1]
                   as source
        from item_tags it join m on m.variant_id = it.tag_id
        group by it.item_id, m.canonical_id
    )
    insert into item_tags (item_id, tag_id, weight, source, confidence)
    select item_id, tag_id, weight, source, confidence from moved
    on conflict (item_id, tag_id) do update set
        weight = greatest(item_tags.weight, excluded.weight),
        confidence = greatest(item_tags.confidence, excluded.confidence),
        source = case when item_tags.source <> all(%(auto)s) then item_tags.source else excluded.source end
"""

ADD_ALIASES = """
    update tags set aliases = array(
        select distinct a from unnest(aliases || %(names)s::text[]) as a where a <> name order by a)
    where id = %(id)s
"""

SET_TAXONOMY = """
    update tags t set family = u.family, genre = u.genre, taxonomy_at = now()
    from unnest(%(ids)s::int[], %(families)s::text[], %(genres)s::text[]) as u(id, family, genre)
    where t.id = u.id and (t.family is distinct from u.family or t.genre is distinct from u.genre)
"""

STORED_EMBEDDINGS = "select t.name, e.embedding from tag_embeddings e join tags t on t.id = e.tag_id"

VOCAB_ROWS = """
    select name, family, genre, item_count, aliases from tags
    order by item_count desc, name
"""


@dataclass
class VocabSync:
    vocab: Vocabulary
    taxonomy: Taxonomy
    ids: dict[str, int]  # canonical tag → tags.id
    merged: dict[str, list[str]] = field(default_factory=dict)  # canonical → variants merged now
    families_set: int = 0


def _merge_variants(
    conn: psycopg.Connection[Any], rows: list[dict[str, Any]], vocab: Vocabulary
) -> dict[str, list[str]]:
    by_name = {r["name"]: int(r["id"]) for r in rows}
    variant_ids: list[int] = []
    canonical_ids: list[int] = []
    merged: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        canonical = vocab.aliases.get(tag_key(r["name"]))
        if canonical is None or canonical == r["name"] or canonical not in by_name:
            continue
        variant_ids.append(int(r["id"]))
        canonical_ids.append(by_name[canonical])
        merged[canonical].extend([r["name"], *r["aliases"]])
    if not variant_ids:
        return {}
    conn.execute(
        MOVE_ITEM_TAGS, {"variant": variant_ids, "canonical": canonical_ids, "auto": list(AUTO_SOURCES)}
    )
    conn.execute("delete from tags where id = any(%(ids)s)", {"ids": variant_ids})
    with conn.cursor() as cur:
        cur.executemany(ADD_ALIASES, [{"id": by_name[c], "names": names} for c, names in merged.items()])
    return dict(merged)


def stored_embeddings(conn: psycopg.Connection[Any], tags: list[str], dim: int = 64) -> np.ndarray | None:
    """Stored tag vectors as rows aligned to `tags` (zeros where missing), or None when there are none."""
    rows = conn.execute(STORED_EMBEDDINGS).fetchall()
    if not rows:
        return None
    index = {t: i for i, t in enumerate(tags)}
    out = np.zeros((len(tags), dim))
    for r in rows:
        i = index.get(r["name"])
        if i is not None:
            out[i] = np.asarray(r["embedding"], dtype=np.float64)
    return out


def sync_vocabulary(conn: psycopg.Connection[Any]) -> VocabSync:
    """Merge stored spelling variants, then (re)write families and genres; see the module docstring."""
    rows = conn.execute(TAG_COUNTS).fetchall()
    vocab = build_vocabulary([(r["name"], float(r["n"])) for r in rows], min_count=0.0)
    merged = _merge_variants(conn, rows, vocab)
    if merged:
        rows = conn.execute(TAG_COUNTS).fetchall()
        vocab = build_vocabulary([(r["name"], float(r["n"])) for r in rows], min_count=0.0)
    ids = {r["name"]: int(r["id"]) for r in rows if r["name"] in vocab.index}
    taxonomy = build_taxonomy(vocab, stored_embeddings(conn, vocab.tags))
    names = list(ids)
    cur = conn.execute(
        SET_TAXONOMY,
        {
            "ids": [ids[n] for n in names],
            "families": [taxonomy.level(n, "broad") for n in names],
            "genres": [taxonomy.level(n, "genre") for n in names],
        },
    )
    return VocabSync(vocab, taxonomy, ids, merged, families_set=max(cur.rowcount, 0))


@dataclass(frozen=True)
class VocabRow:
    name: str
    tags: int  # vocabulary tags under this name (1 at microgenre level)
    item_count: int  # items with a confident tag under it (a sum of tag counts above microgenre)
    family: str | None
    genre: str | None
    aliases: list[str]


def vocabulary_rows(conn: psycopg.Connection[Any], level: Level = "microgenre") -> list[VocabRow]:
    """Stored tags, most used first; at `genre` or `broad` level their sums per parent."""
    rows = conn.execute(VOCAB_ROWS).fetchall()
    if level == "microgenre":
        return [
            VocabRow(r["name"], 1, int(r["item_count"]), r["family"], r["genre"], list(r["aliases"]))
            for r in rows
        ]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = (r["genre"] or r["name"]) if level == "genre" else (r["family"] or "other")
        groups[key].append(r)
    out = [
        VocabRow(
            name,
            len(members),
            sum(int(m["item_count"]) for m in members),
            members[0]["family"] if level == "genre" else name,
            name if level == "genre" else None,
            [],
        )
        for name, members in groups.items()
    ]
    return sorted(out, key=lambda v: (-v.item_count, v.name))


FIND_TAG = """
    select id, name from tags where name = any(%(names)s) or aliases && %(names)s
    order by name = any(%(names)s) desc, item_count desc, name limit 1
"""


def find_tag(conn: psycopg.Connection[Any], raw: str) -> tuple[int, str] | None:
    """The stored tag a user means by `raw`: its name, a merged alias, or any spelling variant."""
    names = sorted({raw, raw.strip().lower(), stored_name(raw)} - {""})
    row = conn.execute(FIND_TAG, {"names": names}).fetchone()
    if row is not None:
        return int(row["id"]), str(row["name"])
    key = tag_key(raw)
    for r in conn.execute("select id, name from tags order by item_count desc, name"):
        if key and tag_key(r["name"]) == key:
            return int(r["id"]), str(r["name"])
    return None
