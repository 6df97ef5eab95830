"""Small pieces the `tagloop` sub-command modules share: reading an RFC 3339 option and building
a rich table from rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from tagloop.tools.errors import InvalidInput


def instant(text: str | None, option: str) -> datetime:
    """The time given to `option` (naive means UTC); now when not given."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{option} {text!r}: expected an RFC 3339 time like 2026-01-05T12:00:00Z"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def table_of(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title)
    for name in columns:
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table
