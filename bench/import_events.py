"""Benchmark: `tagloop import events` of N events (default one million) against a raw COPY of the
same rows into a bare table, both on the embedded database in the same run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/import_events.py [--events 1000000]

Prints seconds and events/s for both and their ratio, and the peak RSS before and after the
import (the import streams the file in chunks: before, it read the file whole, +2.3 GiB for the
255 MB events file of bench/agent.py's 10,000-user demo data). The import validates every line, checks
users/items exist, dedupes on event id and maintains the events table's indexes; raw COPY does none
of that, so it is the floor.

Numbers (one million events, 2 shared cores):
- 2026-12-07 (`--events 1000000`, the machine busy with two other jobs): import 58.3 s (17,160
  events/s) against raw COPY 3.5 s; peak RSS 129 -> 153 MiB.
- earlier, quieter machine (the README's figure): 46 s (21,600 events/s) against 3.1 s for the raw
  COPY; per step on 300,000 events: reading 0.5 s, parsing and validation 1.0 s, the user/item
  check 0.3 s, staging COPY and insert 10.7 s of 12.6 s. Streaming the file: peak RSS 93 -> 119 MiB
  (it was 93 -> 1,118 MiB reading it whole)."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tagloop.tools.ingest.loader import import_file
from tagloop.tools.store import db, embedded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    work = Path(tempfile.mkdtemp(prefix="tagloop-bench-import-"))
    try:
        _run(args, rng, work)
    finally:  # its own embedded server and files (~100 MB for a million events) go with it
        embedded.stop(work / "home")
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, rng: np.random.Generator, work: Path) -> None:
    admin = db.resolve_url(None, work / "home", dbname="postgres")
    db.ensure_database(admin, "bench_import")
    conn = db.connect(db.with_dbname(admin, "bench_import"))
    users = work / "users.jsonl"
    users.write_text("".join(json.dumps({"id": f"u{i}"}) + "\n" for i in range(args.users)))
    items = work / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"id": f"i{i}", "tags": [f"t{i % 300}"]}) + "\n" for i in range(args.items))
    )
    import_file(conn, "users", users)
    import_file(conn, "items", items)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    types = np.array(["play", "skip", "like", "complete"])
    u = rng.integers(0, args.users, args.events)
    i = rng.integers(0, args.items, args.events)
    t = rng.integers(0, 4, args.events)
    s = rng.integers(0, 86400 * 60, args.events)
    path = work / "events.jsonl"
    with path.open("w") as fh:
        for n in range(args.events):
            ts = (start + timedelta(seconds=int(s[n]))).isoformat()
            fh.write(
                f'{{"id":"e{n}","user_id":"u{u[n]}","type":"{types[t[n]]}","item_id":"i{i[n]}","ts":"{ts}"}}\n'
            )
    print(f"{args.events:,} events in {path} ({path.stat().st_size / 1e6:.0f} MB)")

    rss_before = _peak_rss_mib()
    began = time.perf_counter()
    result = import_file(conn, "events", path)
    imported = time.perf_counter() - began
    rss_after = _peak_rss_mib()

    conn.execute("create table raw_events (id text, user_id text, type text, item_id text, ts timestamptz)")
    began = time.perf_counter()
    with path.open() as fh, conn.cursor() as cur, cur.copy("copy raw_events from stdin") as copy:
        for line in fh:
            row = json.loads(line)
            copy.write_row((row["id"], row["user_id"], row["type"], row["item_id"], row["ts"]))
    conn.commit()
    raw = time.perf_counter() - began
    n = result.stored
    print(f"tagloop import: {imported:6.1f} s  {n / imported:10,.0f} events/s  (stored {n:,})")
    print(f"raw COPY:       {raw:6.1f} s  {args.events / raw:10,.0f} events/s")
    print(f"ratio import/raw: {(n / imported) / (args.events / raw):.2f}")
    size_mib = path.stat().st_size / 2**20
    print(
        f"peak RSS: {rss_before:,.0f} MiB before the import, {rss_after:,.0f} MiB after "
        f"(+{rss_after - rss_before:,.0f} MiB for a {size_mib:,.0f} MiB file; streamed in chunks, "
        "so it should not grow with the file)"
    )
    conn.close()
    db.drop_database(admin, "bench_import")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
