"""Services behind the CLI and HTTP routes: the multi-step jobs (import a converted data set, run
the agent and summarise, the demo), so entrypoints stay thin."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tagloop.agent.cli_train import train_database
from tagloop.agent.database import connect
from tagloop.agent.runner import RunOutcome, run_users
from tagloop.agent.settings import Settings
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.profile_folder import FoldOptions, fold_pending
from tagloop.tools.profiles import load_profiles, rebuild_profiles
from tagloop.tools.store.catalogue import refresh_item_vectors, refresh_tag_counts

Log = Callable[[str], None]


def import_one(
    settings: Settings, kind: str, path: Path, *, skip_bad: bool, progress: Log | None = None
) -> dict[str, Any]:
    """`tagloop import KIND PATH`: the file in one transaction, then — for items — merge tag
    spelling variants the import brought in and refresh the taxonomy (tools/tagging/store.py).
    `progress` gets a line per tenth of the file read (or per 100,000 lines of a stream)."""
    from tagloop.tools.tagging.store import sync_vocabulary

    with connect(settings) as conn:
        result = import_file(
            conn,
            kind,
            path,
            skip_bad=skip_bad,
            extra_types=frozenset(settings.custom_event_types),
            progress=_tenths(kind, progress) if progress else None,
            log=progress,
        )
        summary = result.summary()
        if kind == "items" and result.stored:
            with conn.transaction():
                synced = sync_vocabulary(conn)
            summary["tag_variants_merged"] = sum(len(v) for v in synced.merged.values())
    return summary


LINES_SHOWN = 100_000  # without a known size, progress is shown every this many lines


def _tenths(kind: str, log: Log) -> Callable[[int, int, int | None], None]:
    """A progress callback that logs each tenth of the file read once, or, when the size is not
    known (a pipe, standard input, gzip data), the lines and bytes read every `LINES_SHOWN` lines."""
    shown = [0]

    def report(lines: int, done: int, size: int | None) -> None:
        if size:
            tenth = 10 * done // size
            if tenth > shown[0]:
                shown[0] = tenth
                log(f"{kind}: {10 * tenth}% of {size / 1e6:,.1f} MB read ({lines:,} lines)")
        elif lines // LINES_SHOWN > shown[0]:
            shown[0] = lines // LINES_SHOWN
            log(f"{kind}: {lines:,} lines ({done / 1e6:,.1f} MB) read")

    return report


def import_converted(
    settings: Settings, paths: dict[str, Path], progress: Log | None = None
) -> dict[str, Any]:
    """Import users, items, events (in that order), refresh tag vectors and rebuild profiles.
    Users already stored are left as they are: a converted data set's consent is made up, and
    importing it again must not undo an unsubscribe or an operator's change."""
    from tagloop.tools.tagging.store import sync_vocabulary

    summary: dict[str, Any] = {}
    with connect(settings) as conn:
        for kind in ("users", "items", "events"):
            if progress:
                progress(f"importing {kind} from {paths[kind]}")
            tenths = _tenths(kind, progress) if progress else None
            summary[kind] = import_file(
                conn, kind, paths[kind], progress=tenths, log=progress, keep_stored_users=True
            ).summary()
            if kind == "items":
                with conn.transaction():
                    sync_vocabulary(conn)  # merge spelling variants, families and genres
        with conn.transaction():
            refresh_tag_counts(conn)
            refresh_item_vectors(conn)
        if progress:
            progress("building profiles")
        # a batch of users at a time, each committed: folds and profile reads wait for one batch
        summary["profiles"] = rebuild_profiles(
            conn, now=datetime.now(UTC), half_life_days=settings.profile_half_life_days
        )
    return summary


def run_and_summarise(
    settings: Settings, *, user_ids: Sequence[str] | None, progress: Log | None = None
) -> list[RunOutcome]:
    with connect(settings) as conn:
        if user_ids is None:
            user_ids = [r["id"] for r in conn.execute("select id from users order by id")]
        else:
            known = {
                r["id"]
                for r in conn.execute("select id from users where id = any(%(ids)s)", {"ids": list(user_ids)})
            }
            unknown = [u for u in dict.fromkeys(user_ids) if u not in known]
            if unknown:
                raise InvalidInput(f"unknown user(s): {', '.join(repr(u) for u in unknown[:10])}")
        # events committed but not yet in the profiles (a worker or `serve` folds them in the
        # background): folded first, so the run sees what was just imported
        fold = replace(FoldOptions.from_settings(settings), min_events=0)
        folded = 0
        for _ in range(100):  # bounded: live ingest may keep adding events meanwhile
            n = fold_pending(conn, fold, now=datetime.now(UTC)).events
            folded += n
            if n < fold.max_events:
                break
            if progress:
                progress(f"folded {folded:,} pending event(s) into profiles")
        if progress:
            progress(f"running the agent for {len(user_ids):,} user(s)")
        decided = _decided_tenths(len(user_ids), progress) if progress else None
        return run_users(conn, settings, list(user_ids), progress=decided)


class Tenths:
    """Progress by tenths of a known total: `crossed(done)` is true once for each tenth passed,
    not at the end (the command's summary says that)."""

    def __init__(self, total: int) -> None:
        self.total, self.shown = total, 0

    def crossed(self, done: int) -> bool:
        tenth = 10 * done // self.total if self.total else 10
        if tenth > self.shown and done < self.total:
            self.shown = tenth
            return True
        return False


def _decided_tenths(total: int, log: Log) -> Callable[[int], None]:
    """A `run_users` progress callback that logs each tenth of the users decided, with the rate (a
    run over 100,000 users takes minutes)."""
    start, done, tenths = time.perf_counter(), [0], Tenths(total)

    def report(batch: int) -> None:
        done[0] += batch
        if tenths.crossed(done[0]):
            rate = done[0] / max(time.perf_counter() - start, 1e-9)
            log(f"decided {done[0]:,} of {total:,} user(s) ({rate:,.0f}/s)")

    return report


def run_demo(settings: Settings, *, users: int, seed: int, sample: int, console: Console, log: Log) -> None:
    from tagloop.tools.ingest import demo

    demo_dir = settings.home / "demo"
    marker = demo_dir / f".loaded-{seed}-{users}"
    with connect(settings) as conn:
        loaded = conn.execute("select count(*) as n from users where id like 'demo-u%%'").fetchone()
        have = bool(loaded and loaded["n"] >= users)
    if not (marker.exists() and have):
        log(f"generating demo data (seed {seed}, {users} users) in {demo_dir}")
        paths = demo.generate(demo_dir, seed=seed, sizes=demo.DemoSizes(users=users))
        summary = import_converted(settings, paths, progress=log)
        train_database(settings, progress=log)  # the recommender, served from Postgres (tagloop train)
        log(
            f"loaded {summary['items']['stored']:,} items, {summary['users']['stored']:,} users, "
            f"{summary['events']['stored']:,} events; {summary['profiles']:,} profiles"
        )
        marker.write_text(datetime.now(UTC).isoformat())
    else:
        log("demo data already loaded; running the agent")
    with connect(settings) as conn:
        ids = [
            r["id"]
            for r in conn.execute(
                "select id from users where id like 'demo-u%%' order by id limit %(n)s", {"n": sample}
            )
        ]
        outcomes = run_users(conn, settings, ids, channels={"file": FileChannel(settings.outbox_file)})
        profiles = load_profiles(conn, ids, top=4)
    table = Table(title=f"tagloop decided for {len(ids)} demo users", show_lines=True)
    for column in ("user", "top tags", "decision", "message"):
        table.add_column(column)
    for o in outcomes:
        tags = ", ".join(name for name, _ in profiles[o.user_id].top_tags)
        picks = ", ".join(f"{c['title']} (p={p:.2g})" for c, p in zip(o.chosen, o.propensities, strict=True))
        table.add_row(o.user_id, tags, f"{o.outcome} via {o.channel}\n{picks}", f"{o.title}\n{o.explanation}")
    console.print(table)
