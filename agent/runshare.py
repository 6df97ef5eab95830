"""`RunShare`: what many short runs in one process share for a while — the run facts and the
trending ranking. The HTTP app's run requests (one user each, on many threads) would otherwise read
both per request: ~0.27 s of provider popularity and exposure plus ~0.2 s of a week's engagement
on the 10,000-user demo data, for a decision that takes ~15 ms. The worker keeps the same things
itself (agent/worker.py), together with its single-threaded run cache.

Shared across threads: `facts` loads under a lock; the trending source only ever replaces its one
ranking (a race costs at most a second read). Everything else a run uses stays per run."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tagloop.agent.context import RunFacts
from tagloop.policies import PolicyConfig
from tagloop.tools.candidates import CandidateSource, TrendingSource, sources_named
from tagloop.tools.timed import Timed

SHARE_TTL = timedelta(minutes=10)  # as the worker's facts


@dataclass
class RunShare:
    ttl: timedelta = SHARE_TTL
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _facts: Timed[RunFacts] = field(default_factory=Timed, repr=False)
    _trending: TrendingSource = field(default_factory=lambda: TrendingSource(max_age=SHARE_TTL), repr=False)

    def facts(self, conn: psycopg.Connection[Any], now: datetime, policy: PolicyConfig) -> RunFacts:
        """The run facts read at most `ttl` before `now` (read now when older, or from later)."""
        from tagloop.agent.runner import load_facts  # the runner builds the graph module on import

        with self._lock:
            return self._facts.get(now, self.ttl, lambda: load_facts(conn, now, policy))

    def sources(self, names: Sequence[str], *, tag_search: str = "hnsw") -> tuple[CandidateSource, ...]:
        """New sources for one run, but the shared trending one."""
        made = sources_named(names, tag_search=tag_search)
        return tuple(self._trending if isinstance(s, TrendingSource) else s for s in made)
