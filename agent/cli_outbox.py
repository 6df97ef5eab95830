"""`tagloop outbox …`: the message outbox at a glance, and dead letters sent again.

`status` counts messages by status and channel (pending, sending, sent, dead, cancelled), how many
are due now (pending ones whose attempt time has come, and claims whose lease ran out: their worker
died or hung, and the next claim takes them again), and how late the oldest pending message is.
`retry` puts dead letters (`--all`, or `--id ID` repeated, optionally only those on `--channel`)
back to pending with their attempts reset, due now; consent, unsubscribes, quiet hours and caps are
checked again when each is sent. An `--id` that is not a dead letter refuses the whole request,
naming it; nothing is requeued.
Thin commands over tools/store/outbox.py; with --json, one JSON object (times in ISO 8601).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from tagloop.agent.cli_common import JsonFlag, emit, table_of
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput

outbox_app = typer.Typer(
    help="The message outbox: counts by status, dead letters sent again.", no_args_is_help=True
)
out = Console(markup=False)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def outbox_status(conn: Any, now: datetime) -> dict[str, Any]:
    """The `outbox status` report as of `now` (see the module docstring)."""
    from tagloop.tools.store import outbox as store

    totals = dict.fromkeys(store.OUTBOX_STATUSES, 0)
    channels: dict[str, dict[str, int]] = {}
    for r in store.outbox_counts(conn):
        totals[r["status"]] = totals.get(r["status"], 0) + r["n"]
        channels.setdefault(r["channel"], dict.fromkeys(store.OUTBOX_STATUSES, 0))[r["status"]] = r["n"]
    oldest = store.oldest_pending(conn, now)
    expired = store.expired_claims(conn, now)
    return {
        "at": now.isoformat(),
        "total": sum(totals.values()),
        "by_status": totals,
        "by_channel": channels,
        "due_now": store.due_count(conn, now) + expired["n"],
        "claims_expired": expired["n"],
        "oldest_claim_expired_at": _iso(expired["oldest"]),
        "oldest_pending": None
        if oldest is None
        else {
            "id": oldest["id"],
            "channel": oldest["channel"],
            "send_at": _iso(oldest["send_at"]),
            "next_attempt_at": _iso(oldest["next_attempt_at"]),
            "attempts": oldest["attempts"],
            "age_seconds": round((now - oldest["send_at"]).total_seconds(), 3),
        },
    }


@outbox_app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """Messages by status and channel, how many are due now, and the oldest pending one's age."""
    from tagloop.agent.database import connect

    with connect(load_settings()) as conn:
        data = outbox_status(conn, datetime.now(UTC))
    if as_json:
        emit(data, True)
        return
    statuses = list(data["by_status"])
    rows = [[ch, *(f"{counts[s]:,}" for s in statuses)] for ch, counts in data["by_channel"].items()]
    rows.append(["all", *(f"{data['by_status'][s]:,}" for s in statuses)])
    emit(data, False, table_of(f"outbox: {data['total']:,} message(s)", ["channel", *statuses], rows))
    oldest = data["oldest_pending"]
    late = (
        "none past its send time"
        if oldest is None
        else (
            f"oldest {_age(oldest['age_seconds'])} past its send time ({oldest['id']}, {oldest['channel']}, "
            f"{oldest['attempts']} attempt(s), next try {oldest['next_attempt_at']})"
        )
    )
    out.print(
        f"pending: {data['by_status']['pending']:,}, due now {data['due_now']:,}; {late}", soft_wrap=True
    )
    if data["claims_expired"]:
        out.print(
            f"sending: {data['claims_expired']:,} claim(s) expired with no worker holding them (the oldest "
            f"since {data['oldest_claim_expired_at']}): due now, the next worker's claim sends them",
            soft_wrap=True,
        )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


@outbox_app.command("retry")
def retry(
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A dead letter's message id (repeat for more).")
    ] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead letter (on --channel).")] = False,
    channel: Annotated[
        str | None, typer.Option("--channel", help="Only dead letters on this channel.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send dead letters again: back to pending, attempts reset, due now (the send-time checks of
    consent, unsubscribes, quiet hours and caps still apply). See `tagloop decisions dead-letters`."""
    from tagloop.agent.database import connect
    from tagloop.tools.store.outbox import retry_dead_letters

    if all_dead == bool(ids):
        raise InvalidInput("outbox retry needs either --all or one or more --id ID (not both)")
    now = datetime.now(UTC)
    with connect(load_settings()) as conn, conn.transaction():
        done = retry_dead_letters(conn, ids=None if all_dead else ids, channel=channel, now=now)
    data = {"retried": done, "count": len(done), "due_at": now.isoformat()}
    if as_json:
        emit(data, True)
        return
    where = f" on {channel}" if channel else ""
    out.print(
        f"requeued {len(done):,} dead letter(s){where}, due now"
        if done
        else f"no dead letters{where}: nothing requeued"
    )
