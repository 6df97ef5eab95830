"""`tagloop report …`: pages about what tagloop knows. `report user ID [--out DIR] [--at TS]`
writes a "Wrapped"-style page for one user (evals/wrapped.py) and prints its summary. --out is
created (and checked) before the store is read; the page path printed, and `page` in --json, is
absolute."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from tagloop.agent.cli_common import instant
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput

MAX_DAYS = 36_500  # --days: 100 years

report_app = typer.Typer(help="Reports from the store: a user's Wrapped-style summary.", no_args_is_help=True)


@report_app.callback()
def _reports() -> None:
    """Reports from the store (a group, so `report user ID` keeps its name as commands are added)."""


def _prepare_out(directory: Path) -> list[Path]:
    """Create --out now (InvalidInput if that fails); returns the folders created, deepest first,
    so that they can be removed again when the report fails."""
    if directory.exists() and not directory.is_dir():
        raise InvalidInput(f"--out {directory}: exists and is not a directory")
    created, folder = [], directory.absolute()
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".tagloop-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        _remove(created)
        raise InvalidInput(f"--out {directory}: cannot write there ({exc.strerror or exc})") from None
    return created


def _remove(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; only empty ones
        try:
            folder.rmdir()
        except OSError:
            return


def _window_start(at: datetime, days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be between 1 and {MAX_DAYS:,}, got {days:,}")
    try:
        at - timedelta(days=days)
    except OverflowError:
        raise InvalidInput(f"--days {days:,} reaches before year 1 from {at.isoformat()}") from None


@report_app.command("user")
def report_user(
    user_id: Annotated[str, typer.Argument(metavar="ID", help="The user's id.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory of the page (default ./wrapped-ID).")
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="As of this time (RFC 3339; default now).")] = None,
    days: Annotated[int, typer.Option("--days", help="Window in days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Top tags now vs DAYS ago, discoveries, listening clock (PNG) and how the profile moved."""
    from tagloop.agent.database import connect
    from tagloop.evals.wrapped import build_wrapped, write_wrapped

    when = instant(at, "--at")
    _window_start(when, days)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user_id)
    directory = out or Path(f"wrapped-{safe}")
    created = _prepare_out(directory)
    settings = load_settings()
    try:
        with connect(settings) as conn:
            wrapped = build_wrapped(
                conn, user_id, at=when, half_life_days=settings.profile_half_life_days, window_days=days
            )
        page = write_wrapped(wrapped, directory).absolute()
    except BaseException:
        _remove(created)
        raise
    if as_json:
        sys.stdout.write(json.dumps({**wrapped.summary(), "page": str(page)}) + "\n")
        return
    console = Console(markup=False)
    top = ", ".join(t for t, _ in wrapped.tags_now[:5])
    console.print(
        Text.assemble(
            (f"user {user_id}", "bold"),
            " — top tags: " + top if top else f" — no tagged listening up to {when:%Y-%m-%d}",
        )
    )
    if wrapped.similarity is not None:
        moved = f"profile similarity to {days} days ago: {wrapped.similarity}"
    elif wrapped.tags_now:
        moved = f"no tagged listening {days} days ago to compare with"
    else:
        moved = f"no profile yet to compare with {days} days ago"
    console.print(f"{moved}; {len(wrapped.discoveries)} discoveries; page: {page}")
