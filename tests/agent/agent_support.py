"""Helpers for agent tests: a small seeded demo data set loaded into the test database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from tagloop.tools.ingest import demo
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.store.catalogue import refresh_item_vectors


def load_demo(
    conn: psycopg.Connection[Any],
    directory: Path,
    now: datetime,
    users: int = 30,
    *,
    seed: int = 3,
    providers: int = 40,
    items: int = 300,
    days: int = 20,
) -> list[str]:
    sizes = demo.DemoSizes(users=users, providers=providers, items=items, days=days)
    paths = demo.generate(directory, seed=seed, sizes=sizes, now=now)
    for kind in ("users", "items", "events"):
        import_file(conn, kind, paths[kind])
    refresh_item_vectors(conn)
    rebuild_profiles(conn, now=now, half_life_days=30)
    conn.commit()
    return [r["id"] for r in conn.execute("select id from users order by id")]


# --- worker processes (spawned: top-level functions, arguments picklable) ----------------------


def _worker(url: str, home: str, name: str, on_claimed: Any = None) -> Any:
    from tagloop.agent.settings import Settings
    from tagloop.agent.worker import Worker
    from tagloop.tools.messaging.channels import FileChannel
    from tagloop.tools.store import db

    settings = Settings(
        home=Path(home),
        database_url=url,
        cadences={"daily": "1d"},
        cadence_spread=0.0,
        run_batch_size=7,
        candidate_sources=["tags", "trending"],
    )
    conn = db.connect(url, migrate_schema=False)
    conn.commit()
    return Worker(
        settings,
        conn,
        channels={"file": FileChannel(Path(home) / "inbox.jsonl")},
        name=name,
        on_claimed=on_claimed,
    )


def week_of_workers(
    url: str, home: str, name: str, start: datetime, days: int, barrier: Any, out: Any
) -> None:
    """Each simulated day: wait for every worker, drain what is due, report what it decided."""
    from datetime import timedelta

    worker = _worker(url, home, name)
    for day in range(days):
        now = start + timedelta(days=day, hours=1)
        worker.clock = lambda now=now: now
        barrier.wait(timeout=120)
        out.put((name, day, worker.run_once(deliver=False).decided))
        barrier.wait(timeout=120)


def stalled_worker(url: str, home: str, now: datetime, ready: str) -> None:
    """Claims a batch, says which users it holds, then hangs (to be killed with SIGKILL)."""
    import json
    import time

    def hang(rows: list[dict[str, Any]]) -> None:
        Path(ready).write_text(json.dumps([r["user_id"] for r in rows]))
        time.sleep(120)

    worker = _worker(url, home, "stalled", on_claimed=hang)
    worker.clock = lambda: now
    worker.run_once(deliver=False)
