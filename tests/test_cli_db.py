"""`tagloop db status` as a user reads it: the whole URL when piped, and a next step that works
(a server without pgvector is told what is missing, not to run `db migrate`, which would fail)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tagloop.agent.cli_db import _next_step
from tagloop.tools.errors import DatabaseError
from tagloop.tools.store import db as store_db
from tagloop.tools.store import migrate

TAGLOOP = Path(sys.executable).with_name("tagloop")


def test_db_status_piped_shows_the_whole_url(tagloop_env: Path, db_url: str) -> None:
    run = subprocess.run(
        [str(TAGLOOP), "db", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert run.returncode == 0, run.stderr
    shown = store_db.redacted(db_url)
    assert len(shown) > 60 and shown in run.stdout


def test_db_status_next_step_names_a_missing_pgvector(pg_admin_url: str) -> None:
    name = f"tagloop_nextstep_{uuid.uuid4().hex[:8]}"
    store_db.ensure_database(pg_admin_url, name)
    try:
        with psycopg.connect(store_db.with_dbname(pg_admin_url, name)) as conn:
            fresh = migrate.state(conn)
        missing = _next_step(fresh, pgvector=False, installable=False) or ""
        assert 'extension "vector" is not available' in missing and missing.startswith("install pgvector")
        assert "tagloop db migrate" in (_next_step(fresh, pgvector=False, installable=True) or "")
    finally:
        store_db.drop_database(pg_admin_url, name)


def test_as_uri_keeps_every_parameter_of_a_key_value_string() -> None:
    cases = [
        "host=db.example.com port=5433 dbname='tag loop' user=bob password='p@ss w:rd/%' sslmode=require",
        "host='/tmp/sock dir' dbname=x user=postgres",
        "host=::1 port=5432 dbname=x",
        "host=h1,h2 port=5432,5433 dbname=x target_session_attrs=read-write",
        "dbname=only",
    ]
    for conninfo in cases:
        uri = store_db.as_uri(conninfo)
        assert uri.startswith("postgresql://"), uri
        assert psycopg.conninfo.conninfo_to_dict(uri) == psycopg.conninfo.conninfo_to_dict(conninfo), uri
    assert store_db.as_uri("postgresql://a@b/c") == "postgresql://a@b/c"


def test_db_url_prints_a_key_value_database_url_as_a_uri_that_connects(
    tagloop_env: Path, db_url: str
) -> None:
    """SPEC §2: `tagloop db url` prints a libpq URI, also when DATABASE_URL is key=value pairs."""
    pairs = psycopg.conninfo.make_conninfo("", **psycopg.conninfo.conninfo_to_dict(db_url))
    assert "://" not in pairs
    run = subprocess.run(
        [str(TAGLOOP), "db", "url"],
        capture_output=True,
        text=True,
        env={**os.environ, "TAGLOOP_DATABASE_URL": pairs},
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout.strip()
    assert printed.startswith("postgresql://") and "\n" not in printed
    with psycopg.connect(printed) as a, psycopg.connect(db_url) as b:
        query = "select current_database(), inet_server_port()"
        assert a.execute(query).fetchone() == b.execute(query).fetchone()


def test_as_uri_reads_a_scheme_only_at_the_start_and_keeps_an_ipv6_zone() -> None:
    for conninfo in ("host=h dbname=x password='a://b'", "host=fe80::1%eth0 dbname=x"):
        uri = store_db.as_uri(conninfo)
        assert uri.startswith("postgresql://"), uri
        assert psycopg.conninfo.conninfo_to_dict(uri) == psycopg.conninfo.conninfo_to_dict(conninfo), uri


def test_a_server_that_accepts_and_never_answers_is_an_error_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No connect_timeout: a host that took the TCP connection and never answered held `tagloop db
    status` (any command, a worker's start) for psycopg's default of 130 s."""
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.setattr(store_db, "CONNECT_TIMEOUT", 1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the handshake; nobody ever reads or writes
        url = f"postgresql://a:b@127.0.0.1:{listener.getsockname()[1]}/x"
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"cannot connect to the database: .*timeout"):
            store_db.connect(url)
        assert time.monotonic() - started < 5
    assert store_db.timeout_of(url) == {"connect_timeout": 1}
    assert store_db.timeout_of(url + "?connect_timeout=30") == {}  # the URL's own is kept
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "30")
    assert store_db.timeout_of(url) == {}
