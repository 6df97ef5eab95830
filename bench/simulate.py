"""Benchmark of `tagloop eval simulate`: wall time of N users × D days for the three presets, and
where it goes. The baseline, measured in the same run, is the real agent graph itself (`decide`):
the simulator's own work (outbox delivery ticks, response model, ingest + online profile update) is
reported as a ratio to it, and the whole run as a ratio to the 5-minute target.

    .venv/bin/python bench/simulate.py --users 1000 --days 30 [--jobs 2] [--seed 0] [--fast]

`--fast`: pgvector's HNSW tag search instead of the default exact search in the agents' processes.

The world database is built once and cached (its build time is printed apart and not counted).

Numbers (1,000 Last.fm users × 30 days; the README's table): 184 s wall for the three policies on a
quiet machine (goal 300 s, ratio 0.61), 90,000 decisions at 489 decisions/s, the simulator's own
work 0.20-0.27 of the graph's time; 293 s at load ~2 with other jobs running (session 18). Reward
per user-day: default 0.216, random 0.077, greedy 0.357.
2026-12-07, back to back, exact tag search in the process (now the default) then `--fast`: 215.8 s
(ratio 0.72, 417 decisions/s) and 212.6 s (0.71, 423 decisions/s); reward per user-day exact 0.214 /
0.076 / 0.357.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tagloop.agent.settings import load_settings
from tagloop.evals.simulate.command import simulate

TARGET_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="pgvector HNSW tag search instead of exact")
    args = ap.parse_args()
    exact = not args.fast
    settings = load_settings()
    # build (or reuse) the world first so its one-off build is not part of the timing
    t0 = time.perf_counter()
    simulate(settings, users=args.users, days=1, files=None, seed=args.seed, jobs=args.jobs, exact=exact)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    payload, _, runs = simulate(
        settings, users=args.users, days=args.days, files=None, seed=args.seed, jobs=args.jobs, exact=exact
    )
    total = time.perf_counter() - t0
    decisions = sum(sum(r.outcomes.values()) for r in runs.values())
    print(f"world build + 1-day warm-up: {warm:.1f}s (not counted)")
    print(
        f"{args.users} users × {args.days} days × {len(runs)} policies: {total:.1f}s wall, "
        f"{decisions} decisions, {decisions / total:.1f} decisions/s"
    )
    print(f"ratio to the {TARGET_S:.0f}s target: {total / TARGET_S:.2f}")
    for name, run in runs.items():
        t = run.timings
        decide = t.get("decide", 0.0)
        own = t.get("deliver", 0.0) + t.get("respond+ingest", 0.0)
        per = 1000.0 * decide / max(sum(run.outcomes.values()), 1)
        print(
            f"  {name:8s} decide (real graph, baseline) {decide:7.1f}s = {per:.1f} ms/decision; "
            f"deliver {t.get('deliver', 0.0):6.1f}s; respond+ingest {t.get('respond+ingest', 0.0):6.1f}s; "
            f"simulator/graph ratio {own / max(decide, 1e-9):.2f}"
        )
    for name, vals in payload["policies"].items():
        print(
            f"  {name:8s} reward/user-day {vals['reward_per_user_day']:.4f}  "
            f"unsubscribed {vals['unsubscribe_rate']:.3f}  "
            f"long-tail share {vals['long_tail_exposure_share']:.3f}  gini {vals['exposure_gini']:.4f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
