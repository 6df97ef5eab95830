"""The embedded server's lifecycle across processes: commands started together on a fresh home all
come up (one starts and tunes it, the others wait), and a command never restarts a server that
others use (a tuning change waits for the next start)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tagloop.tools.store import embedded

# A command's first steps: find or start the server, create or find the `tagloop` database, connect,
# and use the connection for a moment.
COMMAND = """
import sys
from pathlib import Path
import psycopg
from tagloop.tools.store import db, embedded
embedded.TUNING.update(dict(a.split("=", 1) for a in sys.argv[2:]))
uri = db.resolve_url(None, Path(sys.argv[1]))
with psycopg.connect(uri) as conn:
    conn.execute("select pg_sleep(0.3)")
print(uri)
"""


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=180)
    return process.returncode, stdout, stderr


def command(home: Path, *tuning: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(home), *tuning],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh TAGLOOP_HOME (short path: the server's socket lives inside it); stopped after."""
    path = Path(tempfile.mkdtemp(prefix="tagloop-emb-"))
    yield path
    embedded.stop(path)
    shutil.rmtree(path, ignore_errors=True)


def _postmaster(home: Path) -> int:
    return int((embedded.pgdata_dir(home) / "postmaster.pid").read_text().splitlines()[0])


def test_commands_started_together_on_a_fresh_home_all_come_up(home: Path) -> None:
    started = [command(home) for _ in range(3)]
    results = [finish(p) for p in started]
    for code, _, stderr in results:
        assert code == 0, stderr
    assert len({stdout for _, stdout, _ in results}) == 1
    with psycopg.connect(results[0][1].strip()) as conn:
        assert conn.execute("show shared_buffers").fetchone() == (embedded.TUNING["shared_buffers"],)


def test_a_tuning_change_never_restarts_a_server_in_use(home: Path) -> None:
    code, uri, stderr = finish(command(home))
    assert code == 0, stderr
    uri = uri.strip()
    before = _postmaster(home)
    with psycopg.connect(uri, autocommit=True) as serving:  # `serve` holding a connection
        code, _, stderr = finish(command(home, "work_mem=24MB", "shared_buffers=256MB"))  # new TUNING
        assert code == 0, stderr
        assert serving.execute("select 1").fetchone() == (1,)  # not killed by a restart
        assert _postmaster(home) == before
        assert "shared_buffers at its next start" in stderr and "tagloop db stop" in stderr
        with psycopg.connect(uri) as fresh:  # what a reload applies is applied now
            assert fresh.execute("show work_mem").fetchone() == ("24MB",)
            assert fresh.execute("show shared_buffers").fetchone() == (embedded.TUNING["shared_buffers"],)
    embedded.stop(home)
    code, _, stderr = finish(command(home, "work_mem=24MB", "shared_buffers=256MB"))
    assert code == 0 and "next start" not in stderr, stderr
    with psycopg.connect(uri) as conn:
        assert conn.execute("show shared_buffers").fetchone() == ("256MB",)


def test_db_stop_warns_when_other_clients_will_start_the_server_again(home: Path) -> None:
    """A running `serve` or `worker` reconnects and starts the server again within a second: `db
    stop` must say so instead of a bare 'stopped' (someone stopping it to copy pgdata relies on it)."""
    uri = embedded.ensure_running(home)
    tagloop = Path(sys.executable).with_name("tagloop")
    env = {"PATH": "/usr/bin:/bin", "TAGLOOP_HOME": str(home), "HOME": str(home)}
    other = psycopg.connect(uri, autocommit=True)  # a service's connection
    try:
        held = subprocess.run(
            [str(tagloop), "db", "stop"], capture_output=True, text=True, env=env, timeout=120
        )
    finally:
        other.close()
    assert held.returncode == 0 and "stopped" in held.stdout
    assert "1 other connection" in held.stderr and "stop them first" in held.stderr
    embedded.ensure_running(home)
    quiet = subprocess.run([str(tagloop), "db", "stop"], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0 and "stopped" in quiet.stdout and "connection" not in quiet.stderr


def test_db_stop_stops_a_server_with_no_connection_slot_free(home: Path) -> None:
    """Counting the other clients needs a connection; when the server has none left (or is busy
    shutting down) the stop must still happen, with the reason on stderr, not exit 2."""
    uri = embedded.ensure_running(home)
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            for _ in range(1000):
                held.append(psycopg.connect(uri, autocommit=True))
        tagloop = Path(sys.executable).with_name("tagloop")
        env = {"PATH": "/usr/bin:/bin", "TAGLOOP_HOME": str(home), "HOME": str(home)}
        done = subprocess.run(
            [str(tagloop), "db", "stop"], capture_output=True, text=True, env=env, timeout=120
        )
    finally:
        for conn in held:
            conn.close()
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr
    assert "could not be counted" in done.stderr and "too many clients" in done.stderr
    assert not embedded.running(home)


@pytest.mark.parametrize("content", ["", "[12, 3", "{}"])
def test_a_broken_handle_list_left_by_a_killed_process_is_reset(home: Path, content: str) -> None:
    """The wheel rewrites pgdata/.handle_pids.json in place at every exit; a process killed
    mid-write left it empty, and every later command failed ('Expecting value')."""
    embedded.ensure_running(home)
    handles = embedded.pgdata_dir(home) / ".handle_pids.json"
    handles.write_text(content)
    tagloop = Path(sys.executable).with_name("tagloop")
    env = {"PATH": "/usr/bin:/bin", "TAGLOOP_HOME": str(home), "HOME": str(home)}
    done = subprocess.run([str(tagloop), "db", "url"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("postgresql://") and "Traceback" not in done.stderr
    assert isinstance(json.loads(handles.read_text()), list)


def test_db_stop_on_a_crashed_server_does_not_start_it(home: Path) -> None:
    import os
    import signal

    embedded.ensure_running(home)
    os.kill(_postmaster(home), signal.SIGKILL)
    tagloop = Path(sys.executable).with_name("tagloop")
    env = {"PATH": "/usr/bin:/bin", "TAGLOOP_HOME": str(home), "HOME": str(home)}
    done = subprocess.run([str(tagloop), "db", "stop"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not running" in done.stdout and "starting" not in done.stderr


def test_the_server_log_does_not_name_the_values_of_a_failed_statement(home: Path) -> None:
    """An event for an unknown (or erased) user fails its foreign key; PostgreSQL logged the error's
    DETAIL, `Key (user_id)=(…) is not present in table "users"`: user ids in the server log."""
    uri = embedded.ensure_running(home)
    embedded.stop(home)
    uri = embedded.ensure_running(home)  # the log file is written from a second start on
    with psycopg.connect(uri, autocommit=True) as conn:
        assert conn.execute("show log_error_verbosity").fetchone() == ("terse",)
        conn.execute("create table parent (id text primary key)")
        conn.execute("create table child (parent_id text references parent)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("insert into child values (%(id)s)", {"id": "alice.canary@example.test"})
    log = (embedded.pgdata_dir(home) / "log").read_text(errors="replace")
    assert "violates foreign key constraint" in log  # the error is logged, its values are not
    assert "alice.canary" not in log
