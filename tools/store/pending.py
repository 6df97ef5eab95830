"""`Pending`: a statement sent now whose rows are read, and parsed, later.

Outside pipeline mode `request` runs the statement at once and `result` only parses, so a store
function written as `request_x(...).result()` behaves as before. Inside psycopg's pipeline mode
the statement is only sent: the server works on it while the client goes on, and `result` waits
for its rows (agent/pipeline.py sends the next chunk's reads this way)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row

T = TypeVar("T")


class Pending(Generic[T]):
    def __init__(self, cursor: psycopg.Cursor[Any], parse: Callable[[list[Any]], T]) -> None:
        self._cursor, self._parse = cursor, parse
        self._done = False
        self._value: T | None = None

    def result(self) -> T:
        """The parsed rows (waiting for them the first time; the same object afterwards)."""
        if not self._done:
            rows = self._cursor.fetchall()
            self._cursor.close()
            self._value, self._done = self._parse(rows), True
        return self._value  # type: ignore[return-value]


def request(
    conn: psycopg.Connection[Any],
    query: str,
    params: Mapping[str, Any],
    parse: Callable[[list[Any]], T],
    *,
    tuples: bool = False,
    binary: bool = False,
    prepare: bool | None = None,
) -> Pending[T]:
    """Send `query` (dict rows, or tuples with `tuples=True`) and return its pending result;
    `prepare` as psycopg's (False: planned afresh at every execution)."""
    cur = conn.cursor(row_factory=tuple_row if tuples else dict_row, binary=binary)
    cur.execute(query, params, prepare=prepare)
    return Pending(cur, parse)
