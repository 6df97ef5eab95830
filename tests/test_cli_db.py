"""`tagloop db status` as a user reads it: the whole URL when piped, and a next step that works
(a server without pgvector is told what is missing, not to run `db migrate`, which would fail)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from tagloop.agent.cli_db import _next_step
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
