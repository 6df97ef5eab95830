"""Small pieces the `tagloop` command modules share: reading an RFC 3339 option, building a rich
table from rows, and printing a result as one JSON object or as a table."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
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


_out = Console(markup=False)


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    """`data` as one JSON line with --json; else the table, or `data` itself when there is none."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    elif table is not None:
        _out.print(table)
    else:
        _out.print(data)
