"""What serving reads about the model and a user: the model in memory (`Served`), and a user's
history (`History`: model-indexed items with raw weights as train.py computes them, seen items,
played providers, declared interests) in one statement per batch of users.

Declared interests (`users.attributes.interests`: a list of tag names or an object tag → weight)
are matched like item tags (`normalize_tag`). Items the model does not know (added after training)
cannot be folded in as items; their tags join the user's interests, weighted by the user's
confidence in each item (`_new_item_interests`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from tagloop.tools.interests import parse_interests
from tagloop.tools.recommender import pg
from tagloop.tools.recommender.confidence import EVENT_WEIGHTS, RAW_WEIGHT, confidence_vector
from tagloop.tools.recommender.model import RecModel

WEIGHTS_JSON = json.dumps(EVENT_WEIGHTS)


@dataclass
class Served:
    row: pg.ModelRow
    model: RecModel
    index: dict[str, int]
    tag_index: dict[str, int]
    placed_at: float = 0.0


@dataclass
class History:
    item_idx: np.ndarray
    weights: np.ndarray
    seen: list[str]
    providers: set[str]
    interests: dict[str, float]
    event_seq: int = 0  # the user's last event (events.seq) when read; 0 for none
    declared: Any = None  # the raw `users.attributes -> 'interests'` JSON


HISTORY = f"""
select u.id as user_id, u.attributes -> 'interests' as interests, h.item_id, h.provider_id, h.w,
       m.id as model_id, m.trained_at, s.event_seq
from users u
left join rec_models m on m.status = 'active'
cross join lateral (  -- once per user: in the select list it ran once per history row
    select coalesce(max(e.seq + 0), 0) as event_seq from events e where e.user_id = u.id  -- + 0: pg._FRESH
) s
left join lateral (
    select e.item_id, i.provider_id, {RAW_WEIGHT} as w
    from events e left join items i on i.id = e.item_id
    where e.user_id = u.id and e.item_id is not null
    group by e.item_id, i.provider_id
) h on true
where u.id = any(%(users)s)
"""


def histories(conn: psycopg.Connection[Any], served: Served, user_ids: list[str]) -> dict[str, History]:
    """Each user's model-indexed history, seen items, played providers and declared interests
    (one statement); unknown users get an empty history."""
    return read_histories(conn, served, user_ids)[0]


def read_histories(
    conn: psycopg.Connection[Any], served: Served, user_ids: list[str]
) -> tuple[dict[str, History], tuple[int, datetime] | None]:
    """`histories` and the active model's (id, trained_at) as seen by the same statement."""
    return histories_of(
        served, user_ids, conn.execute(HISTORY, {"weights": WEIGHTS_JSON, "users": user_ids}), conn
    )


def histories_of(
    served: Served, user_ids: list[str], result: Any, conn: psycopg.Connection[Any] | None = None
) -> tuple[dict[str, History], tuple[int, datetime] | None]:
    """Histories from HISTORY rows. Items the model does not know (added after training) cannot be
    folded in as items; with `conn` their tags join the user's interests instead, weighted by the
    user's confidence in each, so a fan of new releases is not served the popularity list."""
    rows: dict[str, list[tuple[str, str | None, float]]] = defaultdict(list)
    interests: dict[str, dict[str, float]] = {}
    raw: dict[str, tuple[int, Any]] = {}
    stamp = None
    for r in result:
        user = r["user_id"]
        if user not in raw:  # the user's columns repeat on each of their rows
            interests[user] = parse_interests(r["interests"])
            raw[user] = (int(r["event_seq"]), r["interests"])
            stamp = (int(r["model_id"]), r["trained_at"]) if r["model_id"] is not None else None
        if r["item_id"] is not None:
            rows[user].append((r["item_id"], r["provider_id"], float(r["w"])))
    if conn is not None:
        add_new_item_interests(conn, served, rows, interests)
    out = {}
    for u in user_ids:
        found = rows.get(u, [])
        known = [(served.index[i], w) for i, _, w in found if i in served.index]
        out[u] = History(
            np.asarray([k for k, _ in known], dtype=np.int64),
            np.asarray([w for _, w in known]),
            [i for i, _, _ in found],
            {p for _, p, w in found if p and w > 0},
            interests.get(u, {}),
            *raw.get(u, (0, None)),
        )
    return out, stamp


_ITEM_TAGS = """
select it.item_id, t.name, it.weight from item_tags it join tags t on t.id = it.tag_id
where it.item_id = any(%(ids)s) and it.confidence >= 0.5
"""


def add_new_item_interests(
    conn: psycopg.Connection[Any],
    served: Served,
    rows: Mapping[str, Sequence[tuple[str, str | None, float]]],
    interests: dict[str, dict[str, float]],
) -> None:
    """Add to each user's `interests` the tags of their (item, provider, raw weight) history rows
    the model does not know (one read, only when there are such items)."""
    for user, extra in _new_item_interests(conn, served, rows).items():
        mixed = interests.setdefault(user, {})
        for tag, weight in extra.items():
            mixed[tag] = mixed.get(tag, 0.0) + weight


def _new_item_interests(
    conn: psycopg.Connection[Any],
    served: Served,
    rows: Mapping[str, Sequence[tuple[str, str | None, float]]],
) -> dict[str, dict[str, float]]:
    """user → {tag: weight} from the positively weighted history items the model does not know:
    each item's tags as a unit vector of log1p weights, times the user's confidence in the item."""
    new = {u: [(i, w) for i, _, w in found if w > 0 and i not in served.index] for u, found in rows.items()}
    new = {u: pairs for u, pairs in new.items() if pairs}
    ids = sorted({i for pairs in new.values() for i, _ in pairs})
    if not ids:
        return {}
    tags: dict[str, dict[str, float]] = defaultdict(dict)
    with conn.cursor(row_factory=dict_row) as cur:
        for r in cur.execute(_ITEM_TAGS, {"ids": ids}):
            tags[r["item_id"]][r["name"]] = float(np.log1p(max(float(r["weight"]), 0.0)))
    out: dict[str, dict[str, float]] = {}
    for user, pairs in new.items():
        conf = confidence_vector(np.asarray([w for _, w in pairs], dtype=np.float64))
        extra: dict[str, float] = {}
        for (item, _), c in zip(pairs, conf, strict=True):
            norm = float(np.sqrt(sum(v * v for v in tags[item].values())))
            for tag, value in tags[item].items() if norm > 0 else ():
                extra[tag] = extra.get(tag, 0.0) + float(c) * value / norm
        if extra:
            out[user] = extra
    return out
