"""Numbered SQL migrations: discovered from `migrations/NNNN_name.sql`, applied once each, in order,
inside one transaction per file, recorded in `schema_migrations`. Applying twice is a no-op; two
processes migrating at once serialise on an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools.errors import DatabaseError

MIGRATION_LOCK = 0x7A61_6C6F  # advisory lock key shared by every tagloop process
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with tagloop, ordered by version."""
    found = []
    for entry in resources.files("tagloop.tools.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def applied(conn: psycopg.Connection) -> dict[int, str]:
    """Versions already recorded in `schema_migrations` (empty on a new database)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        (exists,) = cur.execute("select to_regclass('schema_migrations') is not null").fetchone() or (False,)
        if not exists:
            return {}
        rows = cur.execute("select version, name from schema_migrations order by version").fetchall()
    return {int(version): str(name) for version, name in rows}


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply what is missing; return the migrations applied by this call."""
    done: list[Migration] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%(key)s)", {"key": MIGRATION_LOCK})
        conn.execute(
            """create table if not exists schema_migrations (
                   version    integer primary key,
                   name       text not null,
                   applied_at timestamptz not null default now())"""
        )
        have = applied(conn)
        for migration in available():
            if migration.version in have:
                continue
            try:
                conn.execute(migration.sql.encode())
            except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported):
                raise  # a missing extension (pgvector): the caller names it
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"migration {migration.version:04d}_{migration.name} failed: {str(exc).strip()}"
                ) from exc
            conn.execute(
                "insert into schema_migrations (version, name) values (%(v)s, %(n)s)",
                {"v": migration.version, "n": migration.name},
            )
            done.append(migration)
    return done


def pending(conn: psycopg.Connection) -> list[Migration]:
    have = applied(conn)
    return [m for m in available() if m.version not in have]
