"""A user's last event (`max(seq)` of their events) is read through the user's index even when
`events` has no statistics yet, as right after a bulk import: otherwise PostgreSQL answers the max by
walking the primary key backwards and filtering on the user, which on imported data (a user's events
stored together) reads most of the table per user. `tagloop train` on the bench's 10,000 demo users
sat in that scan for minutes (100 users: 11.2 s against 2.7 ms).

Statistics are removed inside the test's transaction (pg_statistic, superuser only) and rolled back."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_pg import load_world

from tagloop.tools.recommender import history, pg, train


def _plan(db: psycopg.Connection[Any], query: sql.Composable | str, params: dict[str, Any]) -> str:
    rows = db.execute(sql.SQL("explain ") + (sql.SQL(query) if isinstance(query, str) else query), params)
    return "\n".join(r["QUERY PLAN"] for r in rows.fetchall())


@pytest.fixture
def no_stats(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    load_world(db)
    bulk = """insert into events (id, user_id, type, item_id, ts)
              select 'bulk' || n, 'u' || (n / 2000), 'play', null, now() from generate_series(0, 59999) n"""
    db.execute(bulk)  # users' events stored together, as an import of a file sorted by user leaves them
    db.commit()
    db.execute("analyze events")  # pages and row counts known, as after autovacuum's first visit...
    su = db.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if not (su and su["rolsuper"]):
        pytest.skip("removing statistics needs a superuser (the embedded server's role is one)")
    db.execute("delete from pg_statistic where starelid in ('events'::regclass, 'users'::regclass)")
    return db  # ... but no column statistics: the fixture's transaction is rolled back


@pytest.mark.parametrize("statement", ["train", "history", "fresh"])
def test_the_last_event_of_a_user_is_read_by_the_users_index(
    no_stats: psycopg.Connection[Any], statement: str
) -> None:
    users = {"users": ["u0", "u1"]}
    if statement == "train":
        plan = _plan(no_stats, train.USER_STAMPS, {})
    elif statement == "history":
        plan = _plan(no_stats, history.HISTORY, {"weights": history.WEIGHTS_JSON, **users})
    else:
        fresh = pg.fresh_vector(sql.SQL("q.user_id"), 1)
        query = (
            sql.SQL("select r.vec from unnest(%(users)s::text[]) q(user_id), rec_user_vectors r where ")
            + fresh
        )
        plan = _plan(no_stats, query, users)
    assert "events_pkey" not in plan, plan
    assert "events_user" in plan, plan  # one of the (user_id, …) indexes
    no_stats.rollback()
