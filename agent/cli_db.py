"""`tagloop db …`: the database's URL, migrations, status and stop (`purge`: agent/cli_purge.py)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tagloop.agent.cli_common import JsonFlag, emit
from tagloop.agent.cli_purge import purge
from tagloop.agent.settings import load_settings

db_app = typer.Typer(help="The database: URL, migrations, status, purge.", no_args_is_help=True)
db_app.command("purge")(purge)

out = Console(markup=False)
err = Console(stderr=True, markup=False)


@db_app.command("url")
def db_url() -> None:
    """Print the libpq URI of the database in use (starting the embedded server if needed); a
    DATABASE_URL given as key=value pairs is printed as the same connection in URI form."""
    from tagloop.agent.database import database_url
    from tagloop.tools.store.db import as_uri

    sys.stdout.write(as_uri(database_url(load_settings())) + "\n")


@db_app.command("migrate")
def db_migrate(as_json: JsonFlag = False) -> None:
    """Apply pending schema migrations (a second run is a no-op)."""
    from tagloop.agent.database import connect
    from tagloop.tools.store import migrate

    with connect(load_settings(), migrate_schema=False, vector_types=False) as conn:  # no pgvector yet
        from tagloop.tools.store.db import run_migrations

        done = run_migrations(conn)
        superseded = [migrate.label(v, n) for v, n in migrate.state(conn).superseded]
    names = [m.label for m in done]
    if as_json:
        emit({"applied": names, **({"superseded": superseded} if superseded else {})}, True)
        return
    listed = ": " + ", ".join(names) if names else " (already up to date)"
    out.print(f"applied {len(names)} migration(s){listed}", soft_wrap=True)
    if superseded:
        out.print(_superseded_line(superseded), soft_wrap=True)


def _bytes(n: int) -> str:
    """A size in bytes as people read it (1.2 GiB)."""
    if n < 1024:
        return f"{n:,} bytes"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:,.1f} {units[0]}"


def _superseded_line(superseded: list[str]) -> str:
    return (
        "recorded by an older tagloop under a number since given to another migration: "
        f"{', '.join(superseded)} "
        "(this tagloop ships them renumbered and applied them under their new numbers)"
    )


@db_app.command("status")
def db_status(as_json: JsonFlag = False) -> None:
    """Show the database, applied/pending migrations and row counts."""
    from tagloop.agent.database import connect, database_url
    from tagloop.tools.store import migrate
    from tagloop.tools.store.db import redacted

    settings = load_settings()
    with connect(settings, migrate_schema=False, vector_types=False) as conn:
        state = migrate.state(conn)
        counts = {}
        if state.applied:
            for name in ("items", "tags", "users", "events", "user_profiles", "decisions", "messages"):
                if conn.execute("select to_regclass(%(n)s) is not null as e", {"n": name}).fetchone()["e"]:
                    row = conn.execute(f"select count(*) as n from {name}").fetchone()  # fixed table names
                    counts[name] = row["n"] if row else 0
        size = conn.execute("select pg_database_size(current_database()) as n").fetchone()["n"]
        version = conn.execute("select extversion from pg_extension where extname = 'vector'").fetchone()
        installable = conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone()
    pending = [m.label for m in state.pending]
    data = {
        "database": "external" if settings.database_url else "embedded",
        "url": redacted(database_url(settings)),
        "pgvector": version["extversion"] if version else None,
        "applied": [migrate.label(v, n) for v, n in state.applied],
        "pending": pending,
        "superseded": [migrate.label(v, n) for v, n in state.superseded],
        "unknown": [migrate.label(v, n) for v, n in state.unknown],
        "rows": counts,
        "size_bytes": size,
    }
    if as_json:
        emit(data, True)
        return
    table = Table(title="tagloop database")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key in ("database", "url"):
        table.add_row(key, str(data[key]))
    table.add_row(
        "pgvector",
        str(data["pgvector"])
        if version
        else (
            "not installed yet (the first migration creates it)"
            if installable
            else "not available on this server"
        ),
    )
    table.add_row("size", _bytes(size))
    table.add_row("migrations", f"{len(state.applied)} applied, {len(pending)} pending")
    if state.superseded:
        table.add_row("superseded", ", ".join(data["superseded"]))
    if state.unknown:
        table.add_row("unknown", ", ".join(data["unknown"]))
    step = _next_step(state, pgvector=bool(version), installable=bool(installable))
    if step:
        table.add_row("next step", step)
    for name, n in counts.items():
        table.add_row(f"rows: {name}", f"{n:,}")
    emit(table, False, table)


def _next_step(state: Any, *, pgvector: bool, installable: bool) -> str | None:
    """What `db status` tells the user to do next: nothing, upgrade, install pgvector, or migrate."""
    if state.unknown:
        return str(state.unknown_error())
    if not state.pending:
        return None
    if not pgvector and not installable:
        return (
            'install pgvector on this PostgreSQL server (extension "vector" is not available), then run '
            "tagloop db migrate; or unset DATABASE_URL to use tagloop's embedded server"
        )
    return "tagloop db migrate (any other command also migrates on first use)"


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (it is started again by the next command that needs it)."""
    from tagloop.tools.store import embedded

    home = load_settings().home
    others = embedded.other_clients(home)
    stopped = embedded.stop(home)
    out.print("stopped" if stopped else "the embedded server was not running")
    if stopped and others:
        counted = (
            f"{others} other connection(s) were open"
            if isinstance(others, int)
            else (f"other connections could not be counted ({others})")
        )
        err.print(
            f"warning: {counted} (a running `tagloop serve` or `worker`?): "
            "they start the server again when they reconnect; stop them first to keep it stopped"
        )
