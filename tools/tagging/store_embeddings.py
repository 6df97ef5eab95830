"""Tag embeddings in pgvector: trained from the store, searched with the HNSW cosine index.

- `tag_cooccurrence(conn, tags)`: tag × tag counts from two sources, rows/columns in `tags` order:
  items (tags with confidence ≥ 0.5 on the same item) plus `user_weight` × users' histories
  (two tags co-occur for a user when each is on ≥ 2 of the items the user consumed; a user
  contributes their `per_user` most frequent tags, which bounds the cost on large catalogues);
  also returns each tag's item count.
- `train_and_store(conn, rng)`: PPMI + SVD (`tag_embeddings`, `DIM` = 64, the column's size) over
  that co-occurrence; replaces the stored vectors; tags on fewer than `min_count` (5) items have
  none. The defaults (item tag sets only, `user_weight` 0, `MIN_ITEMS` 5) are how
  bench/tagging.py learns the README's neighbour table. With tags on 2 items and half-weighted
  users' histories, Last.fm's shoegaze had newgazer, sfx and ghostrock (2 items each) for
  neighbours and 80s had reversed-guitar; users' histories alone also pull broad tags closer
  (80s → british, uk, classic-rock instead of 1982, new wave, techno pop).
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
MIN_ITEMS = 5  # a tag on fewer items gets no vector: its neighbours are one or two items' labels

ITEM_TAG_ROWS = "select item_id, tag_id from item_tags where confidence >= 0.5"
CONSUMED_PAIRS = """
    select distinct user_id, item_id from events where item_id is not null and type = any(%(types)s)
"""
RELATED = """
    select t.name, 1 - (e.embedding <=> %(q)s) as similarity
    from tag_embeddings e join tags t on t.id = e.tag_id
    where e.tag_id <> %(id)s
    order by e.embedding <=> %(q)s
    limit %(k)s
"""


def _user_tags(counts: sp.csr_matrix, per_user: int) -> sp.csr_matrix:
    """Binary user × tag: each user's `per_user` most frequent tags among those on ≥ 2 of their items."""
    rows, cols = [], []
    for u in range(counts.shape[0]):
        lo, hi = counts.indptr[u], counts.indptr[u + 1]
        idx, n = counts.indices[lo:hi], counts.data[lo:hi]
        keep = np.flatnonzero(n >= 2)
        keep = keep[np.argsort(-n[keep], kind="stable")[:per_user]]
        rows.extend([u] * keep.size)
        cols.extend(idx[keep].tolist())
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=counts.shape)


def tag_cooccurrence(
    conn: psycopg.Connection[Any], tag_ids: list[int], *, user_weight: float = 0.0, per_user: int = 50
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Item plus weighted user-history co-occurrence of the tags `tag_ids` (module docstring), and
    each tag's item count."""
    tag_ix = {t: j for j, t in enumerate(tag_ids)}
    item_ix: dict[str, int] = {}
    r, c = [], []
    for row in conn.execute(ITEM_TAG_ROWS):
        j = tag_ix.get(int(row["tag_id"]))
        if j is not None:
            r.append(item_ix.setdefault(row["item_id"], len(item_ix)))
            c.append(j)
    items = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(item_ix), len(tag_ix)))
    items.data[:] = 1.0
    cooc = sp.csr_matrix(items.T @ items)
    item_counts = np.asarray(cooc.diagonal()).ravel()
    if user_weight > 0:
        user_ix: dict[str, int] = {}
        ur, uc = [], []
        for row in conn.execute(CONSUMED_PAIRS, {"types": list(CONSUMED)}):
            i = item_ix.get(row["item_id"])
            if i is not None:
                ur.append(user_ix.setdefault(row["user_id"], len(user_ix)))
                uc.append(i)
        consumed = sp.csr_matrix((np.ones(len(ur)), (ur, uc)), shape=(len(user_ix), len(item_ix)))
        users = _user_tags(sp.csr_matrix(consumed @ items), per_user)
        cooc = sp.csr_matrix(cooc + user_weight * (users.T @ users))
    return cooc, item_counts


@dataclass(frozen=True)
class EmbedReport:
    tags: int  # vocabulary size
    embedded: int  # tags with a stored (non-zero) vector
    dim: int


def train_and_store(
    conn: psycopg.Connection[Any],
    rng: np.random.Generator,
    *,
    user_weight: float = 0.0,
    min_count: int = MIN_ITEMS,
) -> EmbedReport:
    """Learn PPMI + SVD vectors for every stored tag and replace the `tag_embeddings` rows."""
    tag_ids = [int(r["id"]) for r in conn.execute("select id from tags order by id")]
    conn.execute("delete from tag_embeddings")
    if not tag_ids:
        return EmbedReport(0, 0, DIM)
    cooc, item_counts = tag_cooccurrence(conn, tag_ids, user_weight=user_weight)
    rare = item_counts < min_count  # counted on items, whatever users' histories add
    cooc = sp.csr_matrix(sp.diags((~rare).astype(np.float64)) @ cooc @ sp.diags((~rare).astype(np.float64)))
    emb = tag_embeddings(cooc, DIM, rng, min_count=max(1, min_count))
    keep = np.flatnonzero(np.linalg.norm(emb, axis=1) > 0)
    with conn.cursor() as cur, cur.copy("copy tag_embeddings (tag_id, embedding) from stdin") as copy:
        for j in keep:
            copy.write_row((tag_ids[j], Vector(emb[j]).to_text()))
    conn.execute("update tag_embeddings set trained_at = clock_timestamp()")  # later than taxonomy_at
    return EmbedReport(len(tag_ids), int(keep.size), DIM)


def related(conn: psycopg.Connection[Any], tag_id: int, k: int = 10) -> list[tuple[str, float]] | None:
    """(tag, cosine) of the k nearest tags, best first; None when `tag_id` has no stored vector."""
    row = conn.execute(
        "select embedding from tag_embeddings where tag_id = %(id)s", {"id": tag_id}
    ).fetchone()
    if row is None:
        return None
    with conn.transaction():  # the HNSW scan looks past its default 40 candidates for a larger k
        conn.execute(
            "select set_config('hnsw.iterative_scan', 'strict_order', true),"
            " set_config('hnsw.ef_search', %(ef)s, true)",
            {"ef": str(min(max(k + 1, 40), 1000))},
        )
        rows = conn.execute(RELATED, {"q": row["embedding"], "id": tag_id, "k": k}).fetchall()
    return [(r["name"], round(float(r["similarity"]), 4)) for r in rows]
