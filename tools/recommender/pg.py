"""The recommender's tables in Postgres (migration 0030): models, item vectors, HNSW retrieval.

- `rec_models`: one row per trained model with its dimension and the model.json/model.npz pair of
  tools/recommender/store.py (so every process serves the same fold-in parameters); one is active.
- `item_vectors(model_id, item_id, vec vector)`: dimensions differ per model, so each model has a
  partial expression HNSW index `((vec::vector(D))) vector_ip_ops where model_id = ID`, built after
  the bulk COPY (faster than inserting into a live index) and before the model becomes active.
- Retrieval is one statement: `order by vec::vector(D) <#> user_vec limit k` (pgvector's `<#>` is
  the negative inner product, so the best score comes first), excluding the user's seen items and
  message templates (items of kind `message`, which are copy, not content); the
  batch form runs it per user inside a LATERAL join, like tools/retrieval.py.
The typmod D and the model id of the partial index predicate are composed into the SQL as literals
(`psycopg.sql.Literal`, integers from our own table) — an index on an expression is only used when
the query repeats the expression, and a partial one when the predicate is visible to the planner.
Users' stored vectors are written by tools/recommender/user_vectors.py. Functions take a connection
and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

KEEP_MODELS = 2  # the active model and the one before it; older ones are dropped after a training


@dataclass(frozen=True)
class ModelRow:
    id: int
    dim: int
    status: str
    stats: dict[str, Any]
    trained_at: datetime | None = None


@dataclass(frozen=True)
class Hit:
    item_id: str
    title: str
    provider_id: str | None
    provider: str | None
    score: float
    cold: bool
    created_at: datetime | None = None  # `top_k` only: what the reasons need, read with the hit
    tags: tuple[str, ...] = ()  # `top_k` only, cold items only: confident tags, heaviest first
    kind: str | None = None  # `top_k` only: the words of its reason (tools/wording.py)


def create_model(
    conn: psycopg.Connection[Any], dim: int, params: dict[str, Any], stats: dict[str, Any]
) -> int:
    row = conn.execute(
        """insert into rec_models (dim, params, stats) values (%(dim)s, %(params)s, %(stats)s)
           returning id""",
        {"dim": dim, "params": Jsonb(params), "stats": Jsonb(stats)},
    ).fetchone()
    assert row is not None
    model_id = int(row["id"])
    # an index left behind under this id (identity restarted by a truncate or restore) would
    # reject vectors of another dimension
    conn.execute(sql.SQL("drop index if exists {}").format(_index_name(model_id)))
    return model_id


def store_files(conn: psycopg.Connection[Any], model_id: int, meta: bytes, arrays: bytes) -> None:
    conn.execute(
        "update rec_models set meta = %(meta)s, arrays = %(arrays)s where id = %(id)s",
        {"meta": meta, "arrays": arrays, "id": model_id},
    )


def update_stats(conn: psycopg.Connection[Any], model_id: int, stats: dict[str, Any]) -> None:
    conn.execute(
        "update rec_models set stats = stats || %(stats)s where id = %(id)s",
        {"stats": Jsonb(stats), "id": model_id},
    )


def load_files(conn: psycopg.Connection[Any], model_id: int) -> tuple[bytes, bytes]:
    row = conn.execute("select meta, arrays from rec_models where id = %(id)s", {"id": model_id}).fetchone()
    if row is None or row["meta"] is None or row["arrays"] is None:
        raise LookupError(f"model {model_id} has no stored parameters")
    return bytes(row["meta"]), bytes(row["arrays"])


def copy_item_vectors(
    conn: psycopg.Connection[Any],
    model_id: int,
    item_ids: Sequence[str],
    vecs: np.ndarray,
    *,
    cold: bool = False,
) -> int:
    """Bulk-load vectors (binary COPY); rows already present for (model, item) are replaced."""
    if not len(item_ids):
        return 0
    conn.execute(
        "delete from item_vectors where model_id = %(m)s and item_id = any(%(ids)s)",
        {"m": model_id, "ids": list(item_ids)},
    )
    with (
        conn.cursor() as cur,
        cur.copy("copy item_vectors (model_id, item_id, vec, cold) from stdin with (format binary)") as copy,
    ):
        copy.set_types(["int8", "text", "vector", "bool"])
        for item_id, vec in zip(item_ids, np.asarray(vecs, dtype=np.float32), strict=True):
            copy.write_row((model_id, str(item_id), vec, cold))
    return len(item_ids)


_INSERT_ITEM_VECTORS = """
insert into item_vectors (model_id, item_id, vec, cold)
select %(m)s, s.item_id, s.vec, %(cold)s from unnest(%(ids)s::text[], %(vecs)b::vector[]) as s(item_id, vec)
on conflict (model_id, item_id) do update set vec = excluded.vec, stale = false where item_vectors.stale
returning item_id
"""


def insert_item_vectors(
    conn: psycopg.Connection[Any],
    model_id: int,
    item_ids: Sequence[str],
    vecs: np.ndarray,
    *,
    cold: bool = False,
) -> int:
    """Add vectors for a few items in one statement (works in pipeline mode, unlike COPY); items
    that already have one for the model (placed meanwhile by another process) keep it, unless it
    is stale (its tags changed since: migration 0077). Returns the number written."""
    if not len(item_ids):
        return 0
    params = {
        "m": model_id,
        "ids": [str(i) for i in item_ids],
        "vecs": list(np.asarray(vecs, dtype=np.float32)),
        "cold": cold,
    }
    return len(conn.execute(_INSERT_ITEM_VECTORS, params).fetchall())


def _index_name(model_id: int) -> sql.Identifier:
    return sql.Identifier(f"item_vectors_hnsw_m{int(model_id)}")


def build_index(conn: psycopg.Connection[Any], model_id: int, dim: int) -> None:
    """The model's partial HNSW index over `vec::vector(dim)` (inner product)."""
    conn.execute(
        sql.SQL(
            "create index if not exists {name} on item_vectors using hnsw "
            "((vec::vector({dim})) vector_ip_ops) where model_id = {model}"
        ).format(name=_index_name(model_id), dim=sql.Literal(int(dim)), model=sql.Literal(int(model_id)))
    )
    conn.execute("analyze item_vectors")


def activate(conn: psycopg.Connection[Any], model_id: int) -> None:
    """Make `model_id` the served model and retire the previous one, in the caller's transaction (a
    reader sees the old model or the new one, never neither). Nothing is dropped here: see
    `drop_model`."""
    conn.execute(
        "update rec_models set status = 'retired' where status = 'active' and id <> %(id)s", {"id": model_id}
    )
    conn.execute(
        "update rec_models set status = 'active', activated_at = now() where id = %(id)s", {"id": model_id}
    )


def obsolete_models(conn: psycopg.Connection[Any]) -> list[int]:
    """The retired models beyond the `KEEP_MODELS - 1` newest, newest first."""
    rows = conn.execute(
        "select id from rec_models where status <> 'active' order by id desc offset %(keep)s",
        {"keep": KEEP_MODELS - 1},
    )
    return [int(r["id"]) for r in rows]


def drop_model(conn: psycopg.Connection[Any], model_id: int) -> bool:
    """Delete a model that is not active (its item and user vectors go with it) and drop its HNSW
    index; False when it is active or already gone. Dropping an index locks all of item_vectors until
    the transaction ends: run it in a short transaction of its own, after the switch to the new model
    committed (train.drop_retired)."""
    row = conn.execute(
        "delete from rec_models where id = %(id)s and status <> 'active' returning id", {"id": model_id}
    ).fetchone()
    if row is None:
        return False
    conn.execute(sql.SQL("drop index if exists {}").format(_index_name(model_id)))
    return True


def active_model(conn: psycopg.Connection[Any]) -> ModelRow | None:
    row = conn.execute(
        "select id, dim, status, stats, trained_at from rec_models where status = 'active'"
    ).fetchone()
    if row is None:
        return None
    return ModelRow(int(row["id"]), int(row["dim"]), row["status"], row["stats"], row["trained_at"])


def items_without_vectors(conn: psycopg.Connection[Any], model_id: int) -> dict[str, dict[str, float]]:
    """Items added after the model was trained, and cold items whose tags changed since they were
    placed (stale), with their confident tags {name: weight}."""
    rows = conn.execute(
        """select i.id, t.name, it.weight
           from items i
           left join item_tags it on it.item_id = i.id and it.confidence >= 0.5
           left join tags t on t.id = it.tag_id
           where not exists (select 1 from item_vectors v where v.model_id = %(m)s and v.item_id = i.id)
              or i.id in (select v.item_id from item_vectors v where v.model_id = %(m)s and v.stale)""",
        {"m": model_id},
    ).fetchall()
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        tags = out.setdefault(r["id"], {})
        if r["name"] is not None:
            tags[r["name"]] = float(r["weight"])
    return out


_TOP_K = """
select v.item_id, i.title, i.provider_id, p.name as provider, v.cold, i.created_at, i.kind,
       -((v.vec::vector({dim})) <#> %(q)b::vector({dim})) as score,
       case when v.cold then array(select t.name from item_tags it join tags t on t.id = it.tag_id
             where it.item_id = v.item_id and it.confidence >= 0.5 order by it.weight desc) end as tags
from item_vectors v
join items i on i.id = v.item_id
left join providers p on p.id = i.provider_id
where v.model_id = {model} and v.item_id <> all(%(seen)s::text[]) and i.kind <> 'message'
order by (v.vec::vector({dim})) <#> %(q)b::vector({dim})
limit %(k)s
"""

# A stored vector is fresh when it folds in the user's last event and current declared interests.
# `max(e.seq + 0)`, here and wherever a user's last event is read: a plain max(seq) may be answered by
# walking the primary key backwards, filtered on the user, which PostgreSQL picks when `events` has
# no statistics yet (right after a bulk import) and which reads most of the table per user when a
# user's events are stored together (tests/recommender/test_plans_without_stats.py).
_FRESH = """r.user_id = {user} and r.model_id = {model}
  and r.event_seq = coalesce((select max(e.seq + 0) from events e where e.user_id = {user}), 0)
  and coalesce(r.interests, 'null') = (select coalesce(s.attributes -> 'interests', 'null')
                                       from users s where s.id = {user})"""


def fresh_vector(user: sql.Composable, model_id: int) -> sql.Composed:
    """The condition on `rec_user_vectors r` that the row of `user` (a column or placeholder) is fresh."""
    return sql.SQL(_FRESH).format(user=user, model=sql.Literal(model_id))


# The user's stored vector (rec_user_vectors, migration 0075) is read inside the statement; it is used
# only when it belongs to this model, the model is still active, no event of the user came after the
# one it folded in and the declared interests are those it folded in. The model is also matched by
# its training time: ids repeat after a restore, and a cached model of another dimension must not
# run. Otherwise `u` is empty and so is the result (the caller folds the user in and stores the row).
_TOP_K_STORED = """
with u as materialized (
    select r.vec from rec_user_vectors r
    where {fresh}
      and exists (select 1 from rec_models m
                  where m.id = {model} and m.status = 'active' and m.trained_at = %(trained_at)s)
)
select v.item_id, i.title, i.provider_id, p.name as provider, v.cold, i.created_at, i.kind,
       -((v.vec::vector({dim})) <#> (select u.vec from u)::vector({dim})) as score,
       case when v.cold then array(select t.name from item_tags it join tags t on t.id = it.tag_id
             where it.item_id = v.item_id and it.confidence >= 0.5 order by it.weight desc) end as tags
from item_vectors v
join items i on i.id = v.item_id
left join providers p on p.id = i.provider_id
where v.model_id = {model} and exists (select 1 from u)
  and not exists (select 1 from events e where e.user_id = %(user)s and e.item_id = v.item_id)
  and i.kind <> 'message'
order by (v.vec::vector({dim})) <#> (select u.vec from u)::vector({dim})
limit %(k)s
"""


def _compose(template: str, model: ModelRow) -> sql.Composed:
    return sql.SQL(template).format(dim=sql.Literal(model.dim), model=sql.Literal(model.id))


def _scan_settings(conn: psycopg.Connection[Any], ef_search: int) -> None:
    conn.execute(
        "select set_config('hnsw.iterative_scan', 'relaxed_order', true),"
        " set_config('hnsw.ef_search', %(ef)s, true)",
        {"ef": str(int(ef_search))},
    )


def top_k(
    conn: psycopg.Connection[Any],
    model: ModelRow,
    vec: np.ndarray,
    seen: Sequence[str],
    k: int,
    *,
    ef_search: int = 64,
) -> list[Hit]:
    """Best `k` items for one user vector, skipping `seen` item ids (HNSW, approximate).

    The hits carry their creation time and confident tags (the reasons' facts, projected for the
    k rows only). One round trip on the fast path: the query runs with the connection's own HNSW
    settings (pgvector's default ef_search = 40), taken when the seen items cannot crowd out k of
    the 40 candidates. Otherwise, or when the index scan ran dry before `k` unseen items, it runs
    with an iterative scan and `ef_search` set for the transaction, which always fills the k
    slots; pipelined, so that is one round trip too."""
    params = {"q": np.asarray(vec, dtype=np.float32), "seen": list(seen), "k": k}
    # the plain scan returns ef_search = 40 candidates: enough whenever seen items cannot crowd out k
    rows = conn.execute(_compose(_TOP_K, model), params).fetchall() if len(seen) + k <= 40 else []
    if len(rows) < k:
        with conn.pipeline(), conn.transaction():  # settings, query and commit in one round trip
            _scan_settings(conn, max(ef_search, k))
            cur = conn.execute(_compose(_TOP_K, model), params)
        rows = cur.fetchall()
    return _hits(rows)


def _hits(rows: Sequence[Any]) -> list[Hit]:
    hits = [
        Hit(
            r["item_id"],
            r["title"],
            r["provider_id"],
            r["provider"],
            float(r["score"]),
            r["cold"],
            r["created_at"],
            tuple(r["tags"] or ()),
            r["kind"],
        )
        for r in rows
    ]
    return sorted(hits, key=lambda h: -h.score)  # relaxed_order may swap near-ties


def top_k_stored_query(model: ModelRow) -> sql.Composed:
    """The one-statement top-k from the user's stored vector; see `top_k_stored` and `stored_params`."""
    fresh = fresh_vector(sql.Placeholder("user"), model.id)
    return sql.SQL(_TOP_K_STORED).format(dim=sql.Literal(model.dim), model=sql.Literal(model.id), fresh=fresh)


def stored_params(model: ModelRow, user_id: str, k: int) -> dict[str, Any]:
    return {"user": user_id, "k": k, "trained_at": model.trained_at}


def top_k_stored(
    conn: psycopg.Connection[Any], model: ModelRow, user_id: str, k: int, *, ef_search: int = 64
) -> list[Hit]:
    """Best `k` unseen items for a user from their stored vector (`rec_user_vectors`), in one round
    trip: the iterative-scan settings, the statement and the commit pipelined. Empty when the stored
    vector is missing or stale (or nothing is left to recommend): fold the user in and use `top_k`."""
    with conn.pipeline(), conn.transaction():
        _scan_settings(conn, max(ef_search, k))
        cur = conn.execute(top_k_stored_query(model), stored_params(model, user_id, k))
    return _hits(cur.fetchall())
