"""The shared markdown/HTML + PNG report writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop.evals.report import Report, new_figure
from tagloop.tools.errors import InvalidInput


def test_blocks_are_written_in_order_to_markdown_and_html(tmp_path: Path) -> None:
    report = Report(tmp_path / "out", title="Demo")
    report.add_heading("Numbers").add_text("a < b\n\nsecond paragraph")
    report.add_table([{"name": "x|y", "value": 0.123456}, {"name": "z"}])
    fig = new_figure()
    fig.axes[0].plot([0, 1], [1, 0])
    png = report.add_figure(fig, "line", "a falling line")
    md_path = report.write()

    md = md_path.read_text()
    assert md.startswith("# Demo")
    assert md.index("## Numbers") < md.index("a < b") < md.index("| name | value |") < md.index("![a falling")
    assert r"x\|y" in md and "0.1235" in md
    assert "| z |  |" in md  # a missing cell stays empty
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "out" / "index.html").read_text()
    assert "a &lt; b" in html and '<img src="line.png"' in html


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.add_table([]), "at least one row"),
        (lambda r: r.add_heading("x", level=9), "level"),
        (lambda r: r.add_figure(new_figure(), "../escape"), "plain file name"),
    ],
)
def test_bad_report_calls_raise_named_errors(tmp_path: Path, call, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call(Report(tmp_path))


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InvalidInput, match="not a directory"):
        Report(tmp_path / "taken")
