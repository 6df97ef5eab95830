"""Numbered SQL migrations: discovered from `migrations/NNNN_name.sql`, applied once each, in order,
inside one transaction per file, recorded in `schema_migrations` by version AND name. Applying twice
is a no-op; two processes migrating at once serialise on an advisory lock.

A migration is identified by its (version, name): when a migration was renumbered after it shipped
(0080_rec_user_folded_interests became 0081 and 0080 went to item_tag_rejections), a database
migrated before the renumbering has (80, rec_user_folded_interests) recorded, and both shipped
(80, item_tag_rejections) and (81, rec_user_folded_interests) are pending: they are applied (every
migration is idempotent, `if not exists`), and the old row stays recorded as *superseded* (its name
is shipped under another version). A recorded migration whose name this tagloop does not ship at
all is *unknown*: the database was migrated by a newer (or another branch's) tagloop, and
`migrate` refuses to run against it (`tagloop db status` shows it).

Nothing is created or altered when nothing is pending, so a role with only DML grants can run
every command against a database that its owner migrated, except training (`tagloop train`,
`demo`), which rebuilds the model's vector index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from tagloop.tools.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7A61_6C6F  # advisory lock key shared by every tagloop process
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """create table if not exists schema_migrations (
                       version    integer not null,
                       name       text not null,
                       applied_at timestamptz not null default now(),
                       primary key (version, name))"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return label(self.version, self.name)


def label(version: int, name: str) -> str:
    return f"{version:04d}_{name}"


@dataclass(frozen=True)
class State:
    """What `schema_migrations` says against what this tagloop ships."""

    applied: list[tuple[int, str]]  # recorded and shipped as recorded
    pending: list[Migration]  # shipped, (version, name) not recorded
    superseded: list[tuple[int, str]]  # recorded; this tagloop ships the name under another version
    unknown: list[tuple[int, str]]  # recorded; a name this tagloop does not ship (a newer tagloop)
    table_ready: bool  # schema_migrations exists, keyed by (version, name)

    def unknown_error(self) -> DatabaseError:
        shipped = available()
        latest = shipped[-1].label if shipped else "none"
        names = ", ".join(label(v, n) for v, n in self.unknown)
        return DatabaseError(
            f"the database has migration(s) {names} unknown to this tagloop (latest {latest}): "
            "it was migrated by a newer tagloop; upgrade tagloop"
        )


def available() -> list[Migration]:
    """Every migration shipped with tagloop, ordered by version."""
    found = []
    for entry in resources.files("tagloop.tools.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def recorded(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """(version, name) of every row of `schema_migrations` (empty on a new database)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        (exists,) = cur.execute("select to_regclass('schema_migrations') is not null").fetchone() or (False,)
        if not exists:
            return []
        rows = cur.execute("select version, name from schema_migrations order by version, name").fetchall()
    return [(int(version), str(name)) for version, name in rows]


def _table_ready(conn: psycopg.Connection) -> bool:
    """schema_migrations exists and its primary key is (version, name); tagloop before the
    renumbering created it keyed by version alone, which cannot record two names at one version."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            """select array(select a.attname::text
                              from pg_index i
                              join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                             where i.indrelid = t.oid and i.indisprimary
                             order by a.attname)
                 from (select to_regclass('schema_migrations') as oid) t
                where t.oid is not null"""
        ).fetchone()
    return row is not None and list(row[0]) == ["name", "version"]


def state(conn: psycopg.Connection) -> State:
    shipped = available()
    pairs = {(m.version, m.name) for m in shipped}
    names = {m.name for m in shipped}
    rows = recorded(conn)
    have = set(rows)
    return State(
        applied=[r for r in rows if r in pairs],
        pending=[m for m in shipped if (m.version, m.name) not in have],
        superseded=[r for r in rows if r not in pairs and r[1] in names],
        unknown=[r for r in rows if r[1] not in names],
        table_ready=_table_ready(conn),
    )


def pending(conn: psycopg.Connection) -> list[Migration]:
    return state(conn).pending


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply what is missing; return the migrations applied by this call. Raises DatabaseError
    for a database with migrations unknown to this tagloop, and for a role that may not create
    what is missing."""
    was_idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    now = state(conn)
    if was_idle and not conn.autocommit:
        conn.rollback()  # end the reads' transaction: the migrations below commit on their own
    if now.unknown:
        raise now.unknown_error()
    if not now.pending:
        return []  # nothing to do: no lock, no DDL (a role with DML grants only gets here)
    done: list[Migration] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%(key)s)", {"key": MIGRATION_LOCK})
        now = state(conn)  # another process may have migrated while this one waited
        if now.unknown:
            raise now.unknown_error()
        if not now.pending:
            return []
        _check_may_create(conn)
        if not now.table_ready:  # re-keyed only when something is to be recorded
            _bootstrap(conn)
        superseded = {v: n for v, n in now.superseded}
        role = _role(conn)  # read now: after a failed statement the transaction answers nothing
        for migration in now.pending:
            if migration.version in superseded:
                log.warning(
                    "migration %s: version %04d is recorded as %s, which this tagloop ships renumbered; "
                    "applying %s now (migrations are idempotent)",
                    migration.label,
                    migration.version,
                    label(migration.version, superseded[migration.version]),
                    migration.label,
                )
            try:
                conn.execute(migration.sql.encode())
            except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported):
                raise  # a missing extension (pgvector): the caller names it
            except psycopg.errors.InsufficientPrivilege as exc:
                raise DatabaseError(
                    f"role {role} may not apply migration {migration.label} "
                    f"({str(exc).strip().splitlines()[0]}); run `tagloop db migrate` as the database owner"
                ) from None
            except psycopg.Error as exc:
                raise DatabaseError(f"migration {migration.label} failed: {str(exc).strip()}") from exc
            conn.execute(
                "insert into schema_migrations (version, name) values (%(v)s, %(n)s)",
                {"v": migration.version, "n": migration.name},
            )
            done.append(migration)
    return done


def _role(conn: psycopg.Connection) -> str:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("select current_user").fetchone()
    return str(row[0]) if row else "?"


def _check_may_create(conn: psycopg.Connection) -> None:
    """One line instead of a traceback when the role may not create tables where migrations do."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            """select current_user, coalesce(current_schema(), 'public'),
                      has_schema_privilege(coalesce(current_schema(), 'public'), 'CREATE')"""
        ).fetchone()
    if row is not None and not row[2]:
        raise DatabaseError(
            f"role {row[0]} may not create tables in schema {row[1]}; "
            "run `tagloop db migrate` as the database owner"
        )


def _bootstrap(conn: psycopg.Connection) -> None:
    """Create schema_migrations keyed by (version, name), or re-key the one an older tagloop made
    by version alone (idempotent; called under the migration lock, in the migration transaction)."""
    conn.execute(_CREATE_TABLE)
    if _table_ready(conn):
        return
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "select conname from pg_constraint "
            "where conrelid = 'schema_migrations'::regclass and contype = 'p'"
        ).fetchone()
    if row is not None:
        conn.execute(
            sql.SQL("alter table schema_migrations drop constraint {}").format(sql.Identifier(str(row[0])))
        )
    conn.execute("alter table schema_migrations add primary key (version, name)")
