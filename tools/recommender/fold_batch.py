"""Folding a batch of users into the active model for the agent's CF source (source.py).

The agent needs only what the fold-in needs: each user's raw weight per item (as train.py and
serving.histories compute them) and declared interests. One row per user, the history as two
arrays read in binary, costs a fraction of `serving.histories` (a row per item read as a dict, the
provider joined for the reasons): ~0.05 against ~0.4 ms of client time per user on the demo data.
`send` restricts the statement to the users whose stored vector (`rec_user_vectors`) is not fresh,
so the agent can send it ahead with the chunk's search before knowing who is stale.

Plays of items added after training (not in the model) join the user's interests through the
items' tags, as on the HTTP path (`history.add_new_item_interests`: one more read, only for a chunk
where such plays exist), so the agent and serving fold a user into the same vector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from tagloop.tools.recommender import pg
from tagloop.tools.recommender.confidence import RAW_WEIGHT
from tagloop.tools.recommender.history import (
    WEIGHTS_JSON,
    Served,
    add_new_item_interests,
    parse_interests,
)

_INPUTS = f"""
select u.id, u.attributes -> 'interests', coalesce(h.items, array[]::text[]),
       coalesce(h.weights, array[]::float8[])
from users u
cross join lateral (
    select array_agg(w.item_id) as items, array_agg(w.w) as weights from (
        select e.item_id, {RAW_WEIGHT} as w from events e
        where e.user_id = u.id and e.item_id is not null
        group by e.item_id
    ) w
) h
where u.id = any(%(users)s) {{stale}}
"""
_STALE = "and not exists (select 1 from rec_user_vectors r where {fresh})"


def send(
    conn: psycopg.Connection[Any], served: Served, user_ids: list[str], *, stale_only: bool
) -> psycopg.Cursor[Any]:
    """Send the statement for `user_ids` (with `stale_only`, those whose stored vector is not fresh
    for `served`) without reading its rows; `vectors` reads them."""
    stale = (
        sql.SQL(_STALE).format(fresh=pg.fresh_vector(sql.SQL("u.id"), served.row.id))
        if stale_only
        else sql.SQL("")
    )
    cur = conn.cursor(row_factory=tuple_row, binary=True)
    return cur.execute(sql.SQL(_INPUTS).format(stale=stale), {"weights": WEIGHTS_JSON, "users": user_ids})


def vectors(
    conn: psycopg.Connection[Any], served: Served, user_ids: Sequence[str], rows: Sequence[Any]
) -> dict[str, np.ndarray]:
    """Each user's folded vector (float32) from the rows of `send`; a user without a row (unknown)
    gets the empty fold: the popularity dimension alone. `conn` reads the tags of played items
    the model does not know, if any."""
    wanted = set(user_ids)
    found = {r[0]: r for r in rows if r[0] in wanted}
    index, model = served.index, served.model
    interests = {u: parse_interests(r[1]) for u, r in found.items()}
    unknown = {
        u: [(i, None, w) for i, w in zip(r[2], r[3], strict=True) if i not in index and w > 0]
        for u, r in found.items()
    }
    if any(unknown.values()):
        add_new_item_interests(conn, served, unknown, interests)
    out = {}
    for user in user_ids:
        _, _, items, weights = found.get(user, (user, None, [], []))
        known = [(index[i], w) for i, w in zip(items, weights, strict=True) if i in index]
        item_idx = np.fromiter((i for i, _ in known), np.int64, len(known))
        raw = np.fromiter((w for _, w in known), np.float64, len(known))
        vec = model.user_vector(item_idx, raw, interests.get(user) or None)
        out[user] = vec.astype(np.float32)
    return out


def read(conn: psycopg.Connection[Any], served: Served, user_ids: list[str]) -> dict[str, np.ndarray]:
    """`vectors` of `user_ids`, read now."""
    with send(conn, served, user_ids, stale_only=False) as cur:
        return vectors(conn, served, user_ids, cur.fetchall())
