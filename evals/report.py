"""A small report writer shared by the eval commands: one markdown page plus matplotlib PNGs.

    report = Report(Path("out"), title="OPE on OBD")
    report.add_heading("Estimates")
    report.add_text("Why DR-OS wins: …")
    report.add_table([{"estimator": "dm", "value": 0.0039}, …])
    report.add_figure(fig, "estimates")          # saved as out/estimates.png (Agg backend)
    path = report.write()                        # out/index.md (+ out/index.html)

Blocks are kept in order and nothing touches the disk until `add_figure` (which saves the PNG at
once) or `write`. The HTML page is the same content, escaped, for a browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tagloop.tools.errors import InvalidInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Cell = str | int | float | None
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _fmt(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Report:
    """Markdown (and HTML) page under `directory`, built block by block."""

    directory: Path
    title: str = "tagloop report"
    _md: list[str] = field(default_factory=list, init=False)
    _html: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_report_dir(self.directory)

    def add_heading(self, text: str, level: int = 2) -> Report:
        if not 1 <= level <= 6:
            raise InvalidInput(f"heading level must be 1..6, got {level}")
        self._md.append(f"{'#' * level} {text}")
        self._html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def add_text(self, text: str) -> Report:
        self._md.append(text)
        paragraphs = (html.escape(p).replace("\n", "<br>") for p in text.split("\n\n"))
        self._html.extend(f"<p>{p}</p>" for p in paragraphs)
        return self

    def add_table(self, rows: Sequence[Mapping[str, Cell]]) -> Report:
        """A table whose columns are the keys of the first row (in order); missing cells stay empty."""
        if not rows:
            raise InvalidInput("add_table needs at least one row")
        cols = list(rows[0].keys())
        cells = [[_fmt(row.get(c)) for c in cols] for row in rows]
        md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(c.replace("|", r"\|") for c in r) + " |" for r in cells]
        self._md.append("\n".join(md))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
        self._html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def add_figure(self, fig: Figure, name: str, caption: str = "") -> Path:
        """Save `fig` as DIR/name.png now (closing it if pyplot made it) and reference it from the page."""
        if not _NAME.match(name):
            raise InvalidInput(f"figure name {name!r} must be a plain file name (letters, digits, _ . -)")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        if fig.canvas.manager is not None:  # made through pyplot: release it
            import matplotlib.pyplot as plt

            plt.close(fig)
        alt = caption or name
        self._md.append(f"![{alt}]({path.name})" + (f"\n\n*{caption}*" if caption else ""))
        self._html.append(
            f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(alt)}">'
            + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "")
            + "</figure>"
        )
        return path

    def write(self, stem: str = "index") -> Path:
        """Write DIR/{stem}.md and DIR/{stem}.html; returns the markdown path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        md_path = self.directory / f"{stem}.md"
        md_path.write_text(f"# {self.title}\n\n" + "\n\n".join(self._md) + "\n", encoding="utf-8")
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
            "td,th{border:1px solid #ccc;padding:2px 8px}table{border-collapse:collapse}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self._html) + "</body></html>\n"
        )
        (self.directory / f"{stem}.html").write_text(page, encoding="utf-8")
        return md_path


def check_report_dir(directory: Path) -> None:
    """Refuse a `--report DIR` that is an existing file, before any long computation (`Report`
    makes the same check when it is built, after it)."""
    if directory.exists() and not directory.is_dir():
        raise InvalidInput(f"report directory {directory} exists and is not a directory")


def check_writable(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written (missing folder, a directory), before any
    long computation whose result it would hold."""
    if path.is_dir():
        raise InvalidInput(f"{option} {path}: is a directory, expected a file path")
    if not path.parent.is_dir():
        raise InvalidInput(f"{option} {path}: folder {path.parent} does not exist")


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A matplotlib figure with one axes, not registered with pyplot: no GUI backend, nothing to
    close, safe on servers and in tests (it renders through the Agg canvas when saved)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.add_subplot()
    return fig
