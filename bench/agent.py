"""Benchmark: full agent decisions/s through the graph versus the floor of one pgvector top-20 query
per user, both over the same connection pool, in one run.

Loads the seeded demo data set with N users (default 10,000) into its own database on the embedded
server (kept between runs), then for the same users:
- floor: one `order by tag_vec <#> profile limit 20` query per user (the user's profile passed in);
- full: every user through the decision graph in batches (templates, no LLM, send_now=false):
  context, the default candidate sources (settings; `--sources` to change; `cf` proposes nothing
  here unless `--train` trained a model: the output says so), policies with exact
  propensities and MMR over the candidates' tags, channel and send-hour bandits, guards, copy,
  outbox, decisions committed per batch.
With `--threads T` both sides run their batches on T threads, each with its own pooled connection
(pool size T), so they are compared like with like. The users are split into `--rounds` slices
(default 5); each slice is run by the floor and then by the full side, so a drift of the machine's
speed (the floor has swung 2,700-4,000 users/s between runs minutes apart) hits both sides alike.
Prints both rates over all rounds, their ratio (goal ≥ 0.5), the ratio per round, the peak RSS (loading
the data and training run in a child process, so it is the timed part's) and
the CPU per user of this process and of the local PostgreSQL processes for each side. The bench's
decisions are deleted afterwards so reruns measure the same work.

The co-likes table (tools/neighbors.py) is refreshed before the timed part when stale (a daily
job, as at the start of any run) and its time printed apart.

With `--train` the recommender is trained first (in a database of its own, kept between runs, so
the default runs stay comparable), and `cf` proposes candidates as in a deployment.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/agent.py [--users 10000] [--threads 1]
     [--home /tmp/tagloop-bench] [--train]

Numbers (10,000 users, 1 thread, 2 shared noisy cores, same run for both sides):
- before round 2 (per-user walks over events, JSON candidate log): floor 2,341 users/s, full 127,
  ratio 0.05, peak RSS 215 MiB.
- round 2 (item_neighbors + user_top_providers precomputed, one history statement per batch,
  per-run trending/newest caches, dense MMR, binary COPY of array candidate logs, GC paused per
  batch), two runs: floor 1,410 / 2,345 users/s, full 186 / 195, ratio 0.13 / 0.08, peak RSS 294 MiB.
  The goal (≥ 0.50) is not met: per user ~0.7 ms tags retrieval (top-50 unseen, HNSW iterative
  scan), ~0.7 ms record, ~0.5 ms slate, ~0.4 ms channel/time, ~0.3 ms merge, ~0.3 ms load.
- round 3 (Thompson propensities by a batched Simpson quadrature without quantile inversion,
  item tags and profiles read in binary and parsed with numpy, decisions/messages inserted as one
  orjson document per batch through jsonb_to_recordset, time zones cached, sparse MMR rows, tag
  columns compacted without a sort). Paired runs, round-2 code (e690393) then round-3 code, one
  after the other on the same data, load average 2.2-3.3 from other benchmarks (full users/s
  old → new, ratio old → new): 422 → 428 (0.11 → 0.20), 323 → 314 (0.12 → 0.09), 321 → 359
  (0.11 → 0.10), 331 → 472 (0.15 → 0.14); with a timer per node, 390 → 514 users/s. The floor
  swings 2,200-3,750 users/s between runs, so one pair means little; the node timers say ~25%
  less per decision on this data set (most of round 3 targets costs the demo data hardly has:
  per-user Thompson evidence, items with dozens of tags, many time zones — the simulator's
  Last.fm users). A first run right after loading the data measured 109 users/s (cold
  database); it is not a baseline.
  Unprofiled per-user time after (3,000 users, a timer per node): ~0.34 ms tags retrieval (pure
  database: one HNSW top-50 search with the seen items excluded, about the floor's own query),
  ~0.17 ms co-likes, ~0.14 ms merge, ~0.2 ms slate, ~0.11 ms item-tag matrix, ~0.18 ms decisions
  insert (server side), ~0.11 ms channel/time, ~0.08 ms load, ~0.1 ms trending/history — about
  1.8-1.9 ms. The goal needs ≤ ~0.6 ms per user at this floor (~0.3 ms per top-20 query), about
  twice the floor's single HNSW search, while a decision makes a larger one (k = 50, seen items
  excluded) plus the other sources and the write: not reachable with the pgvector-HNSW tag
  source as it is.
- round 4 (tag candidates: unfiltered top k + k/2, the seen items dropped in Python with the batch
  history, short users asked again with the server filter; the `<> all(seen)` filter was half of
  the search's server time). Quiet machine (load 0-0.3) before it: floor 3,090, full 494, ratio
  0.16; after, load ~1.8 from another engineer's experiments: floor 4,464, full 574, ratio 0.13
  (the floor swings more than the change). Per user (4,000 users, a timer per statement and per
  node, ~1.6 ms in all): waiting on the database ~0.52 ms (tag search 0.17, decisions insert 0.16,
  co-likes neighbours 0.07, history 0.04, messages insert 0.03, the rest 0.05) and ~1.1 ms of
  Python (merge 0.13, slate 0.19, item-tag matrix 0.11, channel/time 0.10, candidate rows and
  co-likes ranking ~0.15, decision rows and their JSON ~0.1, Plan/rng/features ~0.1, LangGraph
  ~0.07). Tried and dropped: an exact in-process scan of the item-tag matrix (0.5 ms per user on
  the demo's 171 tags, dense profiles: slower than the 0.11 ms HNSW search), neighbour lists read
  as arrays (no change), uncompressed decision arrays (insert -0.03 ms per user for 2.2x the
  table's size). What the goal needs: at a 0.22-0.32 ms floor the database work alone (0.52 ms)
  is already past the 0.45-0.64 ms budget, so the database has to work on the next batch while
  Python works on this one (pipelining across batches on the connection), and the Python part
  has to drop to ~0.5 ms, i.e. the candidates of a batch handled as arrays (merge, slate, log)
  rather than as one object per candidate.
- round 5 (pipelining within a batch, agent/pipeline.py: a batch of 200 goes through the graph in
  chunks of 25, 50, 50, 50, 25 in psycopg's pipeline mode; at the point where a chunk has done its
  last read, the previous chunk's inserts and the next chunk's reads — users' context, history,
  tag search, co-likes neighbours — are sent without waiting, and the graph pumps arriving rows
  into libpq between nodes so the server never blocks on a full socket; plus a dense unit-row
  tag matrix per chunk for MMR, and smaller Python cuts in merge, candidate logs and plans). The
  same bench (rounds) on the same machine minutes apart: round-4 code (a59c6b1) floor 3,950 / full
  641 users/s, ratio 0.16 (per-round median 0.16); round 5: 3,654 / 785 (0.21, median 0.22),
  4,029 / 878 (0.22, 0.23), 3,774 / 833 (0.22, 0.23), 3,935 / 824 (0.21), 3,488 / 826 (0.24),
  peak RSS 289-297 MiB. Full throughput +25-35%; the waits on the database inside `decide` fell
  from ~0.44 to ~0.22 ms per decision (what is left: the first chunk's reads and the last chunk's
  writes of each batch, which nothing can overlap within one batch's transaction).
  Where the time is now (CPU read from /proc, printed by this bench): per decision ~1.0 ms of this
  process and ~0.46-0.6 ms of the PostgreSQL server, against ~0.13 + 0.13-0.15 ms for one floor
  query. The goal (≤ ~0.53 ms per decision at a 3,800/s floor) therefore needs the Python side cut
  by about half *and* the server's work cut too (tag search top 75 ~0.15 ms, decision and outbox
  inserts ~0.19 ms per decision); overlap alone cannot reach it.
  Tried in round 5 and dropped: (a) a background thread reading the next chunk and writing the last
  one on the same connection: no gain — the reads' Python (rows, candidates, merge) then competes
  for the GIL and every result waits for a GIL hand-off (0.0 to -5%); (b) co-likes ranked in SQL
  on the server: 0.29 ms of server time per user (the per-seed neighbour lists cached per run
  cost ~0.05), which made the server the bottleneck (the next chunk's reads not ready in time);
  (c) batches of 500 or 1,000 instead of 200: no measurable change.
  Then the server CPU this bench prints showed runs whose server work per decision had doubled
  (0.55 -> 1.15 ms): after the bench's delete and a vacuum, `decisions` was empty by its
  statistics, so each message's foreign-key check was planned as a sequential scan, cached for
  the session while the table filled (tools/store/decisions.py now plans it with sequential scans
  off; tests/messaging/test_outbox_insert.py). With that, the greedy slot loop (policies/slate.py)
  and small cuts, three runs in a row: floor 3,590 / 3,605 / 3,759, full 828 / 818 / 848 users/s,
  ratio 0.23 / 0.23 / 0.23 (per-round medians 0.24 / 0.23 / 0.23), peak RSS 287-288 MiB; CPU per
  user: this process floor 0.13 ms, full 1.0 ms; server floor 0.13 ms, full 0.58-0.64 ms.
- round 6 (server work per statement, read with pg_stat_statements loaded on the bench's server for
  a 4,400-user run: 0.65 ms per decision, of which the tag search 0.19-0.22, the co-likes
  neighbours 0.16, the decision insert 0.11-0.12, history 0.04-0.06, the caps read 0.05-0.06):
  (a) the co-likes read joined `items` for every neighbour row, which the planner did as a hash
  of the whole 20,000-item catalogue per batch; neighbour lists are now read alone and the title
  and provider of the items in a user's top k read once per run per item (tools/neighbors.py):
  0.16 -> 0.04 ms; (b) the caps read (`runs.send_times`) ran a sequential scan of `messages` per
  chunk: a prepared statement keeps the generic plan made while the table was empty (the bench
  vacuums it before the timed part; a new install or a purge does the same), so it is now planned
  per execution: 0.06 -> 0.005 ms (tests/messaging/test_send_times_plan.py). Server CPU per
  decision 0.55-0.65 -> 0.50-0.51 ms. Throughput did not move, because Python is the bottleneck
  (~1.0-1.07 ms of CPU per decision). Two pairs alternating round-5 code (3714509) and round-6
  code on the same data: full 855 / 810 (round 5) and 858 / 822 (round 6) users/s, ratio 0.23 /
  0.22 against 0.24 / 0.25 (per-round medians 0.24 / 0.21 and 0.24 / 0.27).
  Tried and dropped: `choose_slate` for a whole chunk at once (a padded users × candidates array
  per slot, exact: the same picks, draws and propensities as per user on generated and on 550
  captured bench slates) — 212-255 µs per user either way, because the cost is the MMR rows
  (a 100 × 151 dense unit-row block per user, gathered, and one matrix-vector product per slot),
  not the per-user call overhead; the server has no lz4 for cheaper decision-row compression.
  This bench keeps one run context per connection for all its batches, but the worker built new
  candidate sources every claim cycle: each batch of 200 re-read the trending ranking (~0.2 s).
  The worker now keeps them with its run cache until its facts are renewed (agent/worker.py);
  bench/worker_sources.py measures it: 414-452 decisions/s with new sources per batch, 710-853
  with shared ones (ratio 1.7-1.9).
  Then fewer blocking reads per chunk (the names of users' top tags and the active CF model kept
  per run) and MMR on the chunk's unit rows as they are. Final round-6 code, two runs: floor
  3,722 / 3,791, full 863 / 898 users/s, ratio 0.23 / 0.24 (per-round medians 0.24; the first
  round, with the run's caches cold, 0.17-0.18), peak RSS 256 MiB; CPU per decision: this process
  0.98-1.02 ms, server 0.47-0.51 ms.
- round 7 (with a trained model, `--train`: every round before measured `cf` proposing nothing).
  With a model, the CF source folded every user in from their events (one dict row per history
  item, the user's last event looked up once per row) and searched the model's HNSW index with the
  seen filter on the server: 96 decisions/s, ratio 0.03, ~8 ms of server and ~3 ms of client CPU
  per decision. Now (tools/recommender/source.py, fold_batch.py): a user whose stored vector is
  fresh is searched with it on the server, unfiltered top 75, the seen items dropped with the
  batch history, the statement sent a chunk ahead; the fold-in inputs of the users the server finds
  stale are sent with it (one binary row per user) and only those users are searched with vectors
  passed in, in binary (text cost ~0.25 ms a vector); titles come from a per-run cache
  (tools/iteminfo.py). Fresh vectors, four runs: 318-392 decisions/s, ratio 0.10-0.11, server
  1.8-2.2 ms and client 1.3-1.7 ms per decision; every stored vector stale (event_seq moved back
  by one): 181 -> 331 decisions/s (0.06 -> 0.09). The HNSW search over the 384-dimensional model
  vectors alone costs ~0.7-0.9 ms of server per user at ef_search 75 (a floor query on the 170-tag
  sparse vectors 0.13 ms), so with a trained model the server is the bottleneck and 0.5 is out of
  reach here; halfvec and a 128-dimension subvector index were no cheaper or lost most of the
  recall. The default runs (no model) are unchanged: 0.23-0.24 for the old and the new code
  alternating. Found on the way: placing items added after training used COPY, which psycopg
  refuses in pipeline mode, so a worker with a trained model failed a batch every minute once a
  new item arrived (now an INSERT; tests/recommender/test_cf_source.py).
- round 8 (exact OPE replay, session 17): each decision now logs what an offline replay of its slate
  needs (long-tail candidates, providers' exposure; policies/slate.py `replay_inputs`) and MMR rows
  are scaled per item from its sparse entries, so a replay gets the same bits. First cut (rows scaled
  by scanning the dense chunk matrix): 760 -> 699 users/s; with the sparse scaling, pairs of runs
  minutes apart: pre-change code 760 / 834 users/s (ratio 0.23 / 0.22), new code 775 / 788 (0.23 /
  0.21); CPU per decision 1.06-1.17 ms here, 0.47-0.54 ms on the server for both.
- 2026-12-07 re-measure (`--users 10000`, no model; machine shared with two other jobs): floor
  3,058 users/s, full 620, ratio 0.20 (per round 0.14 0.22 0.22 0.24 0.24, median 0.22), peak RSS
  270 MiB; CPU per decision: this process 1.29 ms, server 0.77 ms (floor 0.14 / 0.17 ms). On a quiet
  machine (load 0.6) later that day: floor 3,379, full 705, ratio 0.21 (per round 0.18-0.23, median
  0.22), peak RSS 262 MiB; CPU per decision 1.26 ms here, 0.58 ms on the server.
- round 9 (with a trained model, `--train`; session of 2026-12-07): the CF source scores a chunk's
  users against the whole catalogue in this process when items × dimensions ≤ 16M
  (tools/recommender/exact.py; 20,000 × 384 here): one matrix product, the seen items masked, the
  exact top k; the users' fresh stored vectors are read a chunk ahead instead of searched on the
  server. Runs back to back, the HNSW path forced (`source.fits` patched to False) then the
  default: 309 users/s (ratio 0.09, per-round median 0.09; server 2.43 ms and this process 1.44 ms
  of CPU per decision) against 487 and 500 (0.14 and 0.15, medians 0.16; server 0.64-0.77 ms, this
  process 1.77-1.78 ms); peak RSS 527-528 MiB either way. Without a model nothing changed: after
  these commits and migration 0083 (an index on messages' decision), floor 3,792 users/s, full 792,
  ratio 0.21 (per-round median 0.21), peak RSS 258 MiB, CPU per decision 1.10 ms here, 0.53 ms on
  the server.
  Training the bench's model the first time sat for minutes in one statement (each user's last
  event, `max(seq)`, answered by walking the primary key backwards: the tables had no statistics
  yet); fixed (max(seq + 0), imports analyze), it trained in ~2 min.
- session 24 (2026-12-07, no model): floor 3,640 users/s, full 808, ratio 0.22 (per round 0.17
  0.23 0.24 0.24 0.24, median 0.24), peak RSS 257 MiB, CPU per decision 1.09 ms here and 0.53 ms
  on the server: unchanged (this session's agent changes were a run cache that grew by copying
  itself and an O(cache) set difference per chunk, ~4 µs per decision here). Where the ~0.9 ms of
  Python CPU per decision goes (thread CPU per part, 2,600 users): gather 0.35 (co-likes 0.10,
  tag rows 0.06, merge 0.07, item tags 0.04), policies 0.24 (`choose_slate` 0.14: ~10 numpy calls
  per slot, ~170 µs per slate alone; unit rows 0.04), channel/time 0.07, context 0.06, compose
  0.04, record 0.02, LangGraph ~0.03 (1.3 ms per 7-node invoke with no-op nodes). Chunks of 100
  instead of 50: 904-936 against 992-1,031 users/s (less overlap). The in-process exact tag search
  (`TAGLOOP_TAG_SEARCH=exact`, tools/tag_exact.py) was not measured here; on Last.fm (`tagloop run
  --all`, trained, two pairs) it ran 195 and 234 users/s against HNSW's 196 and 259.
- session 25 (2026-12-07, no model): floor 3,853 users/s, full 880, ratio 0.23 (per round 0.19
  0.23 0.23 0.25 0.27, median 0.23), peak RSS 258 MiB, CPU per decision 0.97 ms here and 0.53 ms on
  the server: unchanged. The exact tag search now takes one sparse × dense product per chunk and
  picks each user's k best from dense score rows (tools/tag_exact.py: 650 -> 320 µs per user on
  this data, identical results); with `TAGLOOP_TAG_SEARCH=exact` this bench ran 732 users/s (ratio
  0.18, median 0.20; CPU per decision 1.24 ms here, 0.32 ms on the server): it moves ~0.2 ms of
  server work into ~0.27 ms of Python, so HNSW stays the default. A py-spy profile of the full side
  (8,700 samples) is flat: no function above 4% of its own time; the largest inclusive parts are
  gathering candidates 33% (co-likes 10.5%, merge 6.6%), policies 30% (`choose_slate` 17%),
  context 8%, channel/time 8%.
- session 26 (2026-12-07, no model; no speed work, fixes from audits): this session's code floor
  3,784 / full 778 users/s, ratio 0.21 (per-round median 0.21; server 0.59 ms per decision), then
  the session-start code (c3f6184) on the same data 3,661 / 787, 0.21 (0.22; server 0.53 ms), then
  this session's again 3,648 / 809, 0.22 (0.22; server 0.50 ms): the same within noise (the message
  insert now joins its decision, a primary-key probe per message). CPU per decision here ~1.1 ms,
  peak RSS 257-258 MiB.
- session 27 (2026-12-08, no model; no speed work: fixes from audits, of which these touch the
  decision path: candidate sources skip message templates in SQL, the run cache reads each item's
  kind with its tags for the copy's wording, the tags source asks for declared interests only for
  users it found nothing for): floor 4,023 / full 873 users/s, ratio 0.22 (per round 0.21 0.21 0.21
  0.22 0.24, median 0.21), peak RSS 261 MiB, CPU per decision 0.99 ms here and 0.51 ms on the
  server: unchanged (a review audit ran beside it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from typing import Any

import psycopg

from tagloop.agent.context import RunContext, RunFacts
from tagloop.agent.runner import decide, load_facts, make_context, policy_of
from tagloop.agent.settings import Settings, load_settings
from tagloop.tools import neighbors
from tagloop.tools.ingest import demo
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.recommender import pg
from tagloop.tools.recommender.train import train
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


def _in_child(target: Callable[..., None], *args: Any) -> None:
    """Run a set-up step in a child process (its memory is not this process's peak RSS)."""
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        sys.exit(f"{target.__name__} failed (exit code {child.exitcode})")


def ensure_model(url: str, home: Path) -> None:
    """Train the recommender on the bench data unless a model is active (~2 min for 10,000 users)."""
    with db.connect(url) as conn:
        if pg.active_model(conn) is not None:
            return
        print("training the recommender on the bench data …", file=sys.stderr)
        report = train(conn, seed=0, home=home, progress=lambda line: print(line, file=sys.stderr))
        conn.commit()
        print(f"trained model {report.model_id} in {sum(report.seconds.values()):.0f} s", file=sys.stderr)


def _batched(
    pool: db.ConnectionPool, user_ids: list[str], threads: int, work: Callable[[Any, list[str]], None]
) -> float:
    """Run `work(conn, batch)` over all batches on `threads` threads; returns the seconds taken."""
    batches = [user_ids[i : i + BATCH] for i in range(0, len(user_ids), BATCH)]

    def one(batch: list[str]) -> None:
        with pool.connection() as conn:
            work(conn, batch)
            conn.commit()

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, batches))
    return time.perf_counter() - start


def floor_seconds(pool: db.ConnectionPool, user_ids: list[str], threads: int) -> float:
    def work(conn: Any, batch: list[str]) -> None:
        profiles = conn.execute(
            "select user_id, tags from user_profiles where user_id = any(%(u)s)", {"u": batch}
        ).fetchall()
        for p in profiles:
            conn.execute(_FLOOR, {"profile": p["tags"]}).fetchall()

    return _batched(pool, user_ids, threads, work)


class FullSide:
    """The decision side: one run over every round (timed from before the run's facts are read),
    one run context (run cache and candidate sources) per connection, as a worker keeps them across
    its batches until it renews its facts."""

    def __init__(self, pool: db.ConnectionPool, settings: Settings, run_key: str, threads: int) -> None:
        self.pool, self.settings, self.run_key, self.threads = pool, settings, run_key, threads
        self.policy = policy_of(settings)
        self.outcomes: Counter[str] = Counter()
        self.contexts: dict[int, RunContext] = {}
        self.facts: list[RunFacts] = []
        self.lock = threading.Lock()

    def seconds(self, user_ids: list[str]) -> float:
        return _batched(self.pool, user_ids, self.threads, self._work)

    def _work(self, conn: Any, batch: list[str]) -> None:
        with self.lock:
            if not self.facts:
                self.facts.append(load_facts(conn, NOW, self.policy))
        ctx = self.contexts.get(id(conn))
        if ctx is None:
            ctx = self.contexts[id(conn)] = make_context(
                conn,
                self.settings,
                now=NOW,
                run_key=self.run_key,
                policy=self.policy,
                facts=self.facts[0],
                channels={"file": FileChannel(self.settings.outbox_file)},
            )
        plans = decide(ctx, batch, trigger="schedule")
        with self.lock:
            self.outcomes.update(p.outcome for p in plans.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--home", type=Path, default=Path("/tmp/tagloop-bench"))
    ap.add_argument("--sources", default=None, help="candidate sources (default: the settings' default)")
    ap.add_argument("--threads", type=int, default=1, help="threads (and pooled connections) per side")
    ap.add_argument("--rounds", type=int, default=5, help="floor/full pairs over slices of the users")
    ap.add_argument(
        "--train",
        action="store_true",
        help="train the recommender first (in its own database, kept), so cf proposes as in a deployment",
    )
    args = ap.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    os.chmod(args.home, 0o755)
    url = db.resolve_url(
        os.environ.get("TAGLOOP_BENCH_DATABASE_URL"),
        args.home,
        dbname="tagloop_bench_agent_cf" if args.train else "tagloop_bench_agent",
    )
    _in_child(ensure_data, url, args.users, args.home)  # so the peak RSS printed is the timed part's
    if args.train:
        _in_child(ensure_model, url, args.home)
    with db.connect(url) as conn:  # the daily co-likes table, refreshed where runs start; timed apart
        start = time.perf_counter()
        refreshed = neighbors.refresh_if_stale(conn, NOW)
        conn.commit()
        refresh_s = time.perf_counter() - start
    settings = load_settings(home=args.home, database_url=url)
    if args.sources:
        settings = settings.model_copy(update={"candidate_sources": args.sources.split(",")})
    pool = db.make_pool(url, min_size=args.threads, max_size=max(args.threads, 2))
    with pool.connection() as conn:
        user_ids = [
            r["id"] for r in conn.execute("select id from users order by id limit %(n)s", {"n": args.users})
        ]
    run_key = f"bench|{time.time_ns()}"
    vacuum(url)
    full_side = FullSide(pool, settings, run_key, args.threads)
    size = -(-len(user_ids) // args.rounds)
    floor_s = full_s = 0.0
    ratios = []
    cpu = {"floor": [0.0, 0.0], "full": [0.0, 0.0]}  # side → [this process, database server] seconds
    for r in range(args.rounds):  # the floor's speed drifts by ±25% over minutes: pair the sides
        group = user_ids[r * size : (r + 1) * size]
        with cpu_of(cpu["floor"]):
            f = floor_seconds(pool, group, args.threads)
        with cpu_of(cpu["full"]):
            d = full_side.seconds(group)
        floor_s, full_s = floor_s + f, full_s + d
        ratios.append(f / d)
        print(f"round {r + 1}/{args.rounds}: {len(group):,} users, ratio {f / d:.2f}", file=sys.stderr)
    floor, full, outcomes = len(user_ids) / floor_s, len(user_ids) / full_s, dict(full_side.outcomes)
    with pool.connection() as conn:
        conn.execute("delete from decisions where run_key = %(k)s", {"k": run_key})
        trained = pg.active_model(conn) is not None
    pool.close()
    vacuum(url)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sources = ",".join(settings.candidate_sources)
    print(f"users: {len(user_ids):,}  threads: {args.threads}  sources: {sources}")
    if "cf" in settings.candidate_sources:
        print(
            "cf: a trained model is active and proposes candidates"
            if trained
            else "cf: no trained model in this database, so it proposes nothing (--train to train one)"
        )
    print(f"outcomes: {outcomes}")
    print(f"floor (one pgvector top-20 query per user): {floor:,.0f} users/s")
    print(f"full decision through the graph:            {full:,.0f} users/s")
    print(f"ratio full/floor: {full / floor:.2f}  (goal >= 0.50)")
    print(f"ratio per round (floor and full on the same users, one after the other): {sorted_ratios(ratios)}")
    print(f"peak RSS: {peak_mb:,.0f} MiB")
    ms = {side: [1000 * x / len(user_ids) for x in v] for side, v in cpu.items()}
    server = "n/a (no local postgres processes)" if not _postgres_pids() else None
    print(
        f"CPU per user, this process: floor {ms['floor'][0]:.3f} ms, full {ms['full'][0]:.3f} ms; "
        + (server or f"database server: floor {ms['floor'][1]:.3f} ms, full {ms['full'][1]:.3f} ms")
    )
    print(f"item_neighbors refresh: {f'{refresh_s:.1f} s' if refreshed else 'fresh, skipped'}")


def vacuum(url: str) -> None:
    """Vacuum the tables the full side writes (and a rerun deletes from), so autovacuum does not
    start on them inside a timed part."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum (analyze) decisions, messages")


@contextmanager
def cpu_of(acc: list[float]) -> Iterator[None]:
    """Add this process's CPU seconds and the local PostgreSQL processes' (backends, WAL writer:
    every process whose command is postgres) to `acc` — where the time of a decision goes when
    the database works while Python does."""
    start = (time.process_time(), _server_cpu())
    yield
    acc[0] += time.process_time() - start[0]
    acc[1] += _server_cpu() - start[1]


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _server_cpu() -> float:
    total = 0
    for pid in _postgres_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def sorted_ratios(ratios: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in sorted(ratios)) + f" (median {statistics.median(ratios):.2f})"


if __name__ == "__main__":
    main()
