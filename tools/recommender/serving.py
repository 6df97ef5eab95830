"""Serving the active recommender from Postgres: stored user vectors, top-k by HNSW, reasons.

- The active model's fold-in parameters are read once per process from `rec_models` and cached by
  model id and training time (a newly trained model is picked up at the next request).
- A user's vector is folded in from their stored events (raw weights as in train.py) plus their
  declared interests, `users.attributes.interests` (a list of tag names or an object tag → weight):
  `RecModel.user_vector`. No history and no interests gives the zero vector with the popularity
  dimension, i.e. the popularity ranking; interests alone give a tag ranking (cold-start users).
- The folded vector is stored in `rec_user_vectors` (migrations 0075/0076) with its stamp: model,
  the user's last event seq, the declared interests, and the history and providers the reasons
  need. `tagloop train` writes every user's row; `top_k` / `recommend` serve from it in one
  statement (`pg.top_k_stored`: the freshness check, the HNSW iterative scan and the seen-item
  filter all in SQL) and, when it is stale or missing, fold the user in, store the row and query
  (`refresh`; not stored when the row stays locked for 100 ms, e.g. by a training). Freshness is
  "no event with a larger seq": an event whose transaction commits after a later-numbered one was
  folded can be missed until the user's next event or the next training.
- Items added after training get vectors from their tags (`item_vector_from_tags`, marked `cold`)
  when `place_new_items` runs: at most every `NEW_ITEM_INTERVAL` seconds per process, before serving.
- Reasons: "new from <provider>, an artist you play" for a recent item whose provider the user
  played; otherwise explain.py's tag / similar-item / popularity evidence (for cold items the shared
  tags of the item and the user's tag profile). The words follow the item's kind (tools/wording.py:
  "an author you read" for articles).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tagloop.tools.interests import parse_interests
from tagloop.tools.recommender import pg, user_vectors
from tagloop.tools.recommender.confidence import confidence_vector
from tagloop.tools.recommender.explain import DISCOVER, explain
from tagloop.tools.recommender.history import (
    History,
    Served,
    histories,
    histories_of,
    read_histories,
)
from tagloop.tools.recommender.store import load
from tagloop.tools.recommender.tags import profile_vector
from tagloop.tools.tagging_names import display_tag
from tagloop.tools.wording import LISTEN, Habit, habit

NEW_ITEM_INTERVAL = 60.0
NEW_RELEASE = timedelta(days=30)
STORE_LOCK_TIMEOUT = "100ms"  # how long `refresh` waits to store a user's vector

# SET LOCAL in a savepoint lasts until the end of the whole transaction: the value it replaces is kept
# in a setting of our own and put back after the write
_LOCK_TIMEOUT_SAVED = "select set_config('tagloop.lock_timeout', current_setting('lock_timeout'), true)"
_LOCK_TIMEOUT = "select set_config('lock_timeout', %(timeout)s, true)"
_LOCK_TIMEOUT_RESTORED = "select set_config('lock_timeout', current_setting('tagloop.lock_timeout'), true)"

log = logging.getLogger("tagloop.recommender")


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    provider: str | None
    score: float
    reason: str
    cold: bool


_CACHE: dict[int, Served] = {}
_LOADING = threading.Lock()  # one load per process: a new model reached every pool thread at once


def active(conn: psycopg.Connection[Any]) -> Served | None:
    """The active model (cached per process by id), or None when nothing is trained. After a
    training, the first request loads the new model (~1 s on Last.fm) while the process's other
    requests wait for it instead of each loading their own copy (8 threads took 9 s)."""
    row = pg.active_model(conn)
    if row is None:
        return None
    served = _CACHE.get(row.id)
    if served is not None and served.row.trained_at == row.trained_at:
        return served
    with _LOADING:
        return _load(conn, row)


def _load(conn: psycopg.Connection[Any], row: pg.ModelRow) -> Served:
    served = _CACHE.get(row.id)
    if served is None or served.row.trained_at != row.trained_at:  # ids repeat after a restore
        meta, arrays = pg.load_files(conn, row.id)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.json").write_bytes(meta)
            (Path(tmp) / "model.npz").write_bytes(arrays)
            model = load(Path(tmp))
        served = Served(
            row,
            model,
            {str(i): n for n, i in enumerate(model.item_ids)},
            {str(t): n for n, t in enumerate(model.tags)},
        )
        _CACHE.clear()
        _CACHE[row.id] = served
    return served


def place_new_items(conn: psycopg.Connection[Any], served: Served, *, force: bool = False) -> int:
    """Vectors for items that appeared after training, from their tags alone (cold start)."""
    if not force and time.monotonic() - served.placed_at < NEW_ITEM_INTERVAL:
        return 0
    served.placed_at = time.monotonic()
    row = pg.active_model(conn)
    if row is None or (row.id, row.trained_at) != (served.row.id, served.row.trained_at):
        return 0  # a cached model that is no longer served: the caller reloads it
    missing = pg.items_without_vectors(conn, served.row.id)
    if not missing:
        return 0
    ids = sorted(missing)
    vecs = np.vstack([served.model.item_vector_from_tags(missing[i]) for i in ids])
    # an insert, not COPY: this also runs inside the agent's pipeline mode, where COPY is refused
    return pg.insert_item_vectors(conn, served.row.id, ids, vecs, cold=True)


def user_vector(served: Served, history: History) -> np.ndarray:
    return served.model.user_vector(history.item_idx, history.weights, history.interests or None)


def top_k(
    conn: psycopg.Connection[Any], user_id: str, k: int, *, served: Served | None = None
) -> list[pg.Hit]:
    """Top-`k` unseen items without reasons (empty when no model is trained). One round trip when the
    user's stored vector is fresh (`pg.top_k_stored`); otherwise the user is folded in from their
    events, the vector stored, and the HNSW query run with it."""
    served = served or next(iter(_CACHE.values()), None) or active(conn)
    if served is None:
        return []
    place_new_items(conn, served)
    hits = pg.top_k_stored(conn, served.row, user_id, k)
    if hits:
        return hits
    found = _current_histories(conn, served, user_id)
    if found is None:
        return []
    served, history = found
    with conn.pipeline():  # the release of refresh's savepoint travels with the query
        return pg.top_k(conn, served.row, refresh(conn, served, user_id, history), history.seen, k)


def _current_histories(
    conn: psycopg.Connection[Any], served: Served, user_id: str, read: Any = None
) -> tuple[Served, History] | None:
    """The user's history under the active model (reloaded when it was retrained since `served`)."""
    found, stamp = (
        histories_of(served, [user_id], read) if read is not None else read_histories(conn, served, [user_id])
    )
    if stamp != (served.row.id, served.row.trained_at):  # retrained since: load the new model
        new = active(conn)
        if new is None:
            return None
        served, found = new, histories(conn, new, [user_id])
    return served, found[user_id]


def refresh(conn: psycopg.Connection[Any], served: Served, user_id: str, history: History) -> np.ndarray:
    """The user's vector folded in from `history`, also stored with what it folds in (event seq,
    declared interests, the history and providers the reasons need) so the next request is served
    from it in one round trip. Storing is best effort: in a savepoint that waits at most
    `STORE_LOCK_TIMEOUT` for the user's row, which a training writing every user's row holds until
    it commits; the vector is then served without being stored (the next request folds it again)
    rather than holding the request, and its locks on item_vectors, until the training ends."""
    vec = user_vector(served, history)
    try:
        with conn.transaction(), conn.pipeline():  # the pipeline's sync raises inside the savepoint
            conn.execute(_LOCK_TIMEOUT_SAVED)
            conn.execute(_LOCK_TIMEOUT, {"timeout": STORE_LOCK_TIMEOUT})
            user_vectors.write_user_vectors(conn, served.row.id, [stored_user(user_id, vec, history)])
            conn.execute(_LOCK_TIMEOUT_RESTORED)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
        log.info("event=user_vector_not_stored model=%d reason=%s", served.row.id, type(exc).__name__)
    return vec


def stored_user(user_id: str, vec: np.ndarray, history: History) -> user_vectors.StoredUser:
    return user_vectors.StoredUser(
        user_id,
        vec,
        history.event_seq,
        history.declared,
        history.item_idx,
        history.weights,
        sorted(history.providers),
        # the tags of new items the user played, when they add to the declared interests
        history.interests if history.interests != parse_interests(history.declared) else None,
    )


def _stored_history(row: dict[str, Any]) -> History:
    return History(
        np.asarray(row["hist_items"], dtype=np.int64),
        np.asarray(row["hist_weights"], dtype=np.float64),
        [],
        set(row["providers"]),
        dict(row["folded_interests"]) if row["folded_interests"] else parse_interests(row["interests"]),
    )


def recommend(
    conn: psycopg.Connection[Any],
    user_id: str,
    k: int,
    *,
    now: datetime,
    served: Served | None = None,
    store: bool = False,
) -> list[Recommendation] | None:
    """Top-`k` unseen items with reasons, or None when no model is trained. `store` also writes the
    user's vector to `user_profiles.embedding`. One round trip on the usual path: the top-k from
    the user's stored vector (`pg.top_k_stored`) and the history stored with it for the reasons
    (`user_vectors.STORED_HISTORY`), pipelined. When the stored vector is stale or missing, the user's events
    are read (the statement also names the active model, so a cached model is checked without a
    query of its own), folded in, stored, and queried."""
    served = served or next(iter(_CACHE.values()), None) or active(conn)
    if served is None:
        return None
    place_new_items(conn, served)
    with conn.pipeline(), conn.transaction():
        pg._scan_settings(conn, max(64, k))
        top = conn.execute(pg.top_k_stored_query(served.row), pg.stored_params(served.row, user_id, k))
        stored = conn.execute(user_vectors.STORED_HISTORY, {"user": user_id, "model": served.row.id})
    hits, row = pg._hits(top.fetchall()), stored.fetchone()
    if hits and row is not None:
        history = _stored_history(row)
        vec = None
    else:
        found = _current_histories(conn, served, user_id)
        if found is None:
            return None
        served, history = found
        with conn.pipeline():  # the release of refresh's savepoint travels with the query
            vec = refresh(conn, served, user_id, history)
            hits = pg.top_k(conn, served.row, vec, history.seen, k)
    if store:
        user_vectors.write_user_embeddings(
            conn, [user_id], (user_vector(served, history) if vec is None else vec)[None, :]
        )
    return [
        Recommendation(h.item_id, h.title, h.provider, h.score, r, h.cold)
        for h, r in zip(hits, reasons(served, history, hits, now, _Titles(conn)), strict=True)
    ]


def reasons(
    served: Served,
    history: History,
    hits: list[pg.Hit],
    now: datetime,
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """One short human reason per hit (see the module docstring); the facts come with the hits,
    the titles of history items a reason names from `names` (by item id)."""
    if not hits:
        return []
    model = served.model
    idx = np.asarray([served.index.get(h.item_id, -1) for h in hits], dtype=np.int64)
    interests = history.interests or None
    kinds = [h.kind for h in hits]
    base = explain(model, history.item_idx, history.weights, np.maximum(idx, 0), interests, names, kinds)
    profile = _profile(served, history) if (idx < 0).any() or any(h.cold for h in hits) else None
    out = []
    for h, i, because in zip(hits, idx, base, strict=True):
        fresh = h.created_at is not None and now - NEW_RELEASE <= h.created_at <= now
        words = habit(h.kind)
        if fresh and h.provider_id in history.providers:
            out.append(f"new from {h.provider or h.provider_id}, {words.provider}")
        elif profile is not None and (i < 0 or h.cold):
            played = history.item_idx.size > 0
            out.append(_cold_reason(served, profile, h.tags, played=played, new=fresh, words=words))
        else:
            out.append(because)
    return out


class _Titles(Mapping[str, str]):
    """Item titles read when a reason names a history item ("because you played Slowdive"), which
    few do: one small query each, none for the reasons that name tags."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn, self.known = conn, dict[str, str]()

    def __getitem__(self, item_id: str) -> str:
        if item_id not in self.known:
            row = self.conn.execute("select title from items where id = %(id)s", {"id": item_id}).fetchone()
            if row is None or not row["title"]:
                raise KeyError(item_id)
            self.known[item_id] = row["title"]
        return self.known[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)


def _profile(served: Served, history: History) -> np.ndarray:
    model = served.model
    conf = confidence_vector(history.weights)
    declared = model.declared_vector(history.interests) if history.interests else None
    return profile_vector(history.item_idx, conf, model.item_tag_vectors, declared)


def _cold_reason(
    served: Served,
    profile: np.ndarray,
    names: tuple[str, ...],
    *,
    played: bool,
    new: bool,
    words: Habit = LISTEN,
) -> str:
    """The reason of an item placed from its tags: "new, and tagged …" only when it was released
    within `NEW_RELEASE` (an old album added to the catalogue after training is not new)."""
    scored = sorted(((profile[served.tag_index[n]], n) for n in names if n in served.tag_index), reverse=True)
    shared = [display_tag(n) for s, n in scored[:2] if s > 0]
    if not shared:  # placed near the user's tags by the tag map: its own tags say what it is
        return "tagged " + " and ".join(display_tag(n) for n in names[:2]) if names else DISCOVER
    tail = f" like {words.what}" if played else ", which you like"
    return ("new, and tagged " if new else "tagged ") + " and ".join(shared) + tail
