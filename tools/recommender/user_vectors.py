"""Users' vectors under a model, as training and serving store them: `rec_user_vectors` (the vector
with what it folds in — the user's last event, declared interests, history in the model's item
indices, providers — so a fresh vector is served without reading events again; migrations
0075/0076) and `user_profiles.embedding`. Functions take a connection and never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

_UPSERT_USER_VECTOR = """
insert into rec_user_vectors
    (user_id, model_id, event_seq, interests, vec, hist_items, hist_weights, providers, folded_interests)
select {source}
on conflict (user_id) do update set model_id = excluded.model_id, event_seq = excluded.event_seq,
    interests = excluded.interests, vec = excluded.vec, hist_items = excluded.hist_items,
    hist_weights = excluded.hist_weights, providers = excluded.providers,
    folded_interests = excluded.folded_interests, updated_at = now()
"""


@dataclass(frozen=True)
class StoredUser:
    """A user's row of `rec_user_vectors`: the vector and what it folds in (see migration 0075/0076)."""

    user_id: str
    vec: np.ndarray
    event_seq: int  # the user's last event folded in (events.seq), 0 for none
    interests: Any  # the raw `users.attributes -> 'interests'` JSON folded in, None when absent
    hist_items: np.ndarray  # the history in the model's item indices ...
    hist_weights: np.ndarray  # ... with raw weights (what the reasons need)
    providers: Sequence[str]  # providers the user plays
    folded_interests: Mapping[str, float] | None = None  # tag → weight when more than the declared


def write_user_vectors(conn: psycopg.Connection[Any], model_id: int, users: Sequence[StoredUser]) -> int:
    """Store users' vectors under `model_id` with what they fold in; replaces the users' rows; unknown
    users are skipped. One user: one upsert; more: binary COPY into a temporary table, then one upsert."""
    if len(users) == 1:
        u = users[0]
        source = (
            "u.id, %(m)s, %(seq)s, %(interests)s, %(vec)b::vector, %(items)s::int[], %(weights)s::float8[],"
            " %(providers)s::text[], %(folded)s from users u where u.id = %(user)s"
        )
        params = {
            "m": model_id,
            "seq": int(u.event_seq),
            "interests": _json(u.interests),
            "vec": np.asarray(u.vec, dtype=np.float32),
            "items": [int(i) for i in u.hist_items],
            "weights": [float(w) for w in u.hist_weights],
            "providers": list(u.providers),
            "folded": _json(u.folded_interests),
            "user": str(u.user_id),
        }
        conn.execute(sql.SQL(_UPSERT_USER_VECTOR).format(source=sql.SQL(source)), params)
        return 1
    if not users:
        return 0
    with conn.transaction():
        conn.execute(
            "create temporary table if not exists rec_user_vectors_in (user_id text, event_seq bigint,"
            " interests jsonb, vec vector, hist_items int[], hist_weights float8[], providers text[],"
            " folded_interests jsonb)"
            " on commit drop"
        )
        conn.execute("truncate rec_user_vectors_in")
        with (
            conn.cursor() as cur,
            cur.copy("copy rec_user_vectors_in from stdin with (format binary)") as copy,
        ):
            copy.set_types(["text", "int8", "jsonb", "vector", "int4[]", "float8[]", "text[]", "jsonb"])
            for u in users:
                copy.write_row(
                    (
                        str(u.user_id),
                        int(u.event_seq),
                        _json(u.interests),
                        np.asarray(u.vec, dtype=np.float32),
                        [int(i) for i in u.hist_items],
                        [float(w) for w in u.hist_weights],
                        list(u.providers),
                        _json(u.folded_interests),
                    )
                )
        source = (
            "s.user_id, %(m)s, s.event_seq, s.interests, s.vec, s.hist_items, s.hist_weights, s.providers,"
            " s.folded_interests"
            " from rec_user_vectors_in s where exists (select 1 from users u where u.id = s.user_id)"
        )
        conn.execute(sql.SQL(_UPSERT_USER_VECTOR).format(source=sql.SQL(source)), {"m": model_id})
    return len(users)


STORED_HISTORY = """
select hist_items, hist_weights, providers, interests, folded_interests from rec_user_vectors
where user_id = %(user)s and model_id = %(model)s
"""


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


_UPSERT_EMBEDDINGS = """
insert into user_profiles (user_id, embedding)
select s.user_id, s.vec from unnest(%(users)s::text[], %(vecs)b::vector[]) as s(user_id, vec)
where exists (select 1 from users u where u.id = s.user_id)
on conflict (user_id) do update set embedding = excluded.embedding
"""


def write_user_embeddings(
    conn: psycopg.Connection[Any], user_ids: Sequence[str], vecs: np.ndarray, *, chunk: int = 2000
) -> int:
    """Store users' current vectors in `user_profiles.embedding` (the row is created if missing)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    for start in range(0, len(user_ids), chunk):
        conn.execute(
            _UPSERT_EMBEDDINGS,
            {
                "users": list(user_ids[start : start + chunk]),
                "vecs": list(vecs[start : start + chunk]),  # binary: text costs ~0.25 ms a vector
            },
        )
    return len(user_ids)
