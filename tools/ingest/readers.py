"""Reading import files: JSON Lines or CSV (by extension or content), from a file, a pipe or
standard input, gzip-compressed or not; strict UTF-8, each record with its 1-based line number so
every error can name file and line."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import stat
import sys
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest import jsontext


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
    """ "jsonl", "csv" or "tsv": by the name's suffix, else by the content (a JSON object or array
    first; a first line holding tabs and no comma is TSV — a pipe or stdin has no suffix)."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return suffix[1:]
    text = head.removeprefix(b"\xef\xbb\xbf")
    if text.lstrip()[:1] in (b"{", b"["):
        return "jsonl"
    first = text.split(b"\n", 1)[0]
    return "tsv" if b"\t" in first and b"," not in first else "csv"


MAX_FIELD = 16 * 1024 * 1024  # characters of one CSV field (csv's default, 131,072, refused long texts)


class RecordReader:
    """A file's records one at a time, in file order, each good line as a `RawRecord` and each bad
    one as a `LineError` (field None), so an import holds one chunk, not the file (a 255 MB events
    file read whole took 2.3 GB).

    The stream is read exactly once, so a pipe works as well as a file: `-` is standard input, and
    gzip data (by its magic bytes, `.gz` or not) is decompressed on the fly. `position` is how many
    (decompressed) bytes have been read and `lines` how many lines, for progress; `size` is the
    file's size when that measures the same (a plain regular file), else None. A line that is not
    UTF-8 is a bad line like any other; a CSV quote that is never closed, or that swallows lines up
    to `MAX_FIELD` characters, is reported at the line where its record starts and the lines after
    it are read again; a record is numbered by its first line. CSV cells are trimmed, as header
    names are. A CSV header without one of the `required` columns, or naming a column twice or not
    at all, raises `InvalidInput` (every line would fail or be read wrong; a JSON line in a file
    named .csv is such a header), and so does a stream that cannot be opened or decompressed."""

    def __init__(self, path: Path, required: Sequence[str] = ()) -> None:
        self.path = path
        self.name = "<stdin>" if str(path) == "-" else str(path)
        self.required = tuple(required)
        self.position = 0
        self.lines = 0
        self._file, self.size = _open(path)
        head, stream = _head(self._file, 64)
        self._compressed = head[:2] == GZIP_MAGIC
        if self._compressed:
            self.size = None
            try:
                head, stream = _head(gzip.GzipFile(fileobj=stream, mode="rb"), 64)
            except (OSError, EOFError, zlib.error) as exc:
                self.close()
                raise InvalidInput(f"{self.name}: not a valid gzip stream ({exc})") from None
        self._stream = stream
        named = path.with_suffix("") if path.suffix.lower() == ".gz" else path
        self.format = detect_format(named, head)

    def __iter__(self) -> Iterator[RawRecord | LineError]:
        try:
            items = self._jsonl() if self.format == "jsonl" else self._csv()
            for item in items:
                if isinstance(item, RawRecord):
                    yield item
                else:
                    line, reason = item
                    yield LineError(self.name, line, None, reason)
        except (OSError, EOFError, zlib.error) as exc:  # a broken gzip stream, a read error
            kind = "gzip stream" if self._compressed else "file"
            raise InvalidInput(f"{self.name}:{self.lines + 1}: the {kind} cannot be read ({exc})") from None
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()

    def _jsonl(self) -> Iterator[RawRecord | tuple[int, str]]:
        # split on b"\n" only: U+2028 and friends are legal, unescaped, inside JSON strings
        for number, raw in enumerate(self._stream, start=1):
            self.position += len(raw)
            self.lines = number
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, _not_utf8_line(raw, exc)
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield _jsonl_line(number, line)

    def _csv(self) -> Iterator[RawRecord | tuple[int, str]]:
        """Rows in passes of csv.reader (strict): a pass ends at the end of the stream, at a line that
        is not UTF-8, or at a malformed record, which is reported at its first line; the next pass
        starts again at the line after that."""
        if csv.field_size_limit() < MAX_FIELD:
            csv.field_size_limit(MAX_FIELD)
        source = _CsvLines(self)
        header: list[str] | None = None
        while True:
            error = None
            rows = csv.reader(source, delimiter="\t" if self.format == "tsv" else ",", strict=True)
            try:
                for row in rows:
                    taken, source.taken = source.taken, []
                    if header is None:
                        header = [h.strip() for h in row]
                        self._check_header(header)
                        continue
                    if not row or all(not cell.strip() for cell in row):
                        continue
                    first, last = taken[0][0], taken[-1][0]
                    if len(row) == len(header):
                        # cells trimmed as the header is (" track" was a kind of its own); a blank
                        # cell is not given (merges keep the stored value)
                        cells = ((k, v.strip()) for k, v in zip(header, row, strict=True))
                        yield RawRecord(first, {k: v for k, v in cells if v})
                    elif first == last:
                        yield last, f"expected {len(header)} columns, got {len(row)}"
                    else:  # a stray quote joined lines: report it where it opened, read on after it
                        yield (
                            first,
                            (
                                f"expected {len(header)} columns, got {len(row)} in a record running to line"
                                f' {last} (is a " not closed on this line?)'
                            ),
                        )
                        source.give_back(taken[1:])
            except csv.Error as exc:
                error = str(exc)
            taken, source.taken = source.taken, []
            if header is None and (error or source.bad):
                raise InvalidInput(f"{self.name}:1: the CSV header cannot be read ({source.bad or error})")
            if source.bad is not None:
                bad_line, reason = source.bad
                source.bad = None
                if taken:
                    yield taken[0][0], f"the record runs into line {bad_line}, which is not UTF-8"
                    source.give_back(taken[1:])
                yield bad_line, reason
            elif error is not None:
                yield taken[0][0] if taken else source.number, _csv_reason(error, taken)
                source.give_back(taken[1:])
            else:
                return

    def _check_header(self, header: list[str]) -> None:
        """InvalidInput for a header no line could be read by: a required column missing, a column
        named twice (which of its cells counts?) or a column without a name (its cells would be
        stored under an empty attribute name)."""
        columns = f"(columns: {', '.join(header)})"
        missing = [c for c in self.required if c not in header]
        if missing:
            hint = "; the file looks like JSON Lines: name it .jsonl" if header[0].startswith("{") else ""
            raise InvalidInput(
                f"{self.name}:1: the CSV header has no {', '.join(missing)} column {columns}{hint}"
            )
        twice = sorted({c for c in header if header.count(c) > 1 and c})
        if twice:
            raise InvalidInput(
                f"{self.name}:1: the CSV header names {', '.join(twice)} more than once {columns}"
            )
        unnamed = [str(n) for n, c in enumerate(header, start=1) if not c]
        if unnamed:
            raise InvalidInput(
                f"{self.name}:1: the CSV header has no name for column {', '.join(unnamed)} {columns};"
                " name it or remove it (a trailing comma?)"
            )


GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> tuple[BinaryIO, int | None]:
    """The binary stream of `path` (`-`: standard input) and its size when it is a regular file."""
    if str(path) == "-":
        return sys.stdin.buffer, None
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise InvalidInput(f"{path}: is a directory, expected a .jsonl or .csv file")
    if stat.S_ISSOCK(mode):
        raise InvalidInput(f"{path}: is a socket, expected a .jsonl or .csv file, a pipe, or - for stdin")
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be opened ({exc.strerror})") from None
    return stream, path.stat().st_size if stat.S_ISREG(mode) else None


def _head(stream: BinaryIO | io.BufferedIOBase, n: int) -> tuple[bytes, _Replay]:
    """The first `n` bytes (fewer at the end of the stream) and a stream that starts with them."""
    head = b""
    while len(head) < n:
        block = stream.read(n - len(head))
        if not block:
            break
        head += block
    return head, _Replay(head, stream)


class _Replay(io.BufferedReader):
    """A buffered stream that yields `head` and then the rest of `inner` (read once: a pipe
    cannot be read twice)."""

    def __init__(self, head: bytes, inner: BinaryIO | io.BufferedIOBase) -> None:
        super().__init__(_Chain(head, inner), buffer_size=1 << 16)


class _Chain(io.RawIOBase):
    def __init__(self, head: bytes, inner: BinaryIO | io.BufferedIOBase) -> None:
        self._head = memoryview(head)
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _CsvLines:
    """The decoded lines of a CSV stream for csv.reader, numbered as the file's lines (a lone CR
    ends a line too); `taken` holds the lines of the record being read, `give_back` has lines
    read again, and a line that is not UTF-8 ends the pass (`bad`: its number and the reason)."""

    def __init__(self, reader: RecordReader) -> None:
        self._reader = reader
        self._raw = iter(reader._stream)
        self._back: deque[tuple[int, str]] = deque()
        self.number = 0
        self.taken: list[tuple[int, str]] = []
        self.bad: tuple[int, str] | None = None

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        if self.bad is not None:
            raise StopIteration
        if not self._back:
            raw = next(self._raw)
            self._reader.position += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.number += 1
                self._reader.lines = self.number
                self.bad = (self.number, _not_utf8_line(raw, exc))
                raise StopIteration from None
            if self.number == 0:
                text = text.removeprefix("\ufeff")
            pieces = _LINES.findall(text) if "\r" in text[:-2] else [text]
            for piece in pieces:
                self.number += 1
                self._back.append((self.number, piece))
            self._reader.lines = self.number
        line = self._back.popleft()
        self.taken.append(line)
        return line[1]

    def give_back(self, lines: list[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(lines))


_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _csv_reason(error: str, taken: list[tuple[int, str]]) -> str:
    """What a csv.Error means for the person fixing the file."""
    runs = f" (the record runs to line {taken[-1][0]})" if len(taken) > 1 else ""
    if error.startswith("unexpected end of data"):
        return 'unterminated quoted field: a " opens a field on this line that is never closed'
    if error.startswith("field larger than field limit"):
        return f'a field is longer than {MAX_FIELD:,} characters{runs}; is a " on this line not closed?'
    if "expected after" in error:
        return f'malformed quoted field: text after its closing "{runs}; a " inside one is written ""'
    return f"malformed CSV ({error}){runs}"


def _not_utf8_line(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"the line is not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)"


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
    """A non-blank line as a record, or (line, reason) when it is not a JSON object or gives a key
    twice in one object (HTTP bodies refuse that too: jsontext.py). Values JSON allows but storage
    does not (NaN, lone surrogates, deep nesting) are left to records.py, which names their field."""
    line = line.rstrip("\r\n")
    try:  # the standard parser, where orjson refuses, accepts a little more (NaN, lone surrogates)
        data = jsontext.loads_fast(line)
    except json.JSONDecodeError as exc:
        return number, f"malformed JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"
    except RecursionError:
        return number, "malformed JSON (nested too deeply)"
    except jsontext.JsonFieldError as exc:
        return number, str(exc)
    if not isinstance(data, dict):
        return number, f"expected a JSON object, got {type(data).__name__}"
    return RawRecord(number, data)
