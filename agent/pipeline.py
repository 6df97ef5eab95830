"""Overlapping the database's work with Python's, chunk by chunk, on the run's one connection.

`decide` (agent/runner.py) runs a batch of more than `CHUNK` users through the graph chunk by
chunk inside psycopg's pipeline mode, where a statement sent is not waited for until its rows are
read. A `ChunkPipeline` in the run context then arranges, at the point where a chunk has done its
last read (`reads_done`, called by `gather_candidates`):
- the previous chunk's decision and outbox inserts (held by `record`) are sent — reads sent after
  a write would queue behind it, so writes wait until the next chunk has read;
- the next chunk's reads are sent: its users' context (agent/reads.py), its tag search
  (retrieval.py; with `TAGLOOP_TAG_SEARCH=exact` its users' tag profiles, tools/tag_exact.py), its
  search of the trained model from stored user vectors with the fold-in
  inputs of the users whose vector is stale (once a batch has found a model;
  tools/recommender/source.py) and the neighbours of its co-likes seeds not
  cached yet (tools/neighbors.py), found from its history, which was itself sent one chunk
  earlier;
- the history of the chunk after it is sent.
Before the first chunk, `start` sends its reads the same way.
The server then writes and reads while Python scores, diversifies and composes the current chunk,
and the next chunk finds its rows waiting. What is still read on the spot: the newest items of
providers not seen yet, the title and provider of co-likes and CF items not described yet in the
run, the CF search of users whose stored vector was stale (with the vector just folded in), the
candidates' tag vectors and top-tag names not cached in the run yet, the catalogue of the exact tag
search when the process's copy is a minute old, and the rare tag or CF search re-asked for users
whose seen items crowd their top.

Everything runs in the caller's transaction (and under its per-user locks); the held inserts are
sent before `decide` returns, and leaving pipeline mode waits for every result, so an error
surfaces from `decide` as before. No savepoint wraps the inserts here (closing one would wait for
the server); the caller's transaction keeps the batch's decisions and messages atomic.
Measured with bench/agent.py (see its docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from tagloop.agent.reads import PendingUsers, request_users
from tagloop.tools.candidates import CandidateSource, CFSource, CoLikeSource, HistorySource, TagSource
from tagloop.tools.retrieval import BatchHistory, request_history
from tagloop.tools.store.pending import Pending


@dataclass
class ChunkPipeline:
    conn: psycopg.Connection[Any]
    sources: tuple[CandidateSource, ...]
    k: int
    now: datetime
    tag_names: dict[int, str] = field(default_factory=dict)  # the run cache's (RunCache.tag_names)
    upcoming: list[list[str]] = field(default_factory=list)  # the next chunks (set by `decide`)
    _held: list[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=list)
    _users: dict[tuple[str, ...], PendingUsers] = field(default_factory=dict)
    _history: dict[tuple[str, ...], Pending[BatchHistory]] = field(default_factory=dict)

    def hold(self, write: Callable[..., None], *args: Any) -> None:
        """Keep a write until the next chunk's reads are done (or `flush`)."""
        self._held.append((write, args))

    def users_for(self, user_ids: list[str]) -> PendingUsers | None:
        return self._users.pop(tuple(user_ids), None)

    def history_for(self, user_ids: list[str]) -> BatchHistory | None:
        pending = self._history.pop(tuple(user_ids), None)
        return pending.result() if pending is not None else None

    def start(self, chunks: list[list[str]]) -> None:
        """Before the first chunk: send its reads (and the second chunk's history) as
        `reads_done` sends a next chunk's, so they go out together instead of one by one."""
        self.upcoming = chunks[:2]
        self._send_reads()

    def reads_done(self) -> None:
        """The current chunk has read what it needs: send the held writes, the next chunk's reads
        and the history of the chunk after it."""
        self.flush()
        self._send_reads()

    def _send_reads(self) -> None:
        uses_history = any(isinstance(s, HistorySource) for s in self.sources)
        if self.upcoming:
            ids = self.upcoming[0]
            if uses_history:
                pending = self._history.get(tuple(ids))
                if pending is None:  # not sent yet: the first chunk (`start`)
                    pending = self._history[tuple(ids)] = request_history(self.conn, ids, self.now)
                history = None
                for source in self.sources:
                    if isinstance(source, CoLikeSource):
                        history = history or pending.result()  # sent a chunk ago: ready by now
                        source.send_ahead(self.conn, history)
            for source in self.sources:
                if isinstance(source, TagSource | CFSource):
                    source.send_ahead(self.conn, ids, self.k)
            self._users[tuple(ids)] = request_users(self.conn, ids, self.now, self.tag_names)
        if uses_history and len(self.upcoming) > 1:
            after = self.upcoming[1]
            self._history[tuple(after)] = request_history(self.conn, after, self.now)

    def pump(self) -> None:
        """Move the rows that have arrived into libpq's buffer without waiting (PQconsumeInput):
        the socket holds ~200 KB, and a server blocked on a full socket stops working through
        the statements sent ahead; called between the graph's nodes and every few users."""
        self.conn.pgconn.consume_input()

    def abandon(self) -> None:
        """The batch failed: drop the held writes and the reads the sources sent ahead (their
        results went with the pipeline), so sources shared with later runs start clean."""
        self._held.clear()
        for source in self.sources:
            if isinstance(source, TagSource | CFSource | CoLikeSource):
                source.drop_sent()

    def flush(self) -> None:
        held, self._held = self._held, []
        for write, args in held:
            write(*args)
