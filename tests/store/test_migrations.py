"""Migrations: applied once, recorded, a second run a no-op; a server without pgvector is named."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import DatabaseError
from tagloop.tools.store import db, migrate


def test_migrating_twice_is_a_noop(pg_admin_url: str) -> None:
    name = "tagloop_test_migrate_twice"
    db.drop_database(pg_admin_url, name)
    db.ensure_database(pg_admin_url, name)
    url = db.with_dbname(pg_admin_url, name)
    try:
        with psycopg.connect(url) as conn:
            first = migrate.migrate(conn)
            second = migrate.migrate(conn)
            recorded = migrate.recorded(conn)
            ext = conn.execute("select extname from pg_extension where extname = 'vector'").fetchone()
        assert [m.version for m in first] == [m.version for m in migrate.available()]
        assert first[0].version == 1 and "vector" in first[0].sql
        assert second == []
        assert recorded == [(m.version, m.name) for m in migrate.available()]
        assert ext is not None
    finally:
        db.drop_database(pg_admin_url, name)


def test_migration_versions_are_unique_and_numbered() -> None:
    versions = [m.version for m in migrate.available()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_core_tables_exist(db: psycopg.Connection[Any]) -> None:
    rows = db.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
    tables = {r["tablename"] for r in rows}
    assert {
        "items",
        "tags",
        "item_tags",
        "providers",
        "users",
        "events",
        "user_profiles",
        "decisions",
        "messages",
        "schema_migrations",
    } <= tables
    kinds = {
        r["column_name"]: r["udt_name"]
        for r in db.execute(
            "select column_name, udt_name from information_schema.columns where table_name = 'user_profiles'"
        )
    }
    assert kinds["tags"] == "sparsevec" and kinds["embedding"] == "vector"


def test_database_without_pgvector_is_named(pg_admin_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a server lacking pgvector: the create-extension failure becomes a clear DatabaseError."""
    name = "tagloop_test_no_vector"
    db.drop_database(pg_admin_url, name)
    db.ensure_database(pg_admin_url, name)
    url = db.with_dbname(pg_admin_url, name)
    broken = migrate.Migration(1, "extensions", "create extension if not exists vector_not_installed_here;")
    monkeypatch.setattr(migrate, "available", lambda: [broken])
    try:
        with pytest.raises(DatabaseError, match="pgvector"):
            db.connect(url)
    finally:
        db.drop_database(pg_admin_url, name)
