"""`tagloop report …`: pages about what tagloop knows. `report user ID [--out DIR] [--at TS]`
writes a "Wrapped"-style page for one user (evals/wrapped.py) and prints its summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from tagloop.agent.cli_common import instant
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput

report_app = typer.Typer(help="Reports from the store: a user's Wrapped-style summary.", no_args_is_help=True)


@report_app.callback()
def _reports() -> None:
    """Reports from the store (a group, so `report user ID` keeps its name as commands are added)."""


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

    if days < 1:
        raise InvalidInput(f"--days must be at least 1, got {days}")
    settings = load_settings()
    with connect(settings) as conn:
        wrapped = build_wrapped(
            conn,
            user_id,
            at=instant(at, "--at"),
            half_life_days=settings.profile_half_life_days,
            window_days=days,
        )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user_id)
    page = write_wrapped(wrapped, out or Path(f"wrapped-{safe}"))
    if as_json:
        sys.stdout.write(json.dumps({**wrapped.summary(), "page": str(page)}) + "\n")
        return
    console = Console(markup=False)
    console.print(
        Text.assemble(
            (f"user {user_id}", "bold"), " — top tags: " + ", ".join(t for t, _ in wrapped.tags_now[:5])
        )
    )
    console.print(
        f"profile similarity to {days} days ago: {wrapped.similarity}; "
        f"{len(wrapped.discoveries)} discoveries; page: {page}"
    )
