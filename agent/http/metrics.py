"""Prometheus metrics of one app (its own registry, so several apps in one process never clash):
events accepted/duplicate/rejected, request latency per route, agent runs, run-queue depth, outbox
backlog (pending, sending and dead messages, counted at scrape time), whether the database answered
the scrape; and a pure ASGI middleware that times every request."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "tagloop_events",
            "Events posted, by outcome (accepted, duplicate, rejected: every event of a refused request).",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tagloop_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.runs = Counter(
            "tagloop_runs",
            "Agent runs started from the API, by trigger and outcome.",
            ["trigger", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tagloop_run_queue_depth", "Rows waiting in run_queue.", registry=self.registry
        )
        self.outbox = Gauge(
            "tagloop_outbox_messages",
            "Outbox messages by status (pending, sending, dead), counted when /metrics is scraped.",
            ["status"],
            registry=self.registry,
        )

        self.database_up = Gauge(
            "tagloop_database_up",
            "1 when the last scrape could read the database, else 0 (the database-backed gauges then"
            " keep their last values).",
            registry=self.registry,
        )

    def observe_outbox(self, conn: Any) -> None:
        """Set the outbox gauges from the database now (called by the /metrics route)."""
        from tagloop.tools.store.outbox import outbox_backlog

        for status, n in outbox_backlog(conn).items():
            self.outbox.labels(status).set(n)

    def render(self) -> bytes:
        """This app's metrics, then the process-wide default registry (delivery metrics from
        tools/messaging, process and Python collectors)."""
        from tagloop.agent.worker import run_metrics
        from tagloop.tools.messaging.delivery import delivery_metrics

        delivery_metrics()  # registered on first use; show them (at zero) before the first send
        run_metrics()  # the scheduler's runs, likewise
        return generate_latest(self.registry) + generate_latest(REGISTRY)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TimingMiddleware:
    """Observe each HTTP request's latency under its route template (not the raw path) and its
    method, any method outside `METHODS` as "other": a client, even without credentials, must
    not be able to add label values (each one a new series held in memory for ever)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.latency.labels(method, name, str(status["code"])).observe(
                time.perf_counter() - start
            )
