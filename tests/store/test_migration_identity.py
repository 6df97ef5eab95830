"""Which migrations a database has: by version AND name (a renumbered migration is applied, not
taken for the one now at its old number), a database newer than this tagloop is refused, and a role
with DML grants only runs against a migrated database (no DDL when nothing is pending)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tagloop.tools.errors import DatabaseError
from tagloop.tools.store import db, migrate

TAGLOOP = os.path.join(os.path.dirname(sys.executable), "tagloop")


@pytest.fixture
def scratch_url(pg_admin_url: str) -> Iterator[str]:
    """A new empty database of its own, dropped after the test."""
    name = f"tagloop_ident_{uuid.uuid4().hex[:8]}"
    db.ensure_database(pg_admin_url, name)
    yield db.with_dbname(pg_admin_url, name)
    db.drop_database(pg_admin_url, name)


def _as_before_the_renumbering(url: str) -> None:
    """What tagloop at commit 1604980 left: schema_migrations keyed by version alone, 0080 being
    rec_user_folded_interests (renumbered 0081 since) and no item_tag_rejections."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "create table schema_migrations (version integer primary key, name text not null, "
            "applied_at timestamptz not null default now())"
        )
        for m in migrate.available():
            if m.name == "item_tag_rejections":
                continue
            version = 80 if m.name == "rec_user_folded_interests" else m.version
            conn.execute(m.sql.encode())
            conn.execute("insert into schema_migrations values (%s, %s)", (version, m.name))


def test_a_migration_renumbered_after_it_shipped_does_not_hide_the_one_now_at_its_number(
    scratch_url: str,
) -> None:
    _as_before_the_renumbering(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        before = migrate.state(conn)
        renumbered = ["0080_item_tag_rejections", "0081_rec_user_folded_interests"]
        assert [m.label for m in before.pending] == renumbered
        assert before.superseded == [(80, "rec_user_folded_interests")] and before.unknown == []
        applied = [m.label for m in migrate.migrate(conn)]
        assert applied == ["0080_item_tag_rejections", "0081_rec_user_folded_interests"]
        assert conn.execute("select to_regclass('item_tag_rejections') is not null").fetchone() == (True,)
        after = migrate.state(conn)
        assert after.pending == [] and after.superseded == [(80, "rec_user_folded_interests")]
        assert after.table_ready
        assert migrate.migrate(conn) == []
    db.connect(scratch_url).close()  # a command runs against it


def test_db_migrate_names_the_superseded_migration(
    scratch_url: str, tagloop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_before_the_renumbering(scratch_url)
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", scratch_url)
    run = subprocess.run([TAGLOOP, "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert "0080_item_tag_rejections" in run.stdout and "0080_rec_user_folded_interests" in run.stdout
    status = json.loads(
        subprocess.run(
            [TAGLOOP, "db", "status", "--json"], capture_output=True, text=True, env=os.environ.copy()
        ).stdout
    )
    assert status["pending"] == [] and status["superseded"] == ["0080_rec_user_folded_interests"]
    assert "0080_item_tag_rejections" in status["applied"] and status["unknown"] == []


def test_a_database_migrated_by_a_newer_tagloop_is_refused_but_shown(
    scratch_url: str, tagloop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.connect(scratch_url).close()
    with psycopg.connect(scratch_url) as conn:
        conn.execute("insert into schema_migrations (version, name) values (82, 'from_the_future')")
    latest = migrate.available()[-1].label
    expected = f"0082_from_the_future unknown to this tagloop \\(latest {latest}\\)"
    with pytest.raises(DatabaseError, match=expected):
        db.connect(scratch_url)
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", scratch_url)
    env = os.environ.copy()
    status = subprocess.run([TAGLOOP, "db", "status", "--json"], capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["unknown"] == ["0082_from_the_future"]
    refused = subprocess.run([TAGLOOP, "db", "migrate"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "upgrade tagloop" in refused.stderr
    assert "Traceback" not in refused.stderr


def _as_role(url: str, role: str) -> str:
    params = conninfo_to_dict(url)
    params["user"] = role
    return make_conninfo("", **params)


@pytest.fixture
def dml_role(scratch_url: str) -> Iterator[str]:
    """A login role with only DML grants in the (migrated) scratch database; returns its URL."""
    role = f"tagloop_app_{uuid.uuid4().hex[:8]}"
    db.connect(scratch_url).close()
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema public to {role}")
        conn.execute(f"revoke create on schema public from public, {role}")
        conn.execute(f"grant select, insert, update, delete on all tables in schema public to {role}")
        conn.execute(f"grant usage, select on all sequences in schema public to {role}")
    yield _as_role(scratch_url, role)
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(f"drop owned by {role}")
        conn.execute(f"drop role {role}")


def test_a_role_with_dml_grants_only_runs_against_a_migrated_database(
    dml_role: str, scratch_url: str
) -> None:
    with db.connect(dml_role) as conn:  # migrates (nothing to do) and registers pgvector
        assert conn.execute("select count(*) as n from items").fetchone() == {"n": 0}
        assert conn.execute("select current_user as u").fetchone()["u"].startswith("tagloop_app_")
    with psycopg.connect(scratch_url) as conn:  # keyed by version alone, as an older tagloop made it
        conn.execute("alter table schema_migrations drop constraint schema_migrations_pkey")
        conn.execute("alter table schema_migrations add primary key (version)")
    db.connect(dml_role).close()  # nothing pending: not re-keyed, nothing the role may not do
    with psycopg.connect(scratch_url) as conn:  # the owner removes the record of the newest migration
        conn.execute("delete from schema_migrations where version = %s", (migrate.available()[-1].version,))
    with pytest.raises(DatabaseError) as caught:
        db.connect(dml_role)
    message = str(caught.value)
    assert message.startswith("role tagloop_app_") and "may not create tables in schema public" in message
    assert "run `tagloop db migrate` as the database owner" in message


def test_a_role_that_may_create_but_does_not_own_the_tables_is_told_to_use_the_owner(
    dml_role: str, scratch_url: str
) -> None:
    """CREATE on the schema (the default for `public` before PostgreSQL 15) passes the first check;
    the pending migration then fails on a table the role does not own. The message must name the
    migration and the owner, not 'current transaction is aborted'."""
    # the newest migration with a statement only the table's owner may run (a data-only one, such
    # as an update of users, a DML role may apply)
    newest = [m for m in migrate.available() if "create index" in m.sql.lower()][-1]
    role = conninfo_to_dict(dml_role)["user"]
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(f"grant create on schema public to {role}")
        conn.execute("delete from schema_migrations where version = %s", (newest.version,))
        for name in re.findall(r"create index if not exists (\w+)", newest.sql, flags=re.IGNORECASE):
            conn.execute(f"drop index if exists {name}")
    with pytest.raises(DatabaseError) as caught:
        db.connect(dml_role)
    message = str(caught.value)
    assert message.startswith(f"role {role} may not apply migration {newest.label}"), message
    assert "run `tagloop db migrate` as the database owner" in message


def test_a_command_needing_the_owner_says_so_in_one_line(
    dml_role: str, scratch_url: str, tmp_path: Path
) -> None:
    """`tagloop train` rebuilds the model's vector index, which only the owner may do: a DML-only
    role gets one line saying to run it as the owner, not a bare 'must be owner of table'."""
    rows = {
        "users": [{"id": f"u{u}", "timezone": "UTC"} for u in range(6)],
        "items": [{"id": f"i{i}", "title": f"I{i}", "provider": "p", "tags": ["jazz"]} for i in range(6)],
        "events": [
            {
                "id": f"e{u}{i}",
                "user_id": f"u{u}",
                "type": "play",
                "item_id": f"i{i}",
                "ts": "2026-01-01T00:00:00Z",
            }
            for u in range(6)
            for i in range(6)
            if (u + i) % 2
        ],
    }
    tagloop = Path(sys.executable).with_name("tagloop")
    base = {k: v for k, v in os.environ.items() if not k.startswith("TAGLOOP_") and k != "DATABASE_URL"}
    base["TAGLOOP_HOME"] = str(tmp_path / "home")

    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**base, "TAGLOOP_DATABASE_URL": url}
        return subprocess.run([str(tagloop), *args], capture_output=True, text=True, env=env, timeout=300)

    for kind, records in rows.items():
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        assert run(scratch_url, "import", kind, str(path)).returncode == 0
    done = run(dml_role, "train")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "must be owner" in last and "run it as the database owner" in last, last
