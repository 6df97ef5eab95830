"""Loading validated records into PostgreSQL with COPY: staged in temporary tables, checked
against what is stored (unknown users/items are reported by line), then merged in one
transaction. Nothing is stored when any line is bad unless `skip_bad` is set.

Event files are streamed: read, parsed, checked and staged `CHUNK` lines at a time, so a file of
any size imports in bounded memory (bench/import_events.py prints the peak). Items and users are
read whole and merged into what is stored (upsert.py, re-exported here): fields a line does not
give keep their stored values; lines repeating an id are merged in file order.

An import that stores at least `ANALYZE_AFTER` rows analyzes the tables it wrote, in its
transaction: until autovacuum gets to them (a minute or more later) the planner would otherwise
plan the next command — typically `tagloop train` right after the import — from the statistics of
the table before the load, or none.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from tagloop.tools import profile_folder
from tagloop.tools.errors import InvalidInput
from tagloop.tools.gc_pause import gc_paused
from tagloop.tools.ingest import records as rec
from tagloop.tools.ingest.readers import LineError, RawRecord, RecordReader
from tagloop.tools.ingest.upsert import by_id, store_items, store_users
from tagloop.tools.store import catalogue

__all__ = ["ImportResult", "import_file", "store_events", "store_items", "store_users"]

MAX_REPORTED = 20
CHUNK = 20_000  # event lines per chunk: parsed, checked and staged together
# lines read, bytes read, file size (None when unknown: a pipe, standard input, gzip data)
Progress = Callable[[int, int, int | None], None]
T = TypeVar("T")


@dataclass
class ImportResult:
    kind: str
    file: str
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    skipped: list[LineError] = field(default_factory=list)
    warnings: list[LineError] = field(default_factory=list)  # stored, but probably not as meant

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "skipped": len(self.skipped),
            "errors": [str(e) for e in self.skipped[:MAX_REPORTED]],
            "warned": len(self.warnings),
            "warnings": [str(e) for e in self.warnings[:MAX_REPORTED]],
        }


def import_file(
    conn: psycopg.Connection[Any],
    kind: str,
    path: Path,
    *,
    skip_bad: bool = False,
    now: datetime | None = None,
    extra_types: frozenset[str] = frozenset(),
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    keep_stored_users: bool = False,
) -> ImportResult:
    """Import one file in one transaction. Events are streamed in chunks of `CHUNK` lines (parsed,
    checked against the stored users and items, copied into a staging table), so memory does not
    grow with the file; items and users are read whole (lines repeating an id are merged, which
    needs them all). `progress(lines, bytes, size)` is called after each chunk of lines read, and
    `log` gets a line when reading is done and the (longer) storing starts. `keep_stored_users`:
    users already stored are left as they are and counted as duplicates (`upsert.store_users`)."""
    now = now or datetime.now(UTC)
    if kind == "events":
        result = _import_events(conn, path, skip_bad, now, extra_types, progress, log)
        _analyze_if_large(conn, result.stored, ["events"])
        return result
    parse_data: Callable[[dict[str, Any]], Any]
    if kind == "items":
        parse_data = functools.partial(rec.parse_item, now=now)
    elif kind == "users":
        parse_data = rec.parse_user
    else:
        raise InvalidInput(f"unknown import kind {kind!r}: expected items, users or events")

    def parse(r: RawRecord) -> Any:
        return parse_data(r.data)

    reader = RecordReader(path, required=("id",))
    raw: list[RawRecord] = []
    errors: list[LineError] = []
    with gc_paused():  # many acyclic records: the cyclic collector would only re-walk them
        for chunk in _chunks(reader, CHUNK):
            raw.extend(r for r in chunk if isinstance(r, RawRecord))
            errors.extend(e for e in chunk if isinstance(e, LineError))
            if progress:
                progress(reader.lines, reader.position, reader.size)
        parsed: list[tuple[int, Any]] = []
        errors.extend(_parse_all(raw, parse, reader.name, parsed))
    result = ImportResult(kind, reader.name, read=len(raw) + len([e for e in errors if e.field is None]))
    if log and not (errors and not skip_bad):
        log(f"{kind}: {result.read:,} line(s) read; storing")
    with conn.transaction():
        _raise_or_skip(errors, skip_bad, reader.name)
        bad = {e.line for e in errors}
        good = [(line, r) for line, r in parsed if line not in bad]
        result.skipped = sorted(errors, key=lambda e: e.line)
        if kind == "items":
            result.warnings = _item_warnings(conn, raw, good, reader.name)
            result.stored = store_items(conn, [r for _, r in good])
        else:
            result.stored = store_users(conn, [r for _, r in good], keep_stored=keep_stored_users)
            if keep_stored_users:
                result.duplicates = len({r.id for _, r in good}) - result.stored
    _analyze_if_large(conn, result.stored, ["items", "item_tags", "tags"] if kind == "items" else ["users"])
    return result


ANALYZE_AFTER = 10_000


def _analyze_if_large(conn: psycopg.Connection[Any], stored: int, tables: list[str]) -> None:
    """Fresh planner statistics after a bulk load (a role that does not own a table gets a warning
    from PostgreSQL and no statistics, not an error). On an idle connection in a transaction of its
    own: left open, it made every later `conn.transaction()` a savepoint, so an import's profile
    rebuild held the folder's lock batch after batch until the import's connection closed."""
    if stored < ANALYZE_AFTER:
        return
    statement = "analyze " + ", ".join(tables)
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        with conn.transaction():
            conn.execute(statement)
    else:
        conn.execute(statement)


def _item_warnings(
    conn: psycopg.Connection[Any], raw: Sequence[RawRecord], good: Sequence[tuple[int, Any]], file: str
) -> list[LineError]:
    """Item lines that are valid but probably not what was meant: a misspelt field (`titel`, `tag`,
    `artist`: kept in attributes, SPEC §3), new items without a title or a provider (allowed,
    but shown as '' and outside every provider's fairness count), and, once per file, new items
    without a kind (stored as `track`: a shop's products were explained as music without a word).
    An item already stored is not warned about for what it keeps (a re-import of `id,tags`)."""
    good_lines = {line for line, _ in good}
    warnings = [
        LineError(file, r.line, name, reason)
        for r in raw
        if r.line in good_lines
        for name, reason in rec.item_warnings(r.data)
    ]
    merged = by_id((item for _, item in good), rec.merged_item)
    last_line = {item.id: line for line, item in good}
    stored = catalogue.existing_ids(conn, "items", merged)
    kindless = [last_line[i] for i, item in merged.items() if i not in stored and not item.kind]
    if kindless:  # one warning for the file: a music catalogue may leave every kind out on purpose
        warnings.append(
            LineError(
                file,
                min(kindless),
                "kind",
                f"missing on {len(kindless):,} new item(s) (the first here): stored as `track`, so reasons"
                " and messages speak of playing them; give each item's kind (product, article, video, …)",
            )
        )
    for item_id, item in merged.items():
        line = last_line[item_id]
        if item_id in stored:
            continue
        if not item.title:
            warnings.append(LineError(file, line, "title", "missing: the new item is stored without a title"))
        if not item.provider:
            warnings.append(
                LineError(
                    file, line, "provider", "missing: the new item belongs to no provider (artist, brand, …)"
                )
            )
    return sorted(warnings, key=lambda e: e.line)


def _import_events(
    conn: psycopg.Connection[Any],
    path: Path,
    skip_bad: bool,
    now: datetime,
    extra_types: frozenset[str],
    progress: Progress | None,
    log: Callable[[str], None] | None,
) -> ImportResult:
    """Events chunk by chunk into the staging table, then one insert from it; after the first bad
    line without `skip_bad` the rest is only checked (to report every bad line), not staged."""

    def parse(r: RawRecord) -> Any:  # the line keeps identical events without ts apart
        return rec.parse_event(r.data, now=now, extra_types=extra_types, position=r.line)

    reader = RecordReader(path, required=("user_id", "type"))
    result = ImportResult("events", reader.name)
    errors: list[LineError] = []
    with conn.transaction(), conn.cursor() as cur:
        _create_event_stage(cur)
        staged = 0
        for chunk in _chunks(reader, CHUNK):
            records = [r for r in chunk if isinstance(r, RawRecord)]
            bad = [e for e in chunk if isinstance(e, LineError)]
            parsed: list[tuple[int, Any]] = []
            with gc_paused():
                bad.extend(_parse_all(records, parse, reader.name, parsed))
            bad.extend(_check_event_refs(conn, parsed, reader.name))
            result.read += len(chunk)
            if bad:
                lines = {e.line for e in bad}
                parsed = [(line, r) for line, r in parsed if line not in lines]
                errors.extend(sorted(bad, key=lambda e: e.line))
            if skip_bad or not errors:
                staged += _stage_events(cur, [r for _, r in parsed], first=staged)
            if progress:
                progress(reader.lines, reader.position, reader.size)
        _raise_or_skip(errors, skip_bad, reader.name)
        if log:
            log(f"events: {result.read:,} line(s) read; storing")
        result.skipped = errors
        result.stored = _insert_staged_events(cur)
        result.duplicates = staged - result.stored
    return result


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _parse_all(
    raw: Sequence[RawRecord], parse: Callable[[RawRecord], Any], file: str, out: list[tuple[int, Any]]
) -> list[LineError]:
    errors = []
    for record in raw:
        try:
            out.append((record.line, parse(record)))
        except rec.FieldError as exc:
            errors.append(LineError(file, record.line, exc.field, exc.reason))
    return errors


def _raise_or_skip(errors: list[LineError], skip_bad: bool, path: str) -> None:
    if errors and not skip_bad:
        errors.sort(key=lambda e: e.line)
        shown = "\n".join(f"  {e}" for e in errors[:MAX_REPORTED])
        more = f"\n  … and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        raise InvalidInput(
            f"{path}: {len(errors)} bad line(s); nothing was imported (use --skip-bad to import the good "
            f"lines):\n{shown}{more}"
        )


def _check_event_refs(
    conn: psycopg.Connection[Any], parsed: list[tuple[int, Any]], file: str
) -> list[LineError]:
    """Events must name a stored user and, if any, a stored item."""
    users = {r.user_id for _, r in parsed}
    items = {r.item_id for _, r in parsed if r.item_id is not None}
    known_users = catalogue.existing_ids(conn, "users", users)
    known_items = catalogue.existing_ids(conn, "items", items)
    errors = []
    for line, r in parsed:
        if r.user_id not in known_users:
            errors.append(
                LineError(file, line, "user_id", f"unknown user {r.user_id!r} (import users first)")
            )
        elif r.item_id is not None and r.item_id not in known_items:
            errors.append(
                LineError(file, line, "item_id", f"unknown item {r.item_id!r} (import items first)")
            )
    return errors


def store_events(conn: psycopg.Connection[Any], events: Sequence[rec.EventRecord]) -> int:
    """Insert events; an id already stored (or repeated in the batch) is skipped. Returns new rows."""
    if not events:
        return 0
    with conn.cursor() as cur:
        _create_event_stage(cur)
        _stage_events(cur, events, first=0)
        return _insert_staged_events(cur)


def _create_event_stage(cur: psycopg.Cursor[Any]) -> None:
    cur.execute(
        """create temp table if not exists stage_events (ord bigint, id text, user_id text, type text,
               item_id text, ts timestamptz, value double precision, message_id text, context jsonb)
           on commit delete rows"""
    )


def _stage_events(cur: psycopg.Cursor[Any], events: Sequence[rec.EventRecord], *, first: int) -> int:
    """Copy events into the staging table, numbered from `first` in file order."""
    with cur.copy("copy stage_events from stdin") as copy:
        for n, e in enumerate(events, start=first):
            copy.write_row(
                (
                    n,
                    e.id,
                    e.user_id,
                    e.type,
                    e.item_id,
                    e.ts,
                    e.value,
                    e.message_id,
                    json.dumps(e.context) if e.context else "{}",
                )
            )
    return len(events)


def _insert_staged_events(cur: psycopg.Cursor[Any]) -> int:
    """The staged events into `events` in file order; an id stored already, or staged before
    (the first line of a repeated id wins), is skipped. Returns the rows inserted.

    The transaction first takes the profile folder's shared ingest lock, as HTTP ingest does: the
    insert takes event seqs long before the import commits, and a folder running meanwhile (`serve`,
    a worker) would otherwise move its checkpoint past them and never fold them (tools/profile_folder.py)."""
    profile_folder.hold_ingest_lock(cur.connection)
    cur.execute(
        """insert into events (id, user_id, type, item_id, ts, value, message_id, context)
           select id, user_id, type, item_id, ts, value, message_id, context
           from (select distinct on (id) * from stage_events order by id, ord) s
           order by ord
           on conflict (id) do nothing"""
    )
    stored = cur.rowcount
    cur.execute("truncate stage_events")
    return stored
