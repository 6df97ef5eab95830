"""Connections: which database tagloop uses, and connections/pools with pgvector registered.

`DATABASE_URL` (or `TAGLOOP_DATABASE_URL`) names an external server; otherwise tagloop uses its
embedded server and a database named `tagloop` on it, created on first use.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from tagloop.tools.errors import DatabaseError
from tagloop.tools.store import embedded, migrate

T = TypeVar("T")

DEFAULT_DBNAME = "tagloop"
CONNECT_TIMEOUT = 10  # seconds, libpq's connect_timeout unless the URL or PGCONNECT_TIMEOUT gives one


def resolve_url(database_url: str | None, home: Path, dbname: str = DEFAULT_DBNAME) -> str:
    """The URI tagloop will use: the external one as given, or the embedded server's `dbname`."""
    if database_url:
        check_url(database_url)
        return database_url
    admin = embedded.ensure_running(home)
    ensure_database(admin, dbname)
    return with_dbname(admin, dbname)


def check_url(url: str) -> None:
    """A clear error for a DATABASE_URL libpq cannot read (the value is not echoed: it may hold a
    password)."""
    scheme = url.split("://", 1)[0] if "://" in url else None
    try:
        if scheme not in (None, "postgresql", "postgres"):
            raise ValueError(scheme)
        conninfo_to_dict(url)
    except (psycopg.ProgrammingError, ValueError):
        raise DatabaseError(
            "DATABASE_URL is not a PostgreSQL connection string "
            "(expected postgresql://user[:password]@host[:port]/dbname or key=value pairs)"
        ) from None


def timeout_of(url: str) -> dict[str, Any]:
    """`connect_timeout` for libpq when neither the URL nor PGCONNECT_TIMEOUT sets one: without it,
    a host that accepts the TCP connection and never answers (a half-open firewall, a hung server)
    held every command, and a worker's start, for psycopg's own default of 130 s."""
    try:
        given = "connect_timeout" in conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = False
    return {} if given or os.environ.get("PGCONNECT_TIMEOUT") else {"connect_timeout": CONNECT_TIMEOUT}


SECRET_PARAMS = ("password", "sslpassword")  # the client key's passphrase is a secret too


def redacted(url: str) -> str:
    """The URL with its password and `sslpassword` replaced by ***, for display (URI or key=value
    form, a query parameter included)."""
    if "://" in url:
        url = re.sub(rf"([?&](?:{'|'.join(SECRET_PARAMS)})=)[^&]*", r"\1***", url)
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unreadable connection string)"
    for key in SECRET_PARAMS:
        if key in params:
            params[key] = "***"
    return make_conninfo("", **params)


def as_uri(url: str) -> str:
    """The connection string as a libpq URI (`tagloop db url`, SPEC §2): a URI as it is; key=value
    pairs as postgresql://user:password@host:port/dbname?other=…, percent-encoded, with a socket
    directory or several hosts (and their ports) as query parameters, where libpq reads them."""
    if re.match(r"postgres(?:ql)?://", url):
        return url
    params = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    quote = functools.partial(urllib.parse.quote, safe="")
    auth = ""
    if "user" in params:
        auth = quote(params.pop("user"))
        if "password" in params:
            auth += ":" + quote(params.pop("password"))
        auth += "@"
    host = params.get("host", "")
    netloc = ""
    if host and "/" not in host and "," not in host and "," not in params.get("port", ""):
        params.pop("host")
        netloc = f"[{urllib.parse.quote(host, safe=':')}]" if ":" in host else quote(host)  # IPv6, %zone
        if "port" in params:
            netloc += ":" + params.pop("port")
    path = "/" + quote(params.pop("dbname")) if "dbname" in params else ""
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="/,")
    return f"postgresql://{auth}{netloc}{path}" + (f"?{query}" if query else "")


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    host = str(params.get("host", ""))
    if host.startswith("/") and not params.get("port"):
        # keep the libpq URI form `postgresql://user@/db?host=/socket/dir` that psql accepts
        return f"postgresql://{params.get('user', 'postgres')}@/{dbname}?host={host}"
    return make_conninfo("", **params)


def ensure_database(admin_url: str, dbname: str) -> None:
    """Create `dbname` unless it exists; two commands creating it at once both succeed."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %(n)s", {"n": dbname}).fetchone()
        if not exists:
            # another command may create it in the meantime
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(dbname)))


def drop_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("drop database if exists {} with (force)").format(psycopg.sql.Identifier(dbname))
        )


def configure(conn: psycopg.Connection[Any]) -> None:
    """Per-connection set-up: pgvector types (the extension must exist: migration 0001)."""
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(
            "the database has no pgvector extension; tagloop needs pgvector "
            "(run `tagloop db migrate`, or install pgvector on that server)"
        ) from exc
    conn.commit()


def connect(
    url: str, *, migrate_schema: bool = True, vector_types: bool = True
) -> psycopg.Connection[dict[str, Any]]:
    """One connection with dict rows and pgvector types, the schema migrated if asked.
    `vector_types=False` skips registering pgvector (for looking at a database that may not be
    migrated yet, e.g. `tagloop db status` on a fresh home)."""
    try:
        conn = psycopg.connect(url, row_factory=dict_row, **timeout_of(url))
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise DatabaseError(f"cannot connect to the database: {first_line(exc)}") from exc
    if migrate_schema:
        run_migrations(conn)
    if vector_types:
        configure(conn)
    return conn


def run_migrations(conn: psycopg.Connection[Any]) -> list[migrate.Migration]:
    try:
        return migrate.migrate(conn)
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        raise DatabaseError(
            'pgvector is not installed on this PostgreSQL server (extension "vector" is missing); '
            "install pgvector there or unset DATABASE_URL to use tagloop's embedded server "
            f"({first_line(exc)})"
        ) from exc


def make_pool(url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 30.0) -> ConnectionPool:
    """A pool whose connections have dict rows and pgvector registered; opened and checked.
    `timeout`: how long `pool.connection()` waits for a connection before PoolTimeout."""
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, **timeout_of(url)},
        configure=configure,
        # a connection is checked as it is handed out: after a server restart every pooled one is
        # dead, and each would fail one request before the pool noticed (an empty query, ~0.1 ms)
        check=ConnectionPool.check_connection,
        timeout=timeout,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def retried(
    once: Callable[[], T], *, attempts: int = 3, on_retry: Callable[[BaseException], None] | None = None
) -> T:
    """`once()`, run again (up to `attempts` times in all) when PostgreSQL aborts it as a deadlock
    victim or a serialization failure; `once` runs a transaction of its own, which is rolled back
    before a retry. `on_retry` is told of each aborted attempt that is retried."""
    for attempt in range(1, attempts + 1):
        try:
            return once()
        except RETRIED as exc:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(exc)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def transact(pool: ConnectionPool, fn: Callable[..., T], *args: Any, attempts: int = 3, **kwargs: Any) -> T:
    """`fn(conn, *args, **kwargs)` in one committed transaction on a pooled connection, run again
    (`retried`) when PostgreSQL aborts it as a deadlock victim or a serialization failure: two
    writers of overlapping rows (items sharing tags, a user written twice at once) would otherwise
    see a transient error for a write that succeeds on retry. `fn` must only touch the database:
    the whole transaction is rolled back before a retry."""

    def once() -> T:
        with pool.connection() as conn, conn.transaction():
            return fn(conn, *args, **kwargs)

    return retried(once, attempts=attempts)


def transact_on(
    conn: psycopg.Connection[Any],
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """`fn()` in a transaction of its own on `conn` (which has none open: it commits), run again
    like `transact`'s."""

    def once() -> T:
        with conn.transaction():
            return fn()

    return retried(once, attempts=attempts, on_retry=on_retry)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for one-line logs
    and errors."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
