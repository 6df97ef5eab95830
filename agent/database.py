"""The database an entrypoint uses, from its settings: external `DATABASE_URL` or the embedded one."""

from __future__ import annotations

from typing import Any

import psycopg

from tagloop.agent.settings import Settings
from tagloop.tools.store import db


def database_url(settings: Settings) -> str:
    return db.resolve_url(settings.database_url, settings.home)


def connect(
    settings: Settings, *, migrate_schema: bool = True, vector_types: bool = True
) -> psycopg.Connection[Any]:
    return db.connect(database_url(settings), migrate_schema=migrate_schema, vector_types=vector_types)
