"""Where import data comes from and how it can be broken: a pipe or standard input is read exactly
once (a second open lost the first 8 KB), gzip data is decompressed, a socket is refused by name;
a CSV quote that is never closed is reported at its line instead of swallowing the rest of the
file, long fields are read, and a malformed JSON line names the right column."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.agent.services import _tenths
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.readers import LineError, RawRecord, RecordReader

TAGLOOP = Path(sys.executable).parent / "tagloop"


def _events(n: int) -> str:
    return "".join(
        json.dumps({"id": f"e{k}", "user_id": "u1", "type": "play", "item_id": "i1", "note": "x" * 40}) + "\n"
        for k in range(n)
    )


def _count(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("select count(*) as n from events").fetchone()["n"])


@pytest.mark.parametrize("where", ["-", "/dev/stdin"])
def test_a_pipe_on_stdin_is_read_once_and_whole(
    tagloop_env: Path, catalogue: psycopg.Connection[Any], where: str
) -> None:
    data = _events(200)  # ~19 KB: more than one buffered read of a pipe
    done = subprocess.run(
        ["sh", "-c", f'cat | "{TAGLOOP}" import events {where}'],
        input=data,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "events: 200 stored from 200 line(s)" in done.stdout
    assert "%" not in done.stderr and "Traceback" not in done.stderr
    assert _count(catalogue) == 200


def test_tab_separated_lines_without_a_name_saying_so_are_read_as_tsv(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """TSV was recognised by the .tsv suffix alone: from a pipe or an unnamed file its header read
    as one column ('the CSV header has no user_id, type column')."""
    unnamed = tmp_path / "events-export"
    unnamed.write_text("id\tuser_id\ttype\titem_id\ne1\tu1\tplay\ti1\ne2\tu1\tlike\ti1\n", encoding="utf-8")
    assert import_file(catalogue, "events", unnamed).stored == 2
    both = tmp_path / "commas-and-tabs"  # a comma in the header: CSV, as before
    both.write_text("id,user_id,type,item_id\ne3,u1,play,i1\n", encoding="utf-8")
    assert import_file(catalogue, "events", both).stored == 1


def test_gzip_is_read_by_name_and_by_its_bytes(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    named = tmp_path / "events.jsonl.gz"
    named.write_bytes(gzip.compress(_events(300).encode()))
    assert import_file(catalogue, "events", named).stored == 300
    csv_gz = tmp_path / "events-csv"  # no suffix at all: gzip by its magic bytes, CSV by its content
    csv_gz.write_bytes(gzip.compress(b"id,user_id,type,item_id\n" + b"c1,u1,play,i1\nc2,u1,skip,i1\n"))
    assert import_file(catalogue, "events", csv_gz).stored == 2
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(_events(300).encode())[:-40])
    with pytest.raises(InvalidInput, match=r"broken.jsonl.gz:.*the gzip stream cannot be read"):
        import_file(catalogue, "events", broken)
    assert _count(catalogue) == 302


def test_a_fifo_is_read_once(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    data = gzip.compress(_events(200).encode())  # as from <(zcat …) but still compressed

    def write() -> None:
        with fifo.open("wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[tuple[int, int, int | None]] = []
    result = import_file(catalogue, "events", fifo, progress=lambda *p: seen.append(p))
    writer.join()
    assert (result.read, result.stored) == (200, 200) and seen[-1][0] == 200 and seen[-1][2] is None


def test_a_socket_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(InvalidInput, match=r"s.sock: is a socket"):
            RecordReader(path)


def test_progress_without_a_size_counts_lines_and_bytes() -> None:
    logged: list[str] = []
    report = _tenths("events", logged.append)
    for lines in (40_000, 100_000, 180_000, 200_000):
        report(lines, lines * 100, None)
    assert logged == ["events: 100,000 lines (10.0 MB) read", "events: 200,000 lines (20.0 MB) read"]


def _csv_events(n: int) -> list[str]:
    return [f"e{k},u1,play,i1,note {k}\n" for k in range(n)]


def test_a_quote_never_closed_is_reported_at_its_line(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rows = _csv_events(100)
    rows[10] = 'e10,u1,play,i1,"12 inch\n'  # line 12 of the file
    path = tmp_path / "events.csv"
    path.write_text("id,user_id,type,item_id,note\n" + "".join(rows), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"events.csv:12: unterminated quoted field") as bad:
        import_file(catalogue, "events", path)
    assert "1 bad line(s)" in str(bad.value)
    result = import_file(catalogue, "events", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (99, [12])


def test_a_quote_closed_lines_later_is_reported_where_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = _csv_events(6)
    rows[1] = 'e1,u1,play,i1,"oops\n'
    rows[4] = 'e4,u1,play,i1,x" y\n'
    path.write_text("id,user_id,type,item_id,note\n" + "".join(rows), encoding="utf-8")
    items = list(RecordReader(path))
    bad = [(e.line, e.reason) for e in items if isinstance(e, LineError)]
    assert [line for line, _ in bad] == [3] and "record runs to line 6" in bad[0][1]
    good = [(r.line, r.data["id"], r.data["note"]) for r in items if isinstance(r, RawRecord)]
    assert good == [
        (2, "e0", "note 0"),
        (4, "e2", "note 2"),
        (5, "e3", "note 3"),
        (6, "e4", 'x" y'),
        (7, "e5", "note 5"),
    ]


def test_long_fields_are_read_and_a_runaway_one_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    long_text = "y" * 300_000  # csv's default limit is 131,072
    runaway = '"' + "z" * (16 * 1024 * 1024 + 10)
    path.write_text(f"id,text\na,{long_text}\nb,{runaway}\nc,short\n", encoding="utf-8")
    items = list(RecordReader(path))
    assert [(r.line, len(r.data["text"])) for r in items if isinstance(r, RawRecord)] == [
        (2, 300_000),
        (4, 5),
    ]
    [bad] = [e for e in items if isinstance(e, LineError)]
    assert bad.line == 3 and "longer than 16,777,216 characters" in bad.reason


def test_malformed_json_names_the_column_where_it_broke(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "title": "x\n{"id": "b",\r\n', encoding="utf-8")
    reasons = [e.reason for e in RecordReader(path) if isinstance(e, LineError)]
    assert reasons == [
        "malformed JSON (Unterminated string starting at column 22)",
        "malformed JSON (Expecting property name enclosed in double quotes at column 12)",
    ]
