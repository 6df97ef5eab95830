"""Benchmark: HTTP event ingest (profiles folded from the event log by the profile folder running
in `tagloop serve`) against a raw COPY of the same events into the same table, in the same run.

1. Creates a scratch database (on $TAGLOOP_DATABASE_URL's server, else an embedded server in a temp
   TAGLOOP_HOME), loads users and tagged items.
2. Starts `tagloop serve` on 127.0.0.1 and posts Standard-Webhooks-signed batches of 100 events
   from concurrent clients for a fixed time; counts events acknowledged (202) and request latency;
   then reports the events folded into profiles during the run (events/s), the fold lag at its end
   and how long the folder took to catch up.
3. Stops the server, deletes those events and COPYs the very same rows into `events` in one
   transaction.
Prints events/s for both, their ratio (goal ≥ 25 %) and p50/p99 request latency (goal p99 < 100 ms).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ingest.py [--seconds 15] [--clients 3] [--workers 2]

The batches are serialized and signed before the timed part (the clients share the 2 cores with
the server). 3 clients is the default: the load at which the 2-core machine keeps p99 under 100 ms
while the HTTP rate stays well above 25 % of even the fastest COPY runs (~31 k events/s).

Results (2 shared cores; rounds 1-3: load average 5-8 from other jobs, `--seconds 15 --clients 4`):
- before (one worker, locked profile fold, text arrays): 404 events/s vs COPY 5,926 → 6.8 %,
  p50 675 ms, p99 2.5 s (colleague's quieter runs: 5.8-6.8 %, p99 1.1-1.3 s).
- after, `--workers 2`: 1,588-1,888 events/s vs COPY 13,148-14,163 → 12-14 %, p50 163-210 ms,
  p99 0.6-1.4 s; `--workers 1`: 1,029 events/s vs 8,700 → 11.8 %, p50 278 ms.
- round 3, event log + profile folder (the request inserts and commits, no profile locks; the folder
  folds from a checkpoint every 0.15 s at nice 10), `--workers 2`, load average ~4: HTTP
  4,664 / 4,719 / 4,989 events/s vs COPY 16,304 / 20,980 / 27,292 → 28.6 % / 22.5 % / 18.3 %
  (the COPY rate swings 16-27 k between runs on the shared cores, HTTP is steady at 4.7-5.0 k,
  3-3.7x round 2); p50 75-79 ms, p99 166-240 ms; folder 3.2-3.8 k events/s during the run, lag at
  its end 17-22 k events, caught up 2.4-4.1 s after the clients stopped (the second run had a 1 s
  fold interval: no better).
  The ratio goal was met in quiet-COPY runs only and p99 < 100 ms was not reached.
- round 4 (this version, 2 uvicorn workers; load average of the shared machine in brackets — other
  engineers' benchmarks run alongside):
  * `--workers N` lost TCP_NODELAY (uvicorn binds the listener with proto 0, asyncio then leaves
    Nagle on; Kludex/uvicorn#3149): every keep-alive request waited ~40 ms for the client's delayed
    ACK — even `/healthz` took 44 ms. The app's lifespan now sets TCP_NODELAY on the inherited
    listener: same code otherwise, 4 clients: 4,643 → 8,168 events/s, p50 80 → 43 ms.
  * batches pre-signed (and the client's heap frozen); the folder folds batches (>= 20,000 pending
    events or the oldest 1 s old: a fold's cost is mostly per user) with a cheaper per-event loop,
    its backend at the folder thread's nice 10; the request pipelines ingest lock + insert + commit
    (unknown refs caught by the foreign keys, then named); gc.freeze() after startup (a full
    collection of the ~90 k startup objects took ~100 ms, in the p99).
  * final code, `--clients 3` (the default) [load average 2.5-4.1]: 14,494 / 12,001 / 11,865
    events/s vs COPY 30,722 / 26,770 / 27,424 → 47.2 % / 44.8 % / 43.3 %; p50 19-22 ms, p99 59.7 /
    71.5 / 111.7 ms; folder 9.4 / 6.6 / 6.2 k events/s during the run, lag at its end 76-84 k
    events, caught up 4.3 / 5.9 / 6.7 s after the clients stopped (>= 1 s of it the batch wait).
    `--clients 2` [4.1-5.0]: 9,139 / 8,281 events/s vs COPY 22,822 / 21,727 → 40.0 % / 38.1 %,
    p50 19-20 ms, p99 92.6 / 91.4 ms; folder 7.4 / 6.0 k events/s, lag 26-33 k, caught up 2.7 /
    3.3 s. Runs on intermediate versions under heavier load (4.5-7): p99 119-149 ms at 3-4 clients.
  * CPU per 100-event request (/proc, 2 clients, one run): uvicorn workers 3.1-3.4 ms, Postgres
    ~4.7 ms for the insert (about what COPY spends per 100 rows: 10 indexes, 2 foreign keys) and
    ~1.5-2.5 ms for the fold, the folder's Python ~3.5 ms, client 0.4 ms: ~13-14 ms in all.
  * With the folder idle (batch threshold raised out of reach, one run [2.2-3.9]) the same server
    took 20,920 events/s (all 3,000 batches in 14.3 s) at p99 54 ms, no request over 80 ms; with it
    all in-flight requests stall together ~100-150 ms every 1-3 s (with the folds; not WAL: a
    fold's 4.7 MB of WAL delays a concurrent commit by <= 35 ms when measured alone) — what is left
    in the p99.
Both goals are met at 2-3 clients while the shared machine's load average stays under ~4; above
that p99 passes 100 ms. The folder gets what the requests (and other jobs) leave: it folds half
to three quarters of the ingest rate during the run and drains the rest 3-7 s after the clients
stop.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from standardwebhooks.webhooks import Webhook

from tagloop.agent.settings import load_settings
from tagloop.tools.store import db, embedded

SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-bench!").decode()
TYPES = ["play"] * 6 + ["skip"] * 2 + ["complete", "like", "save", "impression"]


def events_for(
    rng: np.random.Generator, n_users: int, n_items: int, count: int, prefix: str
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        out.append(
            {
                "id": f"{prefix}-{i}",
                "user_id": f"u{int(rng.integers(n_users))}",
                "type": TYPES[int(rng.integers(12))],
                "item_id": f"i{int(rng.integers(n_items))}",
                "ts": (now - timedelta(seconds=int(rng.integers(86400 * 7)))).isoformat(),
                "context": {
                    "device": ["phone", "desktop", "tv"][int(rng.integers(3))],
                    "source": ["playlist", "search", "radio"][int(rng.integers(3))],
                },
            }
        )
    return out


def seed_catalogue(url: str, n_users: int, n_items: int, rng: np.random.Generator) -> None:
    from tagloop.tools.ingest import loader
    from tagloop.tools.ingest.records import parse_item, parse_user

    tags = [f"tag{t}" for t in range(200)]
    with db.connect(url) as conn, conn.transaction():
        loader.store_users(
            conn, [parse_user({"id": f"u{u}", "timezone": "Europe/Berlin"}) for u in range(n_users)]
        )
        loader.store_items(
            conn,
            [
                parse_item(
                    {
                        "id": f"i{i}",
                        "provider": f"p{i % 300}",
                        "tags": list(rng.choice(tags, 4, replace=False)),
                    }
                )
                for i in range(n_items)
            ],
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed_requests(batches: list[list[dict[str, Any]]]) -> list[tuple[bytes, dict[str, str]]]:
    """Each batch serialized and signed up front (well inside the 5-minute tolerance of the run), so
    the timed part measures the server rather than the clients' JSON encoding and HMAC."""
    hook = Webhook(SECRET)
    now = datetime.now(UTC)
    out = []
    for batch in batches:
        body = json.dumps(batch).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": hook.sign(msg_id, now, body.decode()),
            "content-type": "application/json",
        }
        out.append((body, headers))
    return out


def http_phase(
    base: str, batches: list[list[dict[str, Any]]], clients: int, seconds: float
) -> tuple[list[dict[str, Any]], list[float], float]:
    lock = threading.Lock()
    sent: list[dict[str, Any]] = []
    latencies: list[float] = []
    queue = list(reversed(list(zip(batches, signed_requests(batches), strict=True))))
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while time.monotonic() < stop:
                with lock:
                    if not queue:
                        return
                    batch, (body, headers) = queue.pop()
                start = time.perf_counter()
                response = http.post("/v1/events", content=body, headers=headers)
                elapsed = time.perf_counter() - start
                if response.status_code != 202:
                    raise SystemExit(f"unexpected {response.status_code}: {response.text[:300]}")
                with lock:
                    latencies.append(elapsed)
                    sent.extend(batch)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    gc.collect()
    gc.freeze()  # the 3,000 prepared batches: out of the client's cyclic collector's way
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent, latencies, time.monotonic() - began


def fold_progress(url: str, timeout_s: float = 60.0) -> tuple[int, int, float]:
    """Events folded into profiles so far, events not yet folded, and seconds until caught up."""
    lag_sql = """select coalesce(sum(n_events), 0) as folded,
                        (select count(*) from events where seq > coalesce(
                            (select last_seq from profile_fold_state), 0)) as lag
                 from user_profiles"""
    with db.connect(url) as conn:
        row = conn.execute(lag_sql).fetchone()
        assert row is not None
        folded, lag = int(row["folded"]), int(row["lag"])
        conn.commit()
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            now = conn.execute(lag_sql).fetchone()
            conn.commit()
            if now is not None and now["lag"] == 0:
                break
            time.sleep(0.02)
        return folded, lag, time.perf_counter() - start


def copy_phase(url: str, events: list[dict[str, Any]]) -> float:
    with db.connect(url) as conn:
        conn.execute("delete from events")
        conn.commit()
        start = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(
                "copy events (id, user_id, type, item_id, ts, value, message_id, context) from stdin"
            ) as copy,
        ):
            for e in events:
                copy.write_row(
                    (
                        e["id"],
                        e["user_id"],
                        e["type"],
                        e["item_id"],
                        e["ts"],
                        None,
                        None,
                        json.dumps(e["context"]),
                    )
                )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="`tagloop serve --workers`")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    home = Path(tempfile.mkdtemp(prefix="tagloop-bench-ingest-"))
    admin = os.environ.get("TAGLOOP_DATABASE_URL") or embedded.ensure_running(home)
    name = f"tagloop_bench_ingest_{uuid.uuid4().hex[:8]}"
    db.ensure_database(admin, name)
    url = db.with_dbname(admin, name)
    proc = None
    try:
        seed_catalogue(url, args.users, args.items, rng)
        batches = [events_for(rng, args.users, args.items, 100, f"b{b}") for b in range(3000)]
        port = free_port()
        env = {
            **os.environ,
            "TAGLOOP_DATABASE_URL": url,
            "TAGLOOP_HOME": str(home),
            "TAGLOOP_WEBHOOK_SECRETS": SECRET,
            "TAGLOOP_API_KEYS": "bench-key",
            "TAGLOOP_RATE_LIMIT_PER_MINUTE": "100000000",
        }
        tagloop = Path(sys.executable).parent / "tagloop"
        command = [
            str(tagloop),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ]
        proc = subprocess.Popen(command, env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        sent, latencies, elapsed = http_phase(base, batches, args.clients, args.seconds)
        http_rate = len(sent) / elapsed
        folded, lag, catch_up = fold_progress(url)
        proc.send_signal(signal.SIGTERM)  # the COPY runs on a quiet database
        proc.wait(timeout=60)
        proc = None
        copy_seconds = copy_phase(url, sent)
        copy_rate = len(sent) / copy_seconds
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
        fold = load_settings()
        print(
            f"events: {len(sent):,} in {len(latencies):,} requests of 100 from {args.clients} clients, "
            f"{args.workers} server worker(s)"
        )
        print(
            f"HTTP ingest (signed, online profiles, triggers): {http_rate:,.0f} events/s in {elapsed:.1f} s"
        )
        print(f"raw COPY of the same events: {copy_rate:,.0f} events/s in {copy_seconds:.2f} s")
        print(f"ratio HTTP / COPY: {http_rate / copy_rate:.1%} (goal >= 25%)")
        print(f"request latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal p99 < 100 ms)")
        print(
            f"profile folder: {folded / elapsed:,.0f} events/s folded during the run; lag at its end "
            f"{lag:,} events, caught up {catch_up:.2f} s later (folds of >= {fold.fold_min_events:,} "
            f"pending events or once the oldest is {fold.fold_max_wait_seconds:g} s old)"
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        db.drop_database(admin, name)
        if not os.environ.get("TAGLOOP_DATABASE_URL"):
            embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
