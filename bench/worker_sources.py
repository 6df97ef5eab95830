"""Benchmark: worker-style batches with candidate sources shared across batches (what the worker
does now, agent/worker.py) against new sources per batch (what it did), in one run.

The worker builds a run context per claim cycle (a batch of `run_batch_size` users, its clock a
little later each time), sharing its run facts and run cache; each side here does the same over
the same users (alternating, `--rounds` pairs), and differs only in whether the candidate sources —
and so their per-run reads: the trending ranking, the newest items per provider, co-likes neighbour
lists — are shared. Uses the data set of bench/agent.py (same `--home`; run that first).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/worker_sources.py [--users 3000] [--rounds 2]
     [--home /tmp/tagloop-bench]

Numbers (2 shared noisy cores, 10,000-user demo data, 3,000 users in batches of 200), two runs of
two rounds: new sources per batch 420 / 452 and 414 decisions/s, shared 765 / 853 and 710, ratio
1.82 / 1.89 and 1.71 (a first round that found the co-likes table stale and refreshed it inside
the timed part, 12 s, is left out).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tagloop.agent.context import RunCache
from tagloop.agent.runner import decide, load_facts, make_context, policy_of
from tagloop.agent.settings import Settings, load_settings
from tagloop.tools.candidates import sources_named
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.store import db

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)
BATCH = 200


def run(url: str, settings: Settings, user_ids: list[str], shared: bool) -> float:
    """Decisions/s over `user_ids` in worker-style batches; the bench's decisions are deleted."""
    with db.connect(url) as conn:
        policy = policy_of(settings)
        facts, cache = load_facts(conn, NOW, policy), RunCache()
        sources = sources_named(settings.candidate_sources, tag_search=settings.tag_search)
        key = f"bench-sources|{time.time_ns()}"
        start = time.perf_counter()
        for n, at in enumerate(range(0, len(user_ids), BATCH)):
            ctx = make_context(
                conn,
                settings,
                now=NOW + timedelta(seconds=3 * n),  # a worker's clock moves between cycles
                run_key=key,
                policy=policy,
                facts=facts,
                cache=cache,
                channels={"file": FileChannel(settings.outbox_file)},
                sources=sources if shared else None,
            )
            decide(ctx, user_ids[at : at + BATCH], trigger="schedule")
            conn.commit()
        rate = len(user_ids) / (time.perf_counter() - start)
        conn.execute("delete from decisions where run_key = %(k)s", {"k": key})
        conn.commit()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--home", type=Path, default=Path("/tmp/tagloop-bench"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    url = db.resolve_url(None, args.home, dbname="tagloop_bench_agent")
    settings = load_settings(home=args.home, database_url=url)
    with db.connect(url) as conn:
        rows = conn.execute("select id from users order by id limit %(n)s", {"n": args.users}).fetchall()
    user_ids = [r["id"] for r in rows]
    if not user_ids:
        sys.exit(f"no users in {url}: run bench/agent.py --home {args.home} first")
    for r in range(args.rounds):
        fresh = run(url, settings, user_ids, shared=False)
        kept = run(url, settings, user_ids, shared=True)
        print(
            f"round {r + 1}: new sources per batch {fresh:,.0f} decisions/s, shared {kept:,.0f}"
            f" (ratio {kept / fresh:.2f})"
        )


if __name__ == "__main__":
    main()
