"""Tag embeddings in pgvector: trained from the store, searched with the HNSW cosine index.

- `tag_cooccurrence(conn, tags)`: tag × tag counts from two sources, rows/columns in `tags` order:
  items (tags with confidence ≥ 0.5 on the same item) plus `user_weight` × users' histories
  (two tags co-occur for a user when each is on ≥ 2 of the items the user consumed; a user
  contributes their `per_user` most frequent tags, which bounds the cost on large catalogues).
- `train_and_store(conn, rng)`: PPMI + SVD (`tag_embeddings`, `DIM` = 64, the column's size) over
  that co-occurrence; replaces the stored vectors (tags seen on fewer than `min_count` items or
  users have none).
- `related(conn, tag_id, k)`: the k nearest stored tags by cosine, best first, via the index.
Functions take a connection and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import scipy.sparse as sp
from pgvector import Vector
from tagloop.tools.tagging.embeddings import tag_embeddings
from tagloop.tools.tagging.store_autotag import CONSUMED

DIM = 64

ITEM_TAG_ROWS = """
    select it.item_id, it.tag_id from item_tags it where it.confidence >= 0.5
"""
USER_TAG_COUNTS = """
    with consumed as (select distinct user_id, item_id from events
                      where item_id is not null and type = any(%(types)s))
    select c.user_id, it.tag_id, count(*) as n
    from consumed c join item_tags it on it.item_id = c.item_id and it.confidence >= 0.5
    group by c.user_id, it.tag_id having count(*) >= 2
"""
RELATED = """
    select t.name, 1 - (e.embedding <=> %(q)s) as similarity
    from tag_embeddings e join tags t on t.id = e.tag_id
    where e.tag_id <> %(id)s
    order by e.embedding <=> %(q)s
    limit %(k)s
"""


def _binary(rows: list[tuple[Any, int]], index: dict[int, int]) -> sp.csr_matrix:
    owners: dict[Any, int] = {}
    r, c = [], []
    for owner, tag_id in rows:
        j = index.get(tag_id)
        if j is not None:
            r.append(owners.setdefault(owner, len(owners)))
            c.append(j)
    m = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(owners), len(index)))
    m.data[:] = 1.0  # duplicates summed by the constructor count once
    return m


def tag_cooccurrence(
    conn: psycopg.Connection[Any], tag_ids: list[int], *, user_weight: float = 0.5, per_user: int = 50
) -> sp.csr_matrix:
    """Item plus weighted user-history co-occurrence of the tags `tag_ids` (module docstring)."""
    index = {t: j for j, t in enumerate(tag_ids)}
    items = _binary([(r["item_id"], int(r["tag_id"])) for r in conn.execute(ITEM_TAG_ROWS)], index)
    cooc = sp.csr_matrix(items.T @ items)
    if user_weight > 0:
        best: dict[str, list[tuple[int, int]]] = {}
        for r in conn.execute(USER_TAG_COUNTS, {"types": list(CONSUMED)}):
            best.setdefault(r["user_id"], []).append((int(r["n"]), int(r["tag_id"])))
        rows = [(u, t) for u, pairs in best.items() for _, t in sorted(pairs, reverse=True)[:per_user]]
        users = _binary(rows, index)
        cooc = sp.csr_matrix(cooc + user_weight * (users.T @ users))
    return cooc


@dataclass(frozen=True)
class EmbedReport:
    tags: int  # vocabulary size
    embedded: int  # tags with a stored (non-zero) vector
    dim: int


def train_and_store(
    conn: psycopg.Connection[Any],
    rng: np.random.Generator,
    *,
    user_weight: float = 0.5,
    min_count: float = 2.0,
) -> EmbedReport:
    """Learn PPMI + SVD vectors for every stored tag and replace the `tag_embeddings` rows."""
    tag_ids = [int(r["id"]) for r in conn.execute("select id from tags order by id")]
    conn.execute("delete from tag_embeddings")
    if not tag_ids:
        return EmbedReport(0, 0, DIM)
    emb = tag_embeddings(
        tag_cooccurrence(conn, tag_ids, user_weight=user_weight), DIM, rng, min_count=min_count
    )
    keep = np.flatnonzero(np.linalg.norm(emb, axis=1) > 0)
    with conn.cursor() as cur, cur.copy("copy tag_embeddings (tag_id, embedding) from stdin") as copy:
        for j in keep:
            copy.write_row((tag_ids[j], Vector(emb[j]).to_text()))
    return EmbedReport(len(tag_ids), int(keep.size), DIM)


def related(conn: psycopg.Connection[Any], tag_id: int, k: int = 10) -> list[tuple[str, float]] | None:
    """(tag, cosine) of the k nearest tags, best first; None when `tag_id` has no stored vector."""
    row = conn.execute(
        "select embedding from tag_embeddings where tag_id = %(id)s", {"id": tag_id}
    ).fetchone()
    if row is None:
        return None
    rows = conn.execute(RELATED, {"q": row["embedding"], "id": tag_id, "k": k}).fetchall()
    return [(r["name"], round(float(r["similarity"]), 4)) for r in rows]
