"""`tagloop serve --workers 2`: the API runs in two worker processes (the scheduler in the parent
only) and ingests events with their profile updates exactly as one process does."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from api_support import AUTH, server_env
from test_api_crash import _free_port, _wait_healthy


def test_two_worker_processes_ingest_every_event_once(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(db_url, tmp_path)
    log = tmp_path / "server.log"
    tagloop = Path(sys.executable).parent / "tagloop"
    command = [str(tagloop), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        _wait_healthy(base, proc, log)
        users = [{"id": f"u{i}", "timezone": "UTC"} for i in range(5)]
        items = [{"id": f"i{i}", "tags": [f"t{i % 3}"]} for i in range(10)]
        assert httpx.post(f"{base}/v1/users", json=users, headers=AUTH).status_code == 200
        assert httpx.post(f"{base}/v1/items", json=items, headers=AUTH).status_code == 200
        batches = [
            [
                {"id": f"b{b}-{e}", "user_id": f"u{(b + e) % 5}", "type": "like", "item_id": f"i{e}"}
                for e in range(10)
            ]
            for b in range(12)
        ]

        def post(batch: list[dict[str, Any]]) -> int:
            return httpx.post(f"{base}/v1/events", json=batch, headers=AUTH, timeout=30).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(post, batches + batches[:3])) == [202] * 15  # 3 batches resent
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(workers) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    db.rollback()
    assert db.execute("select count(*) as n from events").fetchone() == {"n": 120}
    assert db.execute("select sum(n_events) as n from user_profiles").fetchone() == {"n": 120}
    assert "Traceback" not in log.read_text()


def test_inherited_listener_gets_tcp_nodelay() -> None:
    """uvicorn --workers binds its listener with proto 0, so asyncio leaves Nagle on for accepted
    connections (~40 ms per keep-alive request); the app's lifespan turns it off on the listener,
    bound or listening, and leaves connected sockets alone."""
    import socket

    from tagloop.agent.http.app import _nodelay_listeners

    bound = socket.socket(family=socket.AF_INET)  # as uvicorn's Config.bind_socket: proto 0
    bound.bind(("127.0.0.1", 0))
    listening = socket.socket(family=socket.AF_INET)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    client = socket.socket()
    try:
        assert bound.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert _nodelay_listeners() >= 2
        client.connect(listening.getsockname())
        assert bound.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted, _ = listening.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # inherited
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # not a listener
        assert _nodelay_listeners() >= 2
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # connected: left alone
    finally:
        for s in (bound, listening, client):
            s.close()


def test_serve_on_a_port_in_use_fails_before_deciding_anything(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """The scheduler would sweep (and decide and enqueue) before uvicorn found the port taken."""
    import socket

    env = server_env(db_url, tmp_path)
    tagloop = Path(sys.executable).parent / "tagloop"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(tagloop), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use (another server running?)"
    ]
    db.rollback()
    assert db.execute("select count(*) as n from decisions").fetchone() == {"n": 0}


def test_the_listen_check_tries_every_address_the_host_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's server binds every address of the host (`localhost` may be ::1 and 127.0.0.1):
    the port taken on the second one only must be found before the scheduler starts."""
    import socket

    from tagloop.agent import cli
    from tagloop.tools.errors import InvalidInput

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        both = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),  # free
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),  # taken
        ]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: both)
        with pytest.raises(InvalidInput, match="address already in use"):
            cli._check_listen("twohomes.test", port)
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: both[:1])
        cli._check_listen("twohomes.test", port)  # the free one alone is fine


def test_a_running_worker_logs_its_cycles_and_stops_on_sigterm(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    tagloop = Path(sys.executable).parent / "tagloop"
    proc = subprocess.Popen(
        [str(tagloop), "worker", "--interval", "0.2"],
        env=server_env(db_url, tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    import threading
    import time

    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:  # a few cycles logged, however slow the start on a loaded machine (a fixed 4 s was not)
        deadline = time.monotonic() + 90
        while sum("delivery claimed=" in line for line in lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    cycles = [line for line in stderr.splitlines() if "delivery claimed=" in line]
    assert cycles and all(line[:4].isdigit() for line in cycles)  # timestamped, like `serve`


def test_a_burst_of_interrupts_stops_the_worker(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """Ctrl-C pressed twice, or a supervisor signalling the process group: a handler that set the
    stop event itself deadlocked when the next signal arrived while it held the event's lock (every try of
    this burst hung); each try here must end within seconds."""
    import time

    tagloop = Path(sys.executable).parent / "tagloop"
    for _ in range(2):
        proc = subprocess.Popen(
            [str(tagloop), "worker"],  # between sweeps, waiting on the stop event (every try hung)
            env=server_env(db_url, tmp_path),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        while "running" not in proc.stderr.readline():
            assert proc.poll() is None, "the worker exited before it ran"
        time.sleep(2)
        start = time.perf_counter()
        while time.perf_counter() - start < 0.05:
            proc.send_signal(signal.SIGINT)
            time.sleep(2e-5)
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the worker hung after a burst of SIGINTs") from None
        # 0, or killed by a SIGINT of the burst that came after the interpreter, exiting, had
        # given the default handler back
        assert proc.returncode in (0, -signal.SIGINT), stderr
        assert "Traceback" not in stderr
