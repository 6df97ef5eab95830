"""The tag vocabulary and taxonomy kept in the store (tables `tags`, `item_tags`).

`sync_vocabulary(conn)` makes the stored tags agree with the tagging rules (keys are never
stored: a change of `tag_key` takes effect at the next sync, which merges tags whose keys now meet
and drops aliases whose key no longer is their tag's):
1. builds a `Vocabulary` from every stored tag name and its item count (`build_vocabulary`:
   spelling variants share a `tag_key`; the most used surface form is canonical);
2. merges every other stored tag of a key into its canonical tag: everything keyed by the variant's
   id moves over (item rows and vectors, profiles, embeddings: `store_merge.merge_tag_ids`), the
   variant row is deleted and its name kept in the canonical tag's `aliases`, which imports and
   PUTs of that spelling then resolve to the canonical tag (`catalogue.ensure_tags`);
3. writes each tag's broad `family` and `genre` from `build_taxonomy`, using the stored tag
   embeddings when there are any (rule-less tags then take their neighbours' family), when the
   stored taxonomy is stale: a tag never classified, a merge, embeddings trained since, or `refresh`.
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
from pgvector import Vector

from tagloop.tools.tagging.store_merge import AUTO_SOURCES as AUTO_SOURCES  # re-exported
from tagloop.tools.tagging.store_merge import merge_tag_ids
from tagloop.tools.tagging.taxonomy import Level, Taxonomy, build_taxonomy
from tagloop.tools.tagging.vocabulary import Vocabulary, build_vocabulary, tag_key
from tagloop.tools.tagging_names import normalize_tag as stored_name

EMBEDDED_TAXONOMY = 2000

TAG_COUNTS = """
    select t.id, t.name, t.aliases, t.family, t.genre, count(it.item_id) as n
    from tags t left join item_tags it on it.tag_id = t.id
    group by t.id order by t.id
"""

ADD_ALIASES = """
    update tags set aliases = array(
        select distinct a from unnest(aliases || %(names)s::text[]) as a where a <> name order by a)
    where id = %(id)s
"""

SET_TAXONOMY = """
    with upd as (
        update tags t set family = u.family, genre = u.genre, taxonomy_at = clock_timestamp()
        from unnest(%(ids)s::int[], %(families)s::text[], %(genres)s::text[]) as u(id, family, genre),
             tags old
        where t.id = u.id and old.id = u.id
        returning old.family is distinct from u.family or old.genre is distinct from u.genre as changed)
    select count(*) filter (where changed) as changed from upd
"""
# stale: a tag never classified, or embeddings trained since the oldest classification
TAXONOMY_STALE = """
    select exists (select 1 from tags where taxonomy_at is null)
        or coalesce((select max(trained_at) from tag_embeddings) > (select min(taxonomy_at) from tags), false)
        as stale
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
    moves: dict[int, int] = {}  # variant id → canonical id
    merged: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        canonical = vocab.aliases.get(tag_key(r["name"]))
        if canonical is None or canonical == r["name"] or canonical not in by_name:
            continue
        moves[int(r["id"])] = by_name[canonical]
        merged[canonical].extend([r["name"], *r["aliases"]])
    if not moves:
        return {}
    merge_tag_ids(conn, moves)  # item rows and vectors, profiles, embeddings, counts
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
            vec = r["embedding"]
            out[i] = np.asarray(vec.to_numpy() if isinstance(vec, Vector) else vec, dtype=np.float64)
    return out


def _taxonomy(vocab: Vocabulary, emb: np.ndarray | None) -> Taxonomy:
    """Rules for every tag; for the `EMBEDDED_TAXONOMY` most used tags with a vector, embeddings too
    (bounded so the dense tag × tag similarity `build_taxonomy` computes stays small)."""
    taxonomy = build_taxonomy(vocab)
    if emb is None:
        return taxonomy
    rows = [i for i in range(len(vocab.tags)) if np.any(emb[i])][:EMBEDDED_TAXONOMY]
    names = [vocab.tags[i] for i in rows]
    chosen = set(names)
    sub = Vocabulary(
        names, {t: vocab.counts[t] for t in names}, {k: t for k, t in vocab.aliases.items() if t in chosen}
    )
    learned = build_taxonomy(sub, emb[rows])
    taxonomy.broad.update(learned.broad)
    taxonomy.genre.update(learned.genre)
    return taxonomy


def _drop_stale_aliases(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
    """Aliases whose merge key is no longer their tag's: merged under an older `tag_key` (which
    read "日本-zeuhl" as "zeuhl"), they would send that spelling to the wrong tag (`ensure_tags`)."""
    stale = []
    for r in rows:
        kept = [a for a in r["aliases"] if tag_key(a) == tag_key(r["name"])]
        if len(kept) < len(r["aliases"]):
            stale.append({"id": r["id"], "aliases": kept})
            r["aliases"] = kept
    if stale:
        with conn.cursor() as cur:
            cur.executemany("update tags set aliases = %(aliases)s where id = %(id)s", stale)


VOCAB_LOCK = {"ns": 0x74676C, "key": 0x766F63}  # advisory lock keys: tagloop, "voc"
_UNCLASSIFIED = "select exists (select 1 from tags where taxonomy_at is null) as new"


def sync_vocabulary(conn: psycopg.Connection[Any], *, refresh: bool = False) -> VocabSync:
    """Merge stored spelling variants, then (re)write families and genres when stale (module docstring).
    One sync at a time (a transaction-level advisory lock): an import's and a worker's would merge
    the same variants."""
    conn.execute("select pg_advisory_xact_lock(%(ns)s, %(key)s)", VOCAB_LOCK)
    rows = conn.execute(TAG_COUNTS).fetchall()
    _drop_stale_aliases(conn, rows)
    vocab = build_vocabulary([(r["name"], float(r["n"])) for r in rows], min_count=0.0)
    merged = _merge_variants(conn, rows, vocab)
    if merged:
        rows = conn.execute(TAG_COUNTS).fetchall()
        vocab = build_vocabulary([(r["name"], float(r["n"])) for r in rows], min_count=0.0)
    ids = {r["name"]: int(r["id"]) for r in rows if r["name"] in vocab.index}
    stale = conn.execute(TAXONOMY_STALE).fetchone()
    if not (refresh or merged or (stale and stale["stale"])):
        kept = Taxonomy(
            broad={r["name"]: r["family"] for r in rows}, genre={r["name"]: r["genre"] for r in rows}
        )
        return VocabSync(vocab, kept, ids, merged)
    taxonomy = _taxonomy(vocab, stored_embeddings(conn, vocab.tags))
    names = list(ids)
    cur = conn.execute(
        SET_TAXONOMY,
        {
            "ids": [ids[n] for n in names],
            "families": [taxonomy.level(n, "broad") for n in names],
            "genres": [taxonomy.level(n, "genre") for n in names],
        },
    )
    changed = cur.fetchone()
    return VocabSync(vocab, taxonomy, ids, merged, families_set=int(changed["changed"]) if changed else 0)


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


def sync_new_tags(conn: psycopg.Connection[Any]) -> VocabSync | None:
    """`sync_vocabulary` when tags were created since the last sync (never classified) and no other
    session is syncing, in a transaction of its own; None when it did not run. The worker calls it
    when it renews its run facts, so tags written by `PUT`/`POST /v1/items` (which, unlike imports,
    do not sync) have their spelling variants merged and their family set within minutes."""
    row = conn.execute(_UNCLASSIFIED).fetchone()
    if not (row and row["new"]):
        return None
    with conn.transaction():
        got = conn.execute("select pg_try_advisory_xact_lock(%(ns)s, %(key)s) as ok", VOCAB_LOCK).fetchone()
        return sync_vocabulary(conn) if got and got["ok"] else None
