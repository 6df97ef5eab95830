"""Stored user vectors (rec_user_vectors): `tagloop train` writes them, serving answers from them in
one statement while they are fresh, and a new event, new declared interests or a retrain make them
stale so serving folds the user in again (and stores the new vector)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from test_pg import NOW, PARAMS

from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import parse_event
from tagloop.tools.recommender import pg, serving, user_vectors
from tagloop.tools.recommender.train import train


def _folded(db: psycopg.Connection[Any], served: serving.Served, user: str) -> list[pg.Hit]:
    history = serving.histories(db, served, [user])[user]
    return pg.top_k(db, served.row, serving.user_vector(served, history), history.seen, 5)


def _stamp(db: psycopg.Connection[Any], user: str) -> dict[str, Any]:
    row = db.execute(
        "select model_id, event_seq, interests from rec_user_vectors where user_id = %(u)s", {"u": user}
    ).fetchone()
    assert row is not None
    return dict(row)


def test_train_stores_every_users_vector_equal_to_the_fold_in(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    n = db.execute("select count(*) as n from rec_user_vectors where model_id = %(m)s", {"m": trained.row.id})
    assert n.fetchone() == {"n": 60}  # users with events; "fresh" and "nobody" are folded on request
    for user in ("u0", "u1", "u2", "u9"):
        stored = pg.top_k_stored(db, trained.row, user, 5)
        folded = _folded(db, trained, user)
        assert [h.item_id for h in stored] == [h.item_id for h in folded]
        assert [h.score for h in stored] == pytest.approx([h.score for h in folded], abs=1e-5)
        seq = db.execute("select max(seq) as s from events where user_id = %(u)s", {"u": user}).fetchone()
        assert seq is not None and _stamp(db, user)["event_seq"] == seq["s"]
        # the history stored for the reasons is the one serving reads from the events
        history = serving.histories(db, trained, [user])[user]
        row = db.execute(user_vectors.STORED_HISTORY, {"user": user, "model": trained.row.id}).fetchone()
        assert row is not None and set(row["providers"]) == history.providers
        stored = dict(zip(row["hist_items"], row["hist_weights"], strict=True))
        assert stored == dict(zip(history.item_idx.tolist(), history.weights.tolist(), strict=True))


def test_a_new_event_makes_the_stored_vector_stale_and_serving_refreshes_it(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    user = "u0"  # a shoegaze fan; the top recommendation is an unseen shoegaze item
    first = pg.top_k_stored(db, trained.row, user, 5)
    assert first
    event = {"id": "new-1", "user_id": user, "type": "like", "item_id": first[0].item_id}
    loader.store_events(db, [parse_event(event | {"ts": (NOW - timedelta(hours=1)).isoformat()}, now=NOW)])
    db.commit()
    assert pg.top_k_stored(db, trained.row, user, 5) == []  # stale: the user has a newer event
    hits = serving.top_k(db, user, 5, served=trained)
    assert first[0].item_id not in {h.item_id for h in hits}  # seen now
    assert [h.item_id for h in hits] == [h.item_id for h in _folded(db, trained, user)]
    again = pg.top_k_stored(db, trained.row, user, 5)  # refreshed: one statement again
    assert [h.item_id for h in again] == [h.item_id for h in hits]
    seq = db.execute("select max(seq) as s from events where user_id = %(u)s", {"u": user}).fetchone()
    assert seq is not None and _stamp(db, user)["event_seq"] == seq["s"]


def test_declared_interests_are_part_of_the_stamp(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    assert pg.top_k_stored(db, trained.row, "fresh", 5) == []  # no events: not trained, folded on request
    recs = serving.recommend(db, "fresh", 5, now=NOW, served=trained)
    assert recs is not None and all(r.item_id.startswith("jazz") for r in recs)
    assert _stamp(db, "fresh")["interests"] == ["jazz"]
    assert [h.item_id for h in pg.top_k_stored(db, trained.row, "fresh", 5)] == [r.item_id for r in recs]
    db.execute(
        "update users set attributes = %(a)s where id = 'fresh'", {"a": Jsonb({"interests": ["techno"]})}
    )
    assert pg.top_k_stored(db, trained.row, "fresh", 5) == []
    techno = serving.recommend(db, "fresh", 5, now=NOW, served=trained)
    assert techno is not None and all(r.item_id.startswith("techno") for r in techno)
    assert all("techno" in r.reason for r in techno)


def test_the_stored_path_and_the_fold_in_path_give_the_same_reasons(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    fresh = serving.recommend(db, "u4", 8, now=NOW, served=trained)
    db.execute("delete from rec_user_vectors where user_id = 'u4'")
    folded = serving.recommend(db, "u4", 8, now=NOW, served=trained)
    assert fresh is not None and folded is not None and len(fresh) == 8
    assert [(r.item_id, r.reason) for r in fresh] == [(r.item_id, r.reason) for r in folded]
    assert _stamp(db, "u4")["model_id"] == trained.row.id


def test_a_retrain_restamps_the_vectors_and_serving_follows_the_new_model(
    db: psycopg.Connection[Any], trained: serving.Served
) -> None:
    train(db, params=PARAMS, seed=1)
    db.commit()
    assert pg.top_k_stored(db, trained.row, "u1", 5) == []  # the old model is retired
    new = serving.active(db)
    assert new is not None and new.row.id != trained.row.id
    assert _stamp(db, "u1")["model_id"] == new.row.id
    hits = serving.top_k(db, "u1", 5, served=trained)  # a stale cache finds the new model
    assert [h.item_id for h in hits] == [h.item_id for h in pg.top_k_stored(db, new.row, "u1", 5)]
    vec = db.execute("select vec from rec_user_vectors where user_id = 'u1'").fetchone()
    assert vec is not None and vec["vec"].to_numpy().shape == (new.row.dim,)
