"""One database per simulated policy, all cloned from one world template.

The template holds the world as the agent first sees it: the Last.fm artists with their tags and
tag vectors, the sampled users, their observed history and profiles rebuilt at the start. It is
built once per world key and data set (`ensure_template`) and then copied with
`create database … template …` for each policy, so every policy starts from the same tables.
`--fresh-world` rebuilds it. Needs a server where tagloop may create databases (the embedded one,
or a `DATABASE_URL` role with CREATEDB).

Same seed → same JSON while the world database is reused (it is cached per world key on the
server): every policy clones the same tables and the same pgvector HNSW graph. A rebuilt world
(`--fresh-world`, another home or machine) gets another graph — pgvector draws each inserted
node's HNSW level from the backend's unseedable PRNG (`pg_global_prng_state`) — and the agent's
approximate tag search (`tools/retrieval.py`) may return other neighbours, so the JSON can differ.
`exact=True` (`--exact`, the default) builds a world without HNSW indexes (`_exact_retrieval`) and
the policies' agents search tags exactly in their process (`TAGLOOP_TAG_SEARCH=exact`,
tools/tag_exact.py), so the JSON is the same on any build. (Before the in-process search, the
agent's SQL scanned every item on the server instead: about three times the decision time, 1,000
users × 30 days in 535 s against 184 s.) Its tag profiles are stored inline (storage `main`): out of
line, an exact scan on the server fetched each one back from TOAST for every item it scored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from tagloop.agent.settings import Settings
from tagloop.evals.simulate.world import World
from tagloop.tools.errors import DatabaseError
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.store import db, embedded
from tagloop.tools.store.catalogue import refresh_item_vectors

Log = Callable[[str], None]
# a simulation that crashes is simply rerun: no need to wait for WAL flushes at every commit
_NO_SYNC = sql.SQL("alter database {} set synchronous_commit = off")


def admin_url(settings: Settings) -> str:
    """A URL on the server the simulator creates its databases on."""
    return settings.database_url or embedded.ensure_running(settings.home)


def template_name(world: World, data: str, *, exact: bool = False) -> str:
    key = f"{world.config.key()}|{data}" + ("|exact" if exact else "")
    return "tagloop_sim_" + hashlib.sha1(key.encode()).hexdigest()[:12]


_HNSW_INDEXES = """
select n.nspname as schema, c.relname as name
from pg_index x
join pg_class c on c.oid = x.indexrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_am a on a.oid = c.relam
where a.amname = 'hnsw' and n.nspname = current_schema()
order by c.relname
"""


def _exact_retrieval(conn: psycopg.Connection[Any]) -> None:
    """Drop the world database's HNSW indexes (a reproducible world needs exact neighbour
    searches, see the module docstring) and keep tag profiles inline, where an exact scan reads
    them without a TOAST fetch per scored item. Run after the migrations, which create the indexes."""
    for row in conn.execute(_HNSW_INDEXES).fetchall():
        conn.execute(
            sql.SQL("drop index {}.{}").format(sql.Identifier(row["schema"]), sql.Identifier(row["name"]))
        )
    storage = conn.execute(
        "select attstorage from pg_attribute where attrelid = 'user_profiles'::regclass and attname = 'tags'"
    ).fetchone()
    if storage is not None and storage["attstorage"] != "m":
        conn.execute("alter table user_profiles alter column tags set storage main")
    conn.commit()


def _admin(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, **db.timeout_of(url))
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database server: {str(exc).strip()[:200]}") from exc


def exists(url: str, name: str) -> bool:
    with _admin(url) as conn:
        return (
            conn.execute("select 1 from pg_database where datname = %(n)s", {"n": name}).fetchone()
            is not None
        )


def drop(url: str, name: str) -> None:
    with _admin(url) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def clone(url: str, template: str, name: str) -> str:
    """A fresh copy of `template` named `name` (replacing one left behind); returns its URL."""
    drop(url, name)
    try:
        with _admin(url) as conn:
            conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
            conn.execute(_NO_SYNC.format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            "the simulator needs a database role that may create databases (CREATEDB)"
        ) from exc
    return db.with_dbname(url, name)


def ensure_template(
    url: str,
    world: World,
    data: str,
    *,
    half_life_days: float,
    fresh: bool = False,
    exact: bool = False,
    log: Log = print,
) -> str:
    """The world template's name, building it unless a complete one exists (or `fresh`); `exact`:
    without HNSW indexes (see the module docstring)."""
    name = template_name(world, data, exact=exact)
    if fresh:
        drop(url, name)
    elif exists(url, name):
        log(f"world database {name} reused")
        with db.connect(db.with_dbname(url, name)) as conn:  # applies migrations added since it was built
            if exact:
                _exact_retrieval(conn)  # … and drops an HNSW index one of them may have added
        return name
    building = name + "_build"
    drop(url, building)
    try:
        with _admin(url) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(building)))
            conn.execute(_NO_SYNC.format(sql.Identifier(building)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            "the simulator needs a database role that may create databases (CREATEDB)"
        ) from exc
    log(f"building world database {name} ({len(world.user_ids)} users, {len(world.item_ids)} artists)")
    with db.connect(db.with_dbname(url, building)) as conn:
        if exact:
            _exact_retrieval(conn)
        for kind in ("items", "users", "events"):
            import_file(conn, kind, world.files[kind], now=world.config.start)
        refresh_item_vectors(conn)
        rebuild_profiles(conn, now=world.config.start, half_life_days=half_life_days)
        conn.commit()
        conn.autocommit = True
        conn.execute("vacuum analyze")
    with _admin(url) as conn:  # the rename marks the template complete
        conn.execute(
            sql.SQL("alter database {} rename to {}").format(sql.Identifier(building), sql.Identifier(name))
        )
    return name
