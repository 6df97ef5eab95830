"""What the routes of one app share: settings, the connection pool, auth, the rate limiter,
metrics, ingest options, the read-your-writes fold options and what run requests share
(agent/runshare.py) — built in the app's lifespan, never at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool

from tagloop.agent.http.auth import Auth, RateLimiter
from tagloop.agent.http.ingest import IngestOptions
from tagloop.agent.http.metrics import Metrics
from tagloop.agent.runshare import RunShare
from tagloop.agent.settings import Settings
from tagloop.tools.messaging.unsubscribe import UnsubscribeLinks
from tagloop.tools.profile_folder import FoldOptions
from tagloop.tools.store import db

T = TypeVar("T")


def ingest_options(settings: Settings) -> IngestOptions:
    return IngestOptions(
        max_events=settings.max_batch_events, extra_types=frozenset(settings.custom_event_types)
    )


@dataclass
class AppState:
    settings: Settings
    pool: ConnectionPool
    auth: Auth
    limiter: RateLimiter
    metrics: Metrics
    ingest: IngestOptions
    fold: FoldOptions
    unsubscribe: UnsubscribeLinks | None = None  # mail unsubscribe links (agent/http/unsubscribe.py)
    runs: RunShare = field(default_factory=RunShare)  # run facts and trending for run requests

    async def in_tx(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` in a committed transaction on a worker thread, again
        when it was a deadlock victim (`db.transact`: concurrent PUTs of items sharing tags)."""
        return await run_in_threadpool(db.transact, self.pool, fn, *args, **kwargs)
