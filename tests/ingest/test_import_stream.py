"""`tagloop import events` streams the file in chunks: the results must be those of one pass over the
whole file — file order kept, the first line of a repeated id wins across chunks, a bad line in a
late chunk still stores nothing, --skip-bad keeps the good lines of every chunk — and the readers
name the line of a byte that is not UTF-8 in CSV too, and read on after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.readers import LineError, RawRecord, RecordReader


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _event(n: int, user: str = "u1", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "user_id": user,
        "type": "play",
        "item_id": "i1",
        "ts": "2026-01-01T10:00:00Z",
    } | extra


@pytest.fixture
def known(
    db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> psycopg.Connection[Any]:
    import_file(db, "users", _write(tmp_path / "users.jsonl", [{"id": "u1"}, {"id": "u2"}]))
    import_file(db, "items", _write(tmp_path / "items.jsonl", [{"id": "i1", "tags": ["rock"]}]))
    monkeypatch.setattr(loader, "CHUNK", 3)
    return db


def _stored(conn: psycopg.Connection[Any]) -> list[tuple[str, float | None]]:
    return [(r["id"], r["value"]) for r in conn.execute("select id, value from events order by seq")]


def test_chunks_keep_file_order_and_the_first_of_a_repeated_id(
    known: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rows = [_event(n, value=float(n)) for n in (5, 3, 8, 1, 9, 2, 7)]
    rows.insert(5, _event(3, value=99.0))  # e3 again, two chunks later: a duplicate
    seen: list[tuple[int, int, int | None]] = []
    result = import_file(
        known, "events", _write(tmp_path / "e.jsonl", rows), progress=lambda *p: seen.append(p)
    )
    assert (result.read, result.stored, result.duplicates) == (8, 7, 1)
    assert _stored(known) == [(f"e{n}", float(n)) for n in (5, 3, 8, 1, 9, 2, 7)]
    size = (tmp_path / "e.jsonl").stat().st_size
    assert len(seen) == 3 and seen[-1] == (8, size, size) and seen[0][1] < seen[1][1] < size
    assert [lines for lines, _, _ in seen] == [3, 6, 8]


def test_a_bad_line_in_a_late_chunk_stores_nothing_and_every_bad_line_is_named(
    known: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rows = [_event(n) for n in range(7)] + [_event(7, user="ghost"), _event(8), {"type": "play"}]
    path = _write(tmp_path / "e.jsonl", rows)
    with pytest.raises(InvalidInput) as caught:
        import_file(known, "events", path)
    message = str(caught.value)
    assert "2 bad line(s)" in message and f"{path}:8: user_id: unknown user 'ghost'" in message
    assert f"{path}:10: user_id: is required" in message
    assert _stored(known) == []


def test_skip_bad_keeps_the_good_lines_of_every_chunk(known: psycopg.Connection[Any], tmp_path: Path) -> None:
    rows = [
        _event(0),
        "not json",
        _event(1, user="ghost"),
        _event(2),
        _event(3),
        _event(4, type="nope"),
        _event(5),
    ]
    path = tmp_path / "e.jsonl"
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    result = import_file(known, "events", path, skip_bad=True)
    assert [e.line for e in result.skipped] == [2, 3, 6]
    assert (result.read, result.stored) == (7, 4)
    assert [i for i, _ in _stored(known)] == ["e0", "e2", "e3", "e5"]


def test_csv_reader_names_the_line_that_is_not_utf8_and_reads_on(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    good = "".join(f"u{n},play,i1\n" for n in range(5000)).encode()  # past the decoder's first block
    path.write_bytes(b"\xef\xbb\xbfuser_id,type,item_id\n" + good + b"u9,caf\xe9,i1\nu10,play,i1\n")
    items = list(RecordReader(path))
    bad = [i for i in items if isinstance(i, LineError)]
    assert [str(e) for e in bad] == [f"{path}:5002: the line is not UTF-8 (byte 0xe9 at byte 7 of the line)"]
    records = [i for i in items if isinstance(i, RawRecord)]
    assert len(records) == 5001 and records[0].data == {"user_id": "u0", "type": "play", "item_id": "i1"}
    assert (records[-1].line, records[-1].data["user_id"]) == (5003, "u10")


def test_csv_with_quoted_newlines_and_carriage_returns(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(b'id,title\r\na,"two\nlines"\r\nb,plain\r\n')
    records = [r for r in RecordReader(path) if isinstance(r, RawRecord)]
    assert [(r.line, r.data) for r in records] == [
        (2, {"id": "a", "title": "two\nlines"}),  # numbered by its first line
        (4, {"id": "b", "title": "plain"}),
    ]
