"""The database an entrypoint uses, from its settings: external `DATABASE_URL` or the embedded one,
and how a long-lived background connection gets over losing it (`recovered`)."""

from __future__ import annotations

import contextlib
import logging
from logging import DEBUG, WARNING
from typing import Any

import psycopg

from tagloop.agent.settings import Settings
from tagloop.tools.errors import TagloopError
from tagloop.tools.store import db

log = logging.getLogger("tagloop.database")


def database_url(settings: Settings) -> str:
    return db.resolve_url(settings.database_url, settings.home)


def connect(
    settings: Settings, *, migrate_schema: bool = True, vector_types: bool = True
) -> psycopg.Connection[Any]:
    return db.connect(database_url(settings), migrate_schema=migrate_schema, vector_types=vector_types)


def recovered(
    conn: psycopg.Connection[Any], settings: Settings, who: str, *, quiet: bool = False
) -> psycopg.Connection[Any]:
    """After a failed cycle of a background loop (worker, scheduler, profile folder): `conn` rolled
    back; or, when the connection is lost (a database restart, a failover, a killed backend), a new
    one and the old one closed; or, while the database is still unreachable, the broken `conn` as
    it is, for the next cycle to try again. Never raises. `quiet`: its warnings at DEBUG (a loop
    that retries often says an outage once itself)."""
    if not conn.closed and not conn.broken:
        try:
            conn.rollback()
            return conn
        except psycopg.Error as exc:
            log.log(DEBUG if quiet else WARNING, "%s: rollback failed: %s", who, type(exc).__name__)
            if not conn.broken and not conn.closed:
                return conn
    try:
        fresh = connect(settings, migrate_schema=False)
        fresh.commit()
    except (psycopg.Error, OSError, TagloopError) as exc:  # db.connect raises DatabaseError
        log.log(
            DEBUG if quiet else WARNING,
            "%s: database unreachable (%s); retrying next cycle",
            who,
            type(exc).__name__,
        )
        return conn
    with contextlib.suppress(psycopg.Error):
        conn.close()
    log.info("%s: reconnected to the database", who)
    return fresh
