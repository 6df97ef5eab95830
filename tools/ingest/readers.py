"""Reading import files: JSON Lines or CSV (by extension or content), strict UTF-8, each record
with its 1-based line number so every error can name file and line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
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
    return "jsonl" if head.lstrip()[:1] in (b"{", b"[") else "csv"


def read_records(path: Path) -> tuple[list[RawRecord], list[LineError]]:
    """Parse the whole file; return good records and per-line errors (never raises for a bad line)."""
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, expected a .jsonl or .csv file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}:{line}: the file is not UTF-8 (byte 0x{raw[exc.start]:02x})") from exc
    text = text.removeprefix("\ufeff")
    fmt = detect_format(path, raw[:64])
    records: list[RawRecord] = []
    errors: list[LineError] = []
    for item in _iter_jsonl(text) if fmt == "jsonl" else _iter_csv(text, path.suffix.lower() == ".tsv"):
        if isinstance(item, RawRecord):
            records.append(item)
        else:
            line, reason = item
            errors.append(LineError(str(path), line, None, reason))
    return records, errors


def _iter_jsonl(text: str) -> Iterator[RawRecord | tuple[int, str]]:
    # split on "\n" only: U+2028 and friends are legal, unescaped, inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:  # the standard parser accepts a little more (NaN, huge ints) and says where it failed
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"malformed JSON ({exc.msg} at column {exc.colno})"
                continue
        if not isinstance(data, dict):
            yield number, f"expected a JSON object, got {type(data).__name__}"
            continue
        yield RawRecord(number, data)


def _iter_csv(text: str, tabs: bool) -> Iterator[RawRecord | tuple[int, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tabs else ",")
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
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
