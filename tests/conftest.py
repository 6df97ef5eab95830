"""Shared fixtures: where the real data sets are, skipping with a reason when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (CI has ../shared/data; a fresh clone does not)")
    return path


@pytest.fixture(scope="session")
def lastfm_dir() -> Path:
    """../shared/data/lastfm-2k (HetRec 2011 Last.fm)."""
    return _need(SHARED / "lastfm-2k")


@pytest.fixture(scope="session")
def lastfm_split() -> Path:
    """../shared/data/lastfm-2k/split: train.csv, test.csv, item_tags.csv."""
    return _need(SHARED / "lastfm-2k" / "split")


@pytest.fixture(scope="session")
def obd_dir() -> Path:
    """../shared/data/obd: Open Bandit Dataset sample, {random,bts}/all/all.csv."""
    return _need(SHARED / "obd")


# --- the real database -------------------------------------------------------------------------
# Tests run against real PostgreSQL + pgvector: the embedded server in a temporary TAGLOOP_HOME
# (or TAGLOOP_TEST_DATABASE_URL's server), with a fresh database for each test session.

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402


def truncate_all(conn: psycopg.Connection[Any]) -> None:
    """Empty every table but the migration record (tables added by later migrations included)."""
    rows = conn.execute(
        "select tablename from pg_tables where schemaname = 'public' and tablename <> 'schema_migrations'"
    ).fetchall()
    names = [r["tablename"] if isinstance(r, dict) else r[0] for r in rows]
    if names:
        conn.execute("truncate " + ", ".join(f'"{n}"' for n in names) + " restart identity cascade")
    conn.commit()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL of a PostgreSQL server with pgvector on which tests may create databases."""
    external = os.environ.get("TAGLOOP_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from tagloop.tools.store import embedded

    # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the data directory
    # from under a server that another pytest session on the same machine is still using.
    home = Path(tempfile.mkdtemp(prefix="tagloop-test-home-"))
    url = embedded.ensure_running(home)
    yield url
    embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    from tagloop.tools.store import db

    name = f"tagloop_test_{uuid.uuid4().hex[:10]}"
    db.ensure_database(pg_admin_url, name)
    url = db.with_dbname(pg_admin_url, name)
    db.connect(url).close()  # applies the migrations
    yield url
    db.drop_database(pg_admin_url, name)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the session database, emptied of data before the test."""
    from tagloop.tools.store import db as store_db

    conn = store_db.connect(db_url, migrate_schema=False)
    truncate_all(conn)
    yield conn
    conn.close()


@pytest.fixture
def tagloop_env(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: psycopg.Connection[Any]
) -> Path:
    """Environment for running tagloop entrypoints against the test database; returns TAGLOOP_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("TAGLOOP_HOME", str(home))
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", db_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TAGLOOP_CONFIG", raising=False)
    return home
