"""`tagloop train` while recommendations are served: the old model's index is dropped after the switch
commits, in a short transaction of its own, so a request that read item_vectors and then stores a
user's vector no longer deadlocks with the training; a request does not wait for a training holding
the user's row; a deadlock while storing stores again without fitting again."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_pg import NOW, PARAMS, load_world

from tagloop.tools.recommender import pg, serving, user_vectors
from tagloop.tools.recommender import train as train_module
from tagloop.tools.recommender.train import train
from tagloop.tools.store import db as store_db


def _models(db: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    rows = db.execute("select id, status from rec_models order by id").fetchall()
    db.commit()
    return [(r["id"], r["status"]) for r in rows]


def _drop_stray_indexes(db: psycopg.Connection[Any]) -> None:
    """Earlier tests' model indexes: the tables are truncated between tests, restarting the ids, and a
    training whose new id has an index left drops it first, waiting for the readers."""
    rows = db.execute(
        """select indexname from pg_indexes where tablename = 'item_vectors'
           and indexname like 'item_vectors_hnsw_m%%'
           and substr(indexname, 20)::bigint not in (select id from rec_models)"""
    ).fetchall()
    for r in rows:
        db.execute(sql.SQL("drop index {}").format(sql.Identifier(r["indexname"])))
    db.commit()


def _wait_for_lock(monitor: psycopg.Connection[Any], pid: int, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        row = monitor.execute("select wait_event_type from pg_stat_activity where pid = %(p)s", {"p": pid})
        if row.fetchone() == ("Lock",):
            return
        time.sleep(0.01)
    raise AssertionError("the training never waited for the request's lock on item_vectors")


def test_training_beside_a_request_that_read_item_vectors_and_stores_a_users_vector(
    db: psycopg.Connection[Any], db_url: str, trained: serving.Served
) -> None:
    second = train(db, params=PARAMS, seed=1).model_id  # the next training drops the first model
    db.commit()
    _drop_stray_indexes(db)
    request = store_db.connect(db_url, migrate_schema=False)
    monitor = psycopg.connect(db_url, autocommit=True)
    outcome: dict[str, Any] = {}

    def training() -> None:
        try:
            outcome["report"] = train(db, params=PARAMS, seed=2)
            db.commit()
        except psycopg.Error as exc:
            outcome["error"] = exc

    try:
        served = serving.active(request)
        assert served is not None
        assert pg.top_k_stored(request, served.row, "u0", 5)  # the request holds item_vectors now
        history = serving.histories(request, served, ["u0"])["u0"]
        thread = threading.Thread(target=training)
        thread.start()
        _wait_for_lock(monitor, db.info.backend_pid, thread)  # dropping the first model's index
        serving.refresh(request, served, "u0", history)  # was: waits for the training's row of u0
        request.commit()
        thread.join(60)
    finally:
        request.close()
        monitor.close()
    assert "error" not in outcome, outcome.get("error")
    third = outcome["report"].model_id
    train_module.drop_retired(db)  # when the training gave up waiting for the request
    db.commit()
    assert _models(db) == [(second, "retired"), (third, "active")]
    assert db.execute(
        "select count(*) as n from pg_indexes where indexname like 'item_vectors_hnsw_m%%'"
    ).fetchone() == {"n": 2}


def test_a_reader_of_item_vectors_does_not_hold_a_training_the_next_one_drops_the_old_model(
    db: psycopg.Connection[Any], db_url: str, trained: serving.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "DROP_LOCK_TIMEOUT", "50ms", raising=False)
    first = trained.row.id
    second = train(db, params=PARAMS, seed=1).model_id
    db.commit()
    _drop_stray_indexes(db)
    reader = store_db.connect(db_url, migrate_schema=False)
    try:
        reader.execute("select count(*) from item_vectors").fetchone()  # a request in flight
        db.execute("set statement_timeout = '10s'")  # was: the training waits for the reader
        said: list[str] = []
        third = train(db, params=PARAMS, seed=2, progress=said.append).model_id
        assert f"old model {first} is still being read; the next training drops it" in said
        assert _models(db) == [(first, "retired"), (second, "retired"), (third, "active")]
    finally:
        reader.close()
    assert train_module.drop_retired(db) == [first]
    assert _models(db) == [(second, "retired"), (third, "active")]


def test_a_request_does_not_wait_for_a_training_holding_the_users_row(
    db: psycopg.Connection[Any], db_url: str, trained: serving.Served
) -> None:
    holder = store_db.connect(db_url, migrate_schema=False)  # a training that wrote the row, uncommitted
    try:
        history = serving.histories(holder, trained, ["fresh"])["fresh"]
        vec = serving.user_vector(trained, history)
        user_vectors.write_user_vectors(holder, trained.row.id, [serving.stored_user("fresh", vec, history)])
        db.execute("set statement_timeout = '5s'")
        db.commit()
        started = time.monotonic()
        recs = serving.recommend(db, "fresh", 5, now=NOW)  # was: waits until the holder commits
        assert recs and time.monotonic() - started < 2
        assert db.execute("show lock_timeout").fetchone() == {"lock_timeout": "0"}
        db.commit()
    finally:
        holder.close()
    assert db.execute("select 1 from rec_user_vectors where user_id = 'fresh'").fetchone() is None
    assert serving.recommend(db, "fresh", 5, now=NOW)  # the row is free: stored this time
    assert db.execute("show lock_timeout").fetchone() == {"lock_timeout": "0"}  # put back after the write
    db.commit()
    assert db.execute("select 1 from rec_user_vectors where user_id = 'fresh'").fetchone() is not None


def test_a_deadlock_while_storing_stores_again_without_fitting_again(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_world(db)
    fits: list[int] = []
    fit, activate = train_module.fit, pg.activate
    failures = [psycopg.errors.DeadlockDetected("deadlock detected")]

    def counted_fit(*args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return fit(*args, **kwargs)

    def failing_activate(conn: psycopg.Connection[Any], model_id: int) -> None:
        activate(conn, model_id)
        if failures:
            raise failures.pop()

    monkeypatch.setattr(train_module, "fit", counted_fit)
    monkeypatch.setattr(pg, "activate", failing_activate)
    report = train(db, params=PARAMS, seed=0)
    db.commit()
    assert len(fits) == 1 and not failures
    assert _models(db) == [(report.model_id, "active")]  # the aborted attempt left nothing
    assert db.execute("select count(*) as n from rec_user_vectors").fetchone() == {"n": 60}


def test_the_model_switch_holds_no_users_profile_row(
    db: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch's transaction wrote every user's `user_profiles.embedding`, so the profile folder
    and every read that folds its user first (GET profile, recommendations, POST runs) waited for
    the whole store step; the embeddings are written after it, a chunk per transaction."""
    from tagloop.tools.profiles import rebuild_profiles

    load_world(db)
    rebuild_profiles(db, now=NOW, half_life_days=30)
    db.commit()
    assert db.execute("select count(*) as n from user_profiles where user_id = 'u1'").fetchone() == {"n": 1}
    other = store_db.connect(db_url, migrate_schema=False)
    seen: list[str] = []
    activate = pg.activate

    def probing_activate(conn: psycopg.Connection[Any], model_id: int) -> None:
        try:  # what a fold does to u1's profile row, while the switch is under way
            with other.transaction():
                other.execute("set local lock_timeout = '1s'")
                other.execute("select 1 from user_profiles where user_id = 'u1' for update")
            seen.append("free")
        except psycopg.errors.LockNotAvailable:
            seen.append("locked")
        activate(conn, model_id)

    monkeypatch.setattr(pg, "activate", probing_activate)
    try:
        train(db, params=PARAMS, seed=0)
    finally:
        other.close()
    assert seen == ["free"]
    stored = db.execute("select count(*) as n from user_profiles where embedding is not null").fetchone()
    assert stored is not None and stored["n"] == 60  # every trained user's, written after the switch


def test_a_training_whose_profile_embeddings_fail_still_succeeds(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embeddings are written after the switch: failing there failed a training whose model
    was already serving (and skipped dropping retired models)."""
    load_world(db)
    db.commit()

    def deadlocked(*args: Any, **kwargs: Any) -> int:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(user_vectors, "write_user_embeddings", deadlocked)
    said: list[str] = []
    report = train(db, params=PARAMS, seed=0, progress=said.append)
    assert serving.active(db) is not None and serving.active(db).row.id == report.model_id  # type: ignore[union-attr]
    assert any("embeddings not all written" in line for line in said), said
