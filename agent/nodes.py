"""The graph's nodes: small typed functions that read the state, call one tool, return an update.

load_context → gather_candidates → choose → compose → record → deliver. Each works on the whole
batch with one database round trip where it touches the database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from langgraph.runtime import Runtime

from tagloop.agent.context import RunContext
from tagloop.agent.state import Plan, RunState, UserContext
from tagloop.tools import retrieval
from tagloop.tools.messaging.channels import DeliveryError, OutboundMessage
from tagloop.tools.messaging.compose import compose_discovery
from tagloop.tools.profiles import load_profiles
from tagloop.tools.store import decisions as store


def load_context(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    conn = runtime.context.conn
    rows = conn.execute(
        "select id, timezone, channels, consent from users where id = any(%(ids)s)", {"ids": state.user_ids}
    ).fetchall()
    profiles = load_profiles(conn, [r["id"] for r in rows])
    users = {
        r["id"]: UserContext(r["id"], r["timezone"], r["channels"], r["consent"], profiles[r["id"]]) for r in rows
    }
    return {"users": users}


def gather_candidates(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    return {"candidates": retrieval.tag_candidates(ctx.conn, list(state.users), ctx.candidate_k)}


def choose(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    plans = {}
    for user_id, user in state.users.items():
        decision_id = ctx.decision_id(user_id)
        plan = Plan(user_id, decision_id, ctx.seed_of(decision_id), "message", ctx.policy_name, ctx.policy_version)
        plan.candidates = state.candidates.get(user_id, [])
        plan.channel = _channel_for(user, ctx)
        if not plan.candidates:
            plan.outcome = "nothing_to_send"
        elif plan.channel is None:
            plan.outcome = "no_consent"
        else:
            rng = np.random.default_rng(plan.seed)
            picks, propensities = explore_slate(len(plan.candidates), ctx.slate_size, ctx.epsilon, rng)
            plan.chosen = [plan.candidates[i] for i in picks]
            plan.propensities = propensities
            plan.send_at = ctx.now
        plans[user_id] = plan
    return {"plans": plans}


def explore_slate(n: int, k: int, epsilon: float, rng: np.random.Generator) -> tuple[list[int], list[float]]:
    """Top k−1 by score, then one exploration slot: the next best with probability 1−ε, else a
    uniform pick among the remaining candidates. Returns indices and P(pick in its slot)."""
    k = min(k, n)
    greedy = list(range(k - 1))
    rest = list(range(k - 1, n))
    if not rest:
        return greedy, [1.0] * len(greedy)
    uniform = epsilon / len(rest)
    pick = rest[0] if rng.random() >= epsilon else int(rng.choice(rest))
    propensity = (1.0 - epsilon) + uniform if pick == rest[0] else uniform
    return [*greedy, pick], [1.0] * len(greedy) + [propensity]


def _channel_for(user: UserContext, ctx: RunContext) -> str | None:
    for name in ctx.channel_preference:
        if name in ctx.channels and user.consent.get(name) is True and (name in user.channels or name in {"file", "console"}):
            return name
    return None


def compose(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    plans = {}
    for user_id, plan in state.plans.items():
        if plan.outcome == "message":
            top = [name for name, _ in state.users[user_id].profile.top_tags]
            copy = compose_discovery([c.title for c in plan.chosen], top)
            plan = replace(plan, copy=copy, explanation=copy.body,
                           message_id=runtime.context.message_id(plan.decision_id, plan.channel or ""))
        plans[user_id] = plan
    return {"plans": plans}


def record(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Write every decision and its outbox message in one transaction."""
    conn = runtime.context.conn
    decisions, messages = [], []
    for plan in state.plans.values():
        decisions.append(
            store.DecisionRow(
                id=plan.decision_id, user_id=plan.user_id, trigger=state.trigger, policy_name=plan.policy_name,
                policy_version=plan.policy_version, seed=plan.seed,
                candidates=[{"item_id": c.item_id, "score": round(c.score, 6), "source": c.source}
                            for c in plan.candidates],
                chosen=[c.item_id for c in plan.chosen], propensities=plan.propensities, channel=plan.channel,
                send_at=plan.send_at, outcome=plan.outcome, explanation=plan.explanation, context=plan.context,
            )
        )
        if plan.outcome == "message" and plan.copy and plan.message_id and plan.channel and plan.send_at:
            messages.append(
                store.MessageRow(
                    id=plan.message_id, decision_id=plan.decision_id, user_id=plan.user_id, channel=plan.channel,
                    title=plan.copy.title, body=plan.copy.body,
                    items=[{"id": c.item_id, "title": c.title} for c in plan.chosen], send_at=plan.send_at,
                )
            )
    with conn.transaction():
        store.insert_decisions(conn, decisions)
        store.insert_messages(conn, messages)
    return {}


def deliver(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Send this batch's messages that are due now through the outbox (claim → send → mark)."""
    ctx = runtime.context
    ids = [p.message_id for p in state.plans.values() if p.message_id]
    delivered = send_due(ctx, ids)
    plans = {u: replace(p, delivered=p.message_id in delivered) for u, p in state.plans.items()}
    return {"plans": plans}


def send_due(ctx: RunContext, ids: list[str] | None, limit: int = 1000) -> set[str]:
    conn = ctx.conn
    with conn.transaction():
        claimed = store.claim_due(conn, now=ctx.now, limit=limit, ids=ids)
    sent: set[str] = set()
    for row in claimed:
        message = OutboundMessage(
            message_id=str(row["id"]), decision_id=str(row["decision_id"]), user_id=row["user_id"],
            channel=row["channel"], title=row["title"], body=row["body"], items=row["items"],
            send_at=row["send_at"].isoformat(), address=row["address"],
        )
        channel = ctx.channels.get(row["channel"])
        with conn.transaction():
            if channel is None:
                store.mark_failed(conn, message.message_id, error=f"channel {row['channel']!r} is not configured",
                                  retry_in=None, now=ctx.now)
                continue
            try:
                channel.send(message)
            except DeliveryError as exc:
                store.mark_failed(conn, message.message_id, error=str(exc), retry_in=None, now=ctx.now)
                continue
            store.mark_sent(conn, message.message_id, ctx.now)
            sent.add(message.message_id)
    return sent


def anything_to_say(state: RunState) -> str:
    return "compose" if any(p.outcome == "message" for p in state.plans.values()) else "record"


def anything_due(state: RunState) -> str:
    return "deliver" if any(p.message_id for p in state.plans.values()) else "__end__"
