"""Reading import files: JSON Lines or CSV (by extension or content), strict UTF-8, each record
with its 1-based line number so every error can name file and line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tagloop.tools.errors import InvalidInput


@dataclass(frozen=True)
class RawRecord:
    line: int
    data: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    file: str
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


def detect_format(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    return "jsonl" if head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in (b"{", b"[") else "csv"


def read_records(path: Path, required: Sequence[str] = ()) -> tuple[list[RawRecord], list[LineError]]:
    """Parse the whole file; return good records and per-line errors (never raises for a bad line)."""
    records: list[RawRecord] = []
    errors: list[LineError] = []
    for item in RecordReader(path, required):
        if isinstance(item, RawRecord):
            records.append(item)
        else:
            errors.append(item)
    return records, errors


class RecordReader:
    """A file's records one at a time, in file order, each good line as a `RawRecord` and each bad
    one as a `LineError` (field None), so an import holds one chunk, not the file (a 255 MB events
    file read whole took 2.3 GB). `position` is how many bytes have been read (for progress) out of
    `size`. A byte sequence that is not UTF-8 raises `InvalidInput` naming its line, and so does a
    CSV header without one of the `required` columns (every line would fail; a JSON line in a
    file named .csv is such a header)."""

    def __init__(self, path: Path, required: Sequence[str] = ()) -> None:
        if not path.exists():
            raise InvalidInput(f"{path}: no such file")
        if path.is_dir():
            raise InvalidInput(f"{path}: is a directory, expected a .jsonl or .csv file")
        self.path = path
        self.required = tuple(required)
        self.size = path.stat().st_size
        self.position = 0
        with path.open("rb") as fh:
            self.format = detect_format(path, fh.read(64))

    def __iter__(self) -> Iterator[RawRecord | LineError]:
        items = self._jsonl() if self.format == "jsonl" else self._csv()
        for item in items:
            if isinstance(item, RawRecord):
                yield item
            else:
                line, reason = item
                yield LineError(str(self.path), line, None, reason)

    def _jsonl(self) -> Iterator[RawRecord | tuple[int, str]]:
        # split on b"\n" only: U+2028 and friends are legal, unescaped, inside JSON strings
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                self.position += len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise not_utf8(self.path, number, raw[exc.start]) from exc
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if line.strip():
                    yield _jsonl_line(number, line)

    def _csv(self) -> Iterator[RawRecord | tuple[int, str]]:
        with self.path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            rows = _iter_csv(text, self.path.suffix.lower() == ".tsv")
            while True:
                try:
                    item = next(rows)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:  # decoded in blocks: find the line by a scan
                    raise not_utf8(self.path) from exc
                self.position = raw.tell()
                if isinstance(item, list):
                    self._check_header(item)
                else:
                    yield item

    def _check_header(self, header: list[str]) -> None:
        missing = [c for c in self.required if c not in header]
        if missing:
            hint = "; the file looks like JSON Lines: name it .jsonl" if header[0].startswith("{") else ""
            raise InvalidInput(
                f"{self.path}:1: the CSV header has no {', '.join(missing)} column"
                f" (columns: {', '.join(header)}){hint}"
            )


def not_utf8(path: Path, line: int | None = None, byte: int | None = None) -> InvalidInput:
    """The error for a file that is not UTF-8, naming the line and byte (found by a scan of the
    file when the caller decoded it in blocks and does not know them)."""
    if line is None or byte is None:
        line, byte = first_bad_utf8(path)
    return InvalidInput(f"{path}:{line}: the file is not UTF-8 (byte 0x{byte:02x})")


def first_bad_utf8(path: Path) -> tuple[int, int]:
    """The line number and first offending byte of the file's first line that is not UTF-8."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, raw[exc.start]
    return 0, 0  # not reached: the caller saw a decode error


def _jsonl_line(number: int, line: str) -> RawRecord | tuple[int, str]:
    """A non-blank line as a record, or (line, reason) when it is not a JSON object."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # the standard parser accepts a little more (NaN, huge ints) and says where it failed
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            return number, f"malformed JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return number, f"expected a JSON object, got {type(data).__name__}"
    return RawRecord(number, data)


def _iter_csv(text: Iterable[str], tabs: bool) -> Iterator[list[str] | RawRecord | tuple[int, str]]:
    """The header (a list of column names) first, then each row as a record or (line, reason)."""
    reader = csv.reader(text, delimiter="\t" if tabs else ",")
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    yield header
    if len(set(header)) != len(header):
        yield 1, f"duplicate column names in header: {header}"
        return
    for row in reader:
        number = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, f"expected {len(header)} columns, got {len(row)}"
            continue
        yield RawRecord(number, {k: v for k, v in zip(header, row, strict=True) if v != ""})
