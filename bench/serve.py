"""Benchmark: top-20 recommendations for one user served from Postgres (pgvector HNSW) versus a
numpy full scan of the same model, over the same users in one run.

Needs a database with data and a trained model (the database of the settings in use:
`TAGLOOP_DATABASE_URL` / `TAGLOOP_HOME`), e.g. Last.fm:
    tagloop import lastfm ../shared/data/lastfm-2k && tagloop train
For each of N users (default 1,000, seeded sample) it times, per request:
- `pg`        : the serving path without reasons (tools/recommender/serving.py `top_k`): ONE
                statement that reads the user's stored vector (rec_user_vectors, written by
                `tagloop train` and refreshed when stale) and runs the HNSW iterative scan with the
                seen items excluded in SQL; the settings, statement and commit pipelined (one round
                trip). A stale or missing vector falls back to the fold-in below and stores it;
- `pg+reasons`: serving.py `recommend`, the HTTP/CLI path: the same statement and the history the
                reasons need pipelined in one round trip, then the reasons in Python;
- `pg (stale)`: `pg` for a user without a fresh stored vector (row deleted first; a fifth of the
                users, after the rest): the fold-in below plus storing the vector;
- `pg-fold`   : the former path: read the user's events, fold the vector in (Python), then the
                HNSW query with it (two round trips);
- `pg-query`  : the HNSW query alone (vector already known);
- `numpy`     : the same history read and fold-in, then a full scan `item_vecs @ q` with the
                seen items masked and argpartition (the baseline: exact, in-process);
and reports p50/p95/p99 in milliseconds, the share of users served from a fresh stored vector,
recall@20 of the HNSW result against the exact scan, and the server-side time of the `pg`
statement (explain analyze).

Last run (2 shared cores, load average 3.8-4.4 from other engineers' benchmarks, model of
`tagloop train` on all Last.fm events, dim 384, 17,632 items, 1,000 users):
                    p50      p95      p99   (ms)
    pg             4.76    13.14    18.55   one statement from the stored vector (100% fresh)
    pg+reasons     6.43    13.70    20.75   (was 15.5 / 27.1 / 33.8 at load 3.8 before)
    pg-fold        8.51    22.58    42.47   the former `pg` path (p95 20.6 at low load, 26.6 at 3.8)
    pg-query       5.23    13.72    19.14
    numpy          6.48    16.47    30.57
    pg (stale)    10.73    24.01   103.86   refold + store, on the first request after new events
    pg statement server side p50 3.19, p95 8.53; client CPU p50 0.75; HNSW recall@20 vs exact 0.9974;
    top-20 overlap stored vs folded 1.0000. Other runs: load 3.2 pg p95 11.3, pg+reasons 12.5;
    load 7.0 pg p95 18.3, pg+reasons 20.4, pg-fold 30.7.

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/serve.py [--users 1000] [--k 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from psycopg import sql

from tagloop.agent.database import connect
from tagloop.agent.settings import load_settings
from tagloop.tools.recommender import pg, serving


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)} | {
        "mean": round(float(ms.mean()), 2)
    }


def _line(name: str, stats: dict[str, float]) -> None:
    p50, p95, p99 = stats["p50"], stats["p95"], stats["p99"]
    print(f"  {name:<12} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   p99 {p99:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with connect(load_settings()) as conn:
        served = serving.active(conn)
        if served is None:
            raise SystemExit("no trained model: run `tagloop train` first")
        serving.place_new_items(conn, served, force=True)
        conn.commit()
        users = [r["id"] for r in conn.execute("select id from users order by id")]
        rng = np.random.default_rng(args.seed)
        sample = [str(u) for u in rng.choice(users, size=min(args.users, len(users)), replace=False)]
        item_vecs = served.model.item_vectors()
        names = ("pg", "pg+reasons", "pg-fold", "pg-query", "numpy")
        times: dict[str, list[float]] = {name: [] for name in names}
        fresh = sum(bool(pg.top_k_stored(conn, served.row, u, args.k)) for u in sample)
        agree: list[float] = []
        recall: list[float] = []
        cpu_pg: list[float] = []
        server: list[float] = []
        explain = sql.SQL("explain (analyze, format json) ") + pg.top_k_stored_query(served.row)

        def pg_path(user: str) -> list[pg.Hit]:
            return serving.top_k(conn, user, args.k, served=served)

        def fold_path(user: str) -> list[pg.Hit]:
            history = serving.histories(conn, served, [user])[user]
            return pg.top_k(conn, served.row, serving.user_vector(served, history), history.seen, args.k)

        def numpy_path(user: str) -> np.ndarray:
            history = serving.histories(conn, served, [user])[user]
            scores = item_vecs @ serving.user_vector(served, history)
            scores[history.item_idx] = -np.inf
            top = np.argpartition(-scores, args.k)[: args.k]
            return top[np.argsort(-scores[top])]

        for user in sample[:20]:  # warm the caches and the plan
            pg_path(user)
            fold_path(user)
            numpy_path(user)
        for user in sample:
            start, cpu = time.perf_counter(), time.process_time()
            hits = pg_path(user)
            times["pg"].append(time.perf_counter() - start)
            cpu_pg.append(time.process_time() - cpu)
            start = time.perf_counter()
            folded = fold_path(user)
            times["pg-fold"].append(time.perf_counter() - start)
            agree.append(len({h.item_id for h in folded} & {h.item_id for h in hits}) / max(len(folded), 1))
            start = time.perf_counter()
            exact = numpy_path(user)
            times["numpy"].append(time.perf_counter() - start)
            history = serving.histories(conn, served, [user])[user]
            vec = serving.user_vector(served, history)
            start = time.perf_counter()
            pg.top_k(conn, served.row, vec, history.seen, args.k)
            times["pg-query"].append(time.perf_counter() - start)
            start = time.perf_counter()
            serving.recommend(conn, user, args.k, now=now, served=served)
            times["pg+reasons"].append(time.perf_counter() - start)
            with conn.transaction():
                pg._scan_settings(conn, max(64, args.k))
                analysed = conn.execute(explain, pg.stored_params(served.row, user, args.k)).fetchone()
            plan = analysed["QUERY PLAN"][0] if analysed else {}
            server.append((plan.get("Execution Time", 0.0) + plan.get("Planning Time", 0.0)) / 1000.0)
            truth = {str(served.model.item_ids[i]) for i in exact}
            recall.append(len(truth & {h.item_id for h in hits}) / max(len(truth), 1))
        stale: list[float] = []  # the fallback: a user whose stored vector is missing or stale
        for user in sample[: max(len(sample) // 5, 1)]:
            conn.execute("delete from rec_user_vectors where user_id = %(u)s", {"u": user})
            start = time.perf_counter()
            serving.top_k(conn, user, args.k, served=served)  # refolds and stores the vector
            stale.append(time.perf_counter() - start)
        times["pg (stale)"] = stale
        plan_rows = conn.execute(
            sql.SQL("explain ") + pg.top_k_stored_query(served.row),
            pg.stored_params(served.row, user, args.k),
        ).fetchall()
        conn.rollback()
    result = {
        "users": len(sample),
        "k": args.k,
        "model_id": served.row.id,
        "dim": served.row.dim,
        "items": int(item_vecs.shape[0]),
        "latency_ms": {name: percentiles(ts) for name, ts in times.items()},
        f"recall@{args.k}_hnsw_vs_exact": round(float(np.mean(recall)), 4),
        "stored_vector_fresh": round(fresh / max(len(sample), 1), 4),
        f"overlap@{args.k}_stored_vs_folded": round(float(np.mean(agree)), 4),
        "uses_hnsw_index": any("item_vectors_hnsw" in str(r) for r in plan_rows),
        "pg_query_server_ms": percentiles(server),
        # the baseline measured in the same run: the same top-k by an exact numpy scan in-process
        "pg_to_numpy_ratio": {
            q: round(percentiles(times["pg"])[q] / max(percentiles(times["numpy"])[q], 1e-9), 3)
            for q in ("p50", "p95")
        },
        "pg_client_cpu_ms": percentiles(cpu_pg),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['users']} users, top-{args.k} of {result['items']:,} items (model {served.row.id}, "
        f"dim {served.row.dim}); HNSW index used: {result['uses_hnsw_index']}"
    )
    for name, stats in result["latency_ms"].items():
        _line(name, stats)
    _line("pg statement, server side (explain analyze)", result["pg_query_server_ms"])
    ratio = result["pg_to_numpy_ratio"]
    print(f"  pg path ÷ numpy baseline (same run): p50 {ratio['p50']:.2f}x, p95 {ratio['p95']:.2f}x")
    _line("pg, client CPU", result["pg_client_cpu_ms"])
    print(f"  load average during the run: {result['load_average']} on {os.cpu_count()} cores")
    print(f"  recall@{args.k} of HNSW against the exact scan: {result[f'recall@{args.k}_hnsw_vs_exact']:.4f}")
    print(
        f"  served from a fresh stored vector: {result['stored_vector_fresh']:.1%} of users; top-{args.k} "
        f"overlap with the fold-in path {result[f'overlap@{args.k}_stored_vs_folded']:.4f}"
    )


if __name__ == "__main__":
    main()
