"""Small pieces the `tagloop` command modules share: reading an RFC 3339 option, building a rich
table from rows, printing a result as one JSON object or as a table (`--json`: `JsonFlag`), and
checking and writing a --plot file."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tagloop.tools.errors import InvalidInput

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


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


def int_option(option: str, value: int, low: int = 1, high: int | None = None) -> int:
    """`value` of an integer option, or InvalidInput naming the option and the bound it breaks."""
    if value < low:
        raise InvalidInput(f"{option} must be at least {low:,}, got {value:,}")
    if high is not None and value > high:
        raise InvalidInput(f"{option} must be at most {high:,}, got {value:,}")
    return value


def table_of(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A table whose cells fold onto more lines when the terminal is narrow, never cut to '…' (on
    80 columns the trends table showed tags as 'drone-…' and dates as '2026-1…')."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


_out = Console(markup=False)
if not _out.is_terminal:  # a pipe or a file has no width to fit: tables are not squeezed into 80
    _out = Console(markup=False, width=200)


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    """`data` as one JSON line with --json; else the table, or `data` itself when there is none."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=_json_value) + "\n")
    elif table is not None:
        _out.print(table)
    else:
        _out.print(data)


def _json_value(value: Any) -> Any:
    """Times as RFC 3339 (`2026-12-07T06:11:05+00:00`, as everywhere else), the rest as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


PLOT_FORMATS = ("png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def plot_path(plot: Path | None) -> Path | None:
    """The file --plot will write (a name without an extension gets .png), checked before any work:
    not a directory, in an existing folder, a format matplotlib writes, and writable."""
    if plot is None:
        return None
    from tagloop.evals.report import check_writable

    if not str(plot) or plot.is_dir():
        raise InvalidInput(
            f"--plot {str(plot)!r}: is a directory or empty, expected a file such as trends.png"
        )
    path = plot if plot.suffix else plot.with_name(plot.name + ".png")
    check_writable(path, "--plot")
    fmt = path.suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        raise InvalidInput(f"--plot {path}: cannot draw .{fmt} files; use one of .{', .'.join(PLOT_FORMATS)}")
    try:
        if path.exists():
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied")
        else:  # create it now, so that a folder nobody may write to fails before the work
            path.open("xb").close()
            path.unlink()
    except OSError as exc:
        raise InvalidInput(f"--plot {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def save_plot(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=110, format=path.suffix[1:].lower())
    except OSError as exc:
        raise InvalidInput(f"--plot {path}: cannot write there ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return path
