"""Overlapping one chunk's database work with the next chunk's Python, on the run's one connection.

`decide` (agent/runner.py) runs a batch larger than `CHUNK` users through the graph chunk by chunk
inside psycopg's pipeline mode, where a statement sent is not waited for until its rows are read.
A `ChunkPipeline` in the run context then changes two things, both invisible to the caller:
- the chunk's decision and outbox inserts (the `record` node) are held and sent only once the
  next chunk has done its reads (`reads_done`, called by `gather_candidates`), so the server
  writes them while Python scores, diversifies and composes that next chunk — reads sent after a
  write would otherwise queue behind it;
- at the same point the next chunk's tag search (the decision's largest read, retrieval.py) is
  sent, so it is ready when that chunk gathers.
Everything still runs in the caller's transaction (and under its per-user locks); the held
inserts are sent before `decide` returns and leaving pipeline mode waits for every result, so
an error surfaces from `decide` as before. No savepoint wraps the inserts here (closing one would
wait for the server); the caller's transaction keeps the batch's decisions and messages atomic.

Measured with bench/agent.py (see its docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tagloop.tools.candidates import CandidateSource, TagSource


@dataclass
class ChunkPipeline:
    conn: psycopg.Connection[Any]
    sources: tuple[CandidateSource, ...]
    k: int
    next_users: list[str] = field(default_factory=list)  # the chunk after the one being decided
    _held: list[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=list)

    def hold(self, write: Callable[..., None], *args: Any) -> None:
        """Keep a write until the next chunk's reads are done (or `flush`)."""
        self._held.append((write, args))

    def reads_done(self) -> None:
        """The current chunk has read everything it needs: send the held writes of the chunk
        before it, then the next chunk's tag search."""
        self.flush()
        if self.next_users:
            for source in self.sources:
                if isinstance(source, TagSource):
                    source.send_ahead(self.conn, self.next_users, self.k)

    def flush(self) -> None:
        held, self._held = self._held, []
        for write, args in held:
            write(*args)
