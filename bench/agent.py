"""Benchmark: full agent decisions/s through the graph versus the floor of one pgvector top-20 query
per user, both over the same connection pool, in one run.

Loads the seeded demo data set with N users (default 10,000) into its own database on the embedded
server (kept between runs), then for the same users:
- floor: one `order by tag_vec <#> profile limit 20` query per user (the user's profile passed in);
- full: every user through the decision graph in batches (templates, no LLM, send_now=false):
  context, four candidate sources, policies with exact propensities, channel and send-hour bandits,
  guards, copy, outbox, decisions committed per batch.
Prints both rates, their ratio (goal ≥ 0.5) and the peak RSS. The bench's decisions are deleted
afterwards so reruns measure the same work.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/agent.py [--users 10000] [--home /tmp/tagloop-bench]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tagloop.agent.runner import decide, load_facts, make_context, policy_of
from tagloop.agent.settings import Settings
from tagloop.tools.ingest import demo
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.store import db
from tagloop.tools.store.catalogue import refresh_item_vectors, refresh_tag_counts

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)
BATCH = 200
_FLOOR = """
select i.id from items i where i.tag_vec is not null
order by i.tag_vec <#> %(profile)s limit 20
"""


def ensure_data(url: str, users: int, work: Path) -> None:
    with db.connect(url) as conn:
        have = conn.execute("select count(*) as n from users").fetchone()
        if have and have["n"] >= users:
            return
        print(f"loading demo data: {users:,} users …", file=sys.stderr)
        sizes = demo.DemoSizes(users=users, providers=1000, items=20_000, days=28)
        paths = demo.generate(work / "demo", seed=11, sizes=sizes, now=NOW)
        for kind in ("users", "items", "events"):
            import_file(conn, kind, paths[kind])
        refresh_tag_counts(conn)
        refresh_item_vectors(conn)
        rebuild_profiles(conn, now=NOW, half_life_days=30)
        conn.commit()


def floor_rate(pool: db.ConnectionPool, user_ids: list[str]) -> float:
    start = time.perf_counter()
    with pool.connection() as conn:
        for i in range(0, len(user_ids), BATCH):
            batch = user_ids[i : i + BATCH]
            profiles = conn.execute(
                "select user_id, tags from user_profiles where user_id = any(%(u)s)", {"u": batch}
            ).fetchall()
            for p in profiles:
                conn.execute(_FLOOR, {"profile": p["tags"]}).fetchall()
            conn.commit()
    return len(user_ids) / (time.perf_counter() - start)


def full_rate(
    pool: db.ConnectionPool, settings: Settings, user_ids: list[str], run_key: str
) -> tuple[float, dict[str, int]]:
    policy = policy_of(settings)
    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    with pool.connection() as conn:
        facts = load_facts(conn, NOW, policy)
        ctx = make_context(
            conn,
            settings,
            now=NOW,
            run_key=run_key,
            policy=policy,
            facts=facts,
            channels={"file": FileChannel(settings.outbox_file)},
        )
        for i in range(0, len(user_ids), BATCH):
            plans = decide(ctx, user_ids[i : i + BATCH], trigger="schedule")
            conn.commit()
            for p in plans.values():
                outcomes[p.outcome] = outcomes.get(p.outcome, 0) + 1
    return len(user_ids) / (time.perf_counter() - start), outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--home", type=Path, default=Path("/tmp/tagloop-bench"))
    ap.add_argument(
        "--sources", default="tags,trending,new_from_providers,co_likes", help="candidate sources"
    )
    args = ap.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    os.chmod(args.home, 0o755)
    url = db.resolve_url(
        os.environ.get("TAGLOOP_BENCH_DATABASE_URL"), args.home, dbname="tagloop_bench_agent"
    )
    ensure_data(url, args.users, args.home)
    settings = Settings(home=args.home, database_url=url, candidate_sources=args.sources.split(","))
    pool = db.make_pool(url, min_size=1, max_size=2)
    with pool.connection() as conn:
        user_ids = [
            r["id"] for r in conn.execute("select id from users order by id limit %(n)s", {"n": args.users})
        ]
    run_key = f"bench|{time.time_ns()}"
    floor = floor_rate(pool, user_ids)
    full, outcomes = full_rate(pool, settings, user_ids, run_key)
    with pool.connection() as conn:
        conn.execute("delete from decisions where run_key = %(k)s", {"k": run_key})
    pool.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"users: {len(user_ids):,}  outcomes: {outcomes}")
    print(f"floor (one pgvector top-20 query per user): {floor:,.0f} users/s")
    print(f"full decision through the graph:            {full:,.0f} users/s")
    print(f"ratio full/floor: {full / floor:.2f}  (goal >= 0.50)")
    print(f"peak RSS: {peak_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
