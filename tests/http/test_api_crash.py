"""Reliability: `tagloop serve` is killed with SIGKILL while several clients post events, then
restarted; clients retry what failed. Every event that got a 202 is stored exactly once, and every
stored event is folded into its user's profile exactly once (the folder's checkpoint advances in
the transaction that folds)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from api_support import AUTH, server_env, wait_folded

CLIENTS, BATCHES, PER_BATCH = 4, 25, 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    tagloop = Path(sys.executable).parent / "tagloop"
    return subprocess.Popen(
        [str(tagloop), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy within 60 s")


@pytest.mark.slow
def test_events_acknowledged_before_a_sigkill_are_stored_exactly_once(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(db_url, tmp_path)
    log = tmp_path / "server.log"
    proc = _start(port, env, log)
    try:
        _wait_healthy(base, proc, log)
        users = [{"id": f"u{i}", "timezone": "UTC"} for i in range(CLIENTS)]
        items = [{"id": f"i{i}", "tags": [f"t{i % 5}"]} for i in range(20)]
        assert httpx.post(f"{base}/v1/users", json=users, headers=AUTH).status_code == 200
        assert httpx.post(f"{base}/v1/items", json=items, headers=AUTH).status_code == 200

        acked: list[str] = []
        acked_lock = threading.Lock()
        failures: list[int] = []

        def client(n: int) -> None:
            with httpx.Client(base_url=base, headers=AUTH, timeout=5) as http:
                for b in range(BATCHES):
                    batch = [
                        {
                            "id": f"c{n}-b{b}-e{e}",
                            "user_id": f"u{n}",
                            "type": "play",
                            "item_id": f"i{(b + e) % 20}",
                        }
                        for e in range(PER_BATCH)
                    ]
                    deadline = time.monotonic() + 90
                    while True:
                        try:
                            response = http.post("/v1/events", json=batch)
                            if response.status_code == 202:
                                with acked_lock:
                                    acked.extend(e["id"] for e in batch)
                                break
                            failures.append(response.status_code)
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() > deadline:
                            raise AssertionError("a batch was never acknowledged")
                        time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < CLIENTS * BATCHES * PER_BATCH // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        before_kill = len(acked)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        proc = _start(port, env, log)
        _wait_healthy(base, proc, log)
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        wait_folded(db, CLIENTS * BATCHES * PER_BATCH)  # the restarted server's folder catches up
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    total = CLIENTS * BATCHES * PER_BATCH
    assert 0 < before_kill < total  # the kill really happened mid-stream
    assert not [code for code in failures if code >= 500 and code != 503]
    db.rollback()
    stored = db.execute("select id from events").fetchall()
    ids = [r["id"] for r in stored]
    assert len(ids) == len(set(ids)) == total
    assert set(acked) == set(ids)
    folded = db.execute("select sum(n_events) as n from user_profiles").fetchone()
    assert folded is not None and folded["n"] == total


def test_serve_stops_cleanly_on_sigterm(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> None:
    """uvicorn raised SIGTERM again once it had stopped serving, so the process died (exit 143)
    before shutting its scheduler and profile folder down: messages claimed for delivery stayed
    `sending` until their lease ran out, and the one in flight was sent twice."""
    port = _free_port()
    log = tmp_path / "server.log"
    proc = _start(port, server_env(db_url, tmp_path), log)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "event=stopped" in text and "Traceback" not in text
