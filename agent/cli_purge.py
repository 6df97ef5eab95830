"""`tagloop db purge --older-than AGE`: delete decisions and finished messages older than AGE (`90d`,
`13w`; at least 90 days), as tools/store/retention.py says: pending messages and their decisions
stay, a sent message's recipient is kept for its unsubscribe link, events are not touched.
`--dry-run` counts without deleting.
Progress on stderr by tenths of the users; with --json, one JSON object. Registered on `tagloop db`
by agent/cli_db.py."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console

from tagloop.agent.cli_common import JsonFlag, emit
from tagloop.agent.services import Tenths
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput

out = Console(markup=False)
_AGE = re.compile(r"(\d{1,12})([dw]?)")
MAX_AGE = timedelta(days=36_500)


def parse_age(text: str) -> timedelta:
    """`90d`, `13w` or `90` (days)."""
    found = _AGE.fullmatch(text.strip().lower())
    if found is None:
        raise InvalidInput(f"--older-than: expected days like 90d or weeks like 13w, got {text!r}")
    days = int(found.group(1)) * (7 if found.group(2) == "w" else 1)
    if days > MAX_AGE.days:
        raise InvalidInput(f"--older-than: at most {MAX_AGE.days:,} days (100 years), got {text!r}")
    return timedelta(days=days)


def purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of what goes: 90d, 13w (at least 90 days).")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete decisions and finished messages older than --older-than (events are kept)."""
    from tagloop.agent.database import connect
    from tagloop.tools.store import retention

    age = parse_age(older_than)
    now = datetime.now(UTC)
    cutoff = now - age
    retention.check_cutoff(cutoff, now)  # before connecting: a refused age touches nothing
    with connect(load_settings()) as conn:
        row = conn.execute("select count(*) as n from users").fetchone()
        total = int(row["n"]) if row else 0
        conn.commit()
        tenths = Tenths(total)

        def progress(done: retention.Purged) -> None:
            if tenths.crossed(done.users):
                verb = "counted" if dry_run else "purged"
                print(
                    f"{verb} {done.users:,} of {total:,} user(s): {done.messages:,} message(s), "
                    f"{done.decisions:,} decision(s)",
                    file=sys.stderr,
                )

        found = retention.purge(conn, cutoff, now, dry_run=dry_run, progress=progress)
    data = {
        "cutoff": cutoff.isoformat(),
        "older_than_days": age.days,
        "dry_run": dry_run,
        "users": found.users,
        "messages": found.messages,
        "decisions": found.decisions,
    }
    if as_json:
        emit(data, True)
        return
    what = f"{found.messages:,} message(s) and {found.decisions:,} decision(s)"
    head = "would purge" if dry_run else "purged"
    tail = "; nothing deleted (--dry-run)" if dry_run else ""
    out.print(f"{head} {what} older than {cutoff:%Y-%m-%d %H:%M} UTC ({age.days} days){tail}", soft_wrap=True)
