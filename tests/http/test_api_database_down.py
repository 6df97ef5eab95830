"""The database going away under a running app: every request, /healthz included, gets a prompt
503 problem+json with Retry-After (no traceback, no 30 s wait for the pool), and the app serves
again once the database is back. The app reaches the test database through a TCP relay that the
test cuts: a real outage as the app sees it (refused connections, dropped sockets)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from api_support import AUTH, make_settings
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tagloop.agent.http import create_app


class Relay:
    """Forwards 127.0.0.1:port to the database server until `cut()`, which closes the listener
    and every relayed connection; `restore()` listens again on the same port. While `frozen` is
    set nothing is forwarded, but every socket stays open (a stopped or hung server)."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self.frozen = threading.Event()
        self.restore()

    def _connect_target(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX) if isinstance(self.target, str) else socket.socket()
        s.connect(self.target)
        return s

    def restore(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        self._listener.listen()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = self._connect_target()
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                while self.frozen.is_set():  # a server that keeps its sockets but never answers
                    time.sleep(0.05)
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (Linux)
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def relayed(db_url: str) -> tuple[Relay, str]:
    params = conninfo_to_dict(db_url)
    host = str(params.get("host") or "localhost")
    port = int(params.get("port") or 5432)
    target: tuple[str, int] | str = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    relay = Relay(target)
    return relay, make_conninfo("", **{**params, "host": "127.0.0.1", "port": str(relay.port)})


def test_a_database_outage_is_a_prompt_503_and_the_app_recovers(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path, caplog: Any
) -> None:
    relay, url = relayed(db_url)
    app = create_app(make_settings(url, tmp_path), pool_size=2, pool_timeout=1.0)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        relay.cut()
        with caplog.at_level(logging.WARNING):
            for method, path, body in (
                ("GET", "/healthz", None),
                ("GET", "/healthz", None),
                ("PUT", "/v1/users/u1", {"timezone": "UTC"}),
                ("GET", "/v1/users/u1/profile", None),
                ("POST", "/v1/events", {"user_id": "u1", "type": "play"}),
                ("GET", "/healthz", None),
            ):
                start = time.monotonic()
                response = client.request(method, path, json=body, headers=AUTH)
                assert time.monotonic() - start < 5, path
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["title"] == "database unavailable"
                assert int(response.headers["retry-after"]) >= 1
        assert not [r for r in caplog.records if r.exc_info]
        relay.restore()
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not recover"
            time.sleep(0.2)
        assert client.put("/v1/users/u1", json={"timezone": "UTC"}, headers=AUTH).status_code == 200
    relay.cut()


def test_metrics_are_served_while_the_database_is_down(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """/metrics answered 503 during an outage, so Prometheus lost every in-process series (latency,
    events, deliveries) exactly then; it now renders them with tagloop_database_up 0."""
    relay, url = relayed(db_url)
    app = create_app(make_settings(url, tmp_path), pool_size=2, pool_timeout=1.0)
    with TestClient(app) as client:
        up = client.get("/metrics", headers=AUTH)
        assert up.status_code == 200 and "tagloop_database_up 1.0" in up.text
        relay.cut()
        start = time.monotonic()
        down = client.get("/metrics", headers=AUTH)
        assert time.monotonic() - start < 5
        assert down.status_code == 200, down.text
        assert "tagloop_database_up 0.0" in down.text and "tagloop_http_request_duration_seconds" in down.text
        relay.restore()
        relay.frozen.set()  # a server that keeps its connections but never answers held the scrape
        try:
            start = time.monotonic()
            hung = client.get("/metrics", headers=AUTH)
            assert time.monotonic() - start < 6 and "tagloop_database_up 0.0" in hung.text
        finally:
            relay.frozen.clear()
        deadline = time.monotonic() + 30
        while "tagloop_database_up 1.0" not in client.get("/metrics", headers=AUTH).text:
            assert time.monotonic() < deadline, "the scrape did not see the database again"
            time.sleep(0.2)
    relay.cut()


def test_healthz_is_a_503_within_seconds_when_the_database_hangs(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A server that keeps its connections but never answers (kill -STOP) held /healthz for as long
    as it slept (47 s, then a 200): an orchestrator could not tell."""
    relay, url = relayed(db_url)
    app = create_app(make_settings(url, tmp_path), pool_size=2, pool_timeout=1.0)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        relay.frozen.set()
        try:
            start = time.monotonic()
            response = client.get("/healthz")
            assert time.monotonic() - start < 8
            assert response.status_code == 503 and response.json()["title"] == "database unavailable"
        finally:
            relay.frozen.clear()
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "/healthz did not recover"
            time.sleep(0.2)
    relay.cut()


def test_after_a_database_restart_no_request_gets_a_dead_pooled_connection(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A server restart (`tagloop db stop` and the next command starting it) drops every pooled
    connection: each was handed out once more and failed its request with a 503 after the database
    was back. The pool checks a connection before handing it out."""
    app = create_app(make_settings(db_url, tmp_path), pool_size=3, pool_timeout=2.0)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.put("/v1/users/u1", json={"timezone": "UTC"}, headers=AUTH).status_code == 200
        db.rollback()
        killed = db.execute(
            """select count(pg_terminate_backend(pid)) as n from pg_stat_activity
               where datname = current_database() and pid <> pg_backend_pid()
                 and backend_type = 'client backend'"""
        ).fetchone()
        db.commit()
        assert killed["n"] >= 2  # the app's pooled connections (min size 2)
        time.sleep(0.2)
        codes = [client.get("/healthz").status_code for _ in range(4)]
        codes += [
            client.put("/v1/users/u1", json={"timezone": "UTC"}, headers=AUTH).status_code for _ in range(4)
        ]
    assert codes == [200] * 8
