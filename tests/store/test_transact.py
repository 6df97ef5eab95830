"""`db.transact`: a transaction PostgreSQL aborts as a deadlock victim is run again, so two
writers of overlapping rows both succeed (concurrent PUTs of items sharing tags got a 503)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg

from tagloop.tools.store import db as store_db


def test_a_deadlock_victim_is_run_again_and_both_writers_succeed(
    db: psycopg.Connection[Any], db_url: str
) -> None:
    db.execute("create table pair (id int primary key, n int not null default 0)")
    db.execute("insert into pair (id) values (1), (2)")
    db.commit()
    pool = store_db.make_pool(db_url, max_size=2)
    both_hold_one = threading.Barrier(2, timeout=10)
    calls: Counter[str] = Counter()
    errors: list[BaseException] = []

    def crosswise(first: int, second: int, name: str) -> None:
        def write(conn: psycopg.Connection[Any]) -> None:
            calls[name] += 1
            conn.execute("update pair set n = n + 1 where id = %(id)s", {"id": first})
            if calls[name] == 1:  # the first attempts each hold one row and want the other
                both_hold_one.wait()
            conn.execute("update pair set n = n + 1 where id = %(id)s", {"id": second})

        try:
            store_db.transact(pool, write)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=crosswise, args=a) for a in ((1, 2, "a"), (2, 1, "b"))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        pool.close()
    assert errors == []
    assert sum(calls.values()) == 3  # one of the two was the deadlock victim and ran again
    assert {r["id"]: r["n"] for r in db.execute("select id, n from pair")} == {1: 2, 2: 2}
