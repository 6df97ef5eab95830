"""Running the decision graph for users: batches through the compiled graph, one database
connection, the channels the settings configure. Used by `tagloop run`, the HTTP API and the
scheduler alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from tagloop.agent.context import RunContext
from tagloop.agent.graph import graph
from tagloop.agent.settings import Settings
from tagloop.agent.state import Plan, RunInput
from tagloop.tools.messaging.channels import Channel, ConsoleChannel, FileChannel

BATCH = 200


@dataclass(frozen=True)
class RunOutcome:
    user_id: str
    decision_id: str
    outcome: str
    channel: str | None
    chosen: list[dict[str, Any]]
    propensities: list[float]
    send_at: str | None
    policy: str
    explanation: str | None
    title: str | None
    message_id: str | None
    delivered: bool

    @classmethod
    def from_plan(cls, plan: Plan) -> RunOutcome:
        return cls(
            user_id=plan.user_id, decision_id=plan.decision_id, outcome=plan.outcome, channel=plan.channel,
            chosen=[{"item_id": c.item_id, "title": c.title, "score": round(c.score, 4)} for c in plan.chosen],
            propensities=[round(p, 6) for p in plan.propensities],
            send_at=plan.send_at.isoformat() if plan.send_at else None,
            policy=f"{plan.policy_name}@{plan.policy_version}", explanation=plan.explanation,
            title=plan.copy.title if plan.copy else None, message_id=plan.message_id, delivered=plan.delivered,
        )


def default_channels(settings: Settings) -> dict[str, Channel]:
    return {"console": ConsoleChannel(), "file": FileChannel(settings.outbox_file)}


def run_users(
    conn: psycopg.Connection[Any],
    settings: Settings,
    user_ids: Sequence[str],
    *,
    trigger: str = "manual",
    send_now: bool = True,
    now: datetime | None = None,
    run_key: str | None = None,
    channels: dict[str, Channel] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[RunOutcome]:
    now = now or datetime.now(UTC)
    ctx = RunContext(
        conn=conn,
        channels=channels if channels is not None else default_channels(settings),
        now=now,
        run_key=run_key or f"{trigger}|{now.strftime('%Y-%m-%dT%H:%M')}",
    )
    outcomes: list[RunOutcome] = []
    for batch in _batches(list(user_ids), BATCH):
        state = graph.invoke(RunInput(user_ids=batch, trigger=trigger, send_now=send_now), context=ctx)
        plans: dict[str, Plan] = state["plans"]
        outcomes.extend(RunOutcome.from_plan(plans[u]) for u in batch if u in plans)
        if progress:
            progress(len(batch))
    return outcomes


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
