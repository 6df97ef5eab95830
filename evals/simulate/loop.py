"""One policy, day by day, through the real agent against the simulated users.

Each simulated day d (starting at `World.config.start`, 06:00 UTC):
1. `run_users(conn, settings, users, trigger="schedule", send_now=False, now=day_d,
   run_key="sim-{policy}-{d}", channels={channel: SimChannel})` — the real graph decides what to
   send, on which channel and at which local hour (the policy's send-hour bandit), guards included;
2. the outbox is drained hour by hour for the next 24 hours (`deliver_due`, quiet hours and caps
   re-checked at send time); `SimChannel` records each delivery with the tick's time;
3. the day's deliveries are answered by the response model (`response.respond`), and the answers
   go back through the ingest path — `store_events`, then the online profile update
   `apply_events` — in one transaction, so the next day's decisions learn from them.
`run_policy` returns what the metrics need, per user and per day; wall-clock time goes only to
the `timings` it reports on stderr, never into results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import psycopg

from tagloop.agent.runner import delivery_config, policy_of, run_users
from tagloop.agent.settings import Settings
from tagloop.evals.simulate.response import Deliveries, ResponseModel, Responses, respond, user_bias
from tagloop.evals.simulate.world import World, as_utc
from tagloop.tools.ingest.loader import store_events
from tagloop.tools.ingest.records import EventRecord
from tagloop.tools.messaging.channels import OutboundMessage
from tagloop.tools.messaging.delivery import deliver_due
from tagloop.tools.online import OnlineConfig, apply_events
from tagloop.tools.store import db

FATIGUE_WINDOW = 7 * 86400.0
TICKS = 24


class SimChannel:
    """An in-process channel: records (message, tick time) instead of sending."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.now = 0.0
        self.sent: list[tuple[OutboundMessage, float]] = []

    def send(self, message: OutboundMessage) -> None:
        self.sent.append((message, self.now))


@dataclass
class PolicyRun:
    """What happened under one policy. Per user (N,): reward, messages, slots, long-tail slots,
    day of unsubscribing (-1: never); per day (D,): reward and messages; provider exposure as
    (user, provider index, position weight) triples; decision outcomes counted."""

    name: str
    reward: np.ndarray
    messages: np.ndarray
    slots: np.ndarray
    tail_slots: np.ndarray
    unsubscribed_day: np.ndarray
    daily_reward: np.ndarray
    daily_messages: np.ndarray
    exposure: list[tuple[int, int, float]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run_policy(
    world: World,
    name: str,
    policy_file: Path | None,
    days: int,
    url: str,
    settings: Settings,
    model: ResponseModel,
    seed: int,
    log: Callable[[str], None] = print,
) -> PolicyRun:
    """Simulate `days` days of the policy in the (fresh, cloned) database at `url`."""
    n = len(world.user_ids)
    sim = settings.model_copy(update={"policy_file": policy_file})
    policy = policy_of(sim)
    cfg = delivery_config(sim, policy)
    channel = SimChannel(world.config.channel)
    provider_index = {p: j for j, p in enumerate(sorted(set(world.providers)))}
    item_provider = np.array([provider_index[p] for p in world.providers])
    bias = user_bias(n, model, seed)
    history: dict[int, list[float]] = defaultdict(list)
    run = PolicyRun(
        name,
        np.zeros(n),
        np.zeros(n),
        np.zeros(n),
        np.zeros(n),
        np.full(n, -1),
        np.zeros(days),
        np.zeros(days),
    )
    timings: dict[str, float] = defaultdict(float)
    online = OnlineConfig(half_life_days=sim.profile_half_life_days)
    with db.connect(url, migrate_schema=False) as conn:
        for day in range(days):
            t0 = perf_counter()
            now = world.config.start + timedelta(days=day)
            outcomes = run_users(
                conn,
                sim,
                world.user_ids,
                trigger="schedule",
                send_now=False,
                now=now,
                run_key=f"sim-{name}-{day}",
                channels={channel.name: channel},
            )
            for o in outcomes:
                run.outcomes[o.outcome] = run.outcomes.get(o.outcome, 0) + 1
            t1 = perf_counter()
            channel.sent = []
            for tick in range(TICKS):
                at = now + timedelta(hours=tick)
                channel.now = at.timestamp()
                deliver_due(
                    conn,
                    {channel.name: channel},
                    cfg,
                    now=at,
                    limit=100_000,
                    rng=np.random.default_rng([seed, day, tick]),
                )
            t2 = perf_counter()
            horizon = (now + timedelta(days=1)).timestamp()
            d = _deliveries(world, channel.sent, history, policy.k)
            r = respond(world, model, d, bias, horizon, np.random.default_rng([seed, 3, day]))
            _ingest(conn, world, d, r, horizon, online)
            t3 = perf_counter()
            _tally(run, world, d, r, day, item_provider)
            timings["decide"] += t1 - t0
            timings["deliver"] += t2 - t1
            timings["respond+ingest"] += t3 - t2
            log(
                f"{name}: day {day + 1}/{days}: {len(d.message_ids)} delivered, reward {r.reward.sum():.0f}, "
                f"{int((run.unsubscribed_day >= 0).sum())} unsubscribed ({t3 - t0:.1f}s)"
            )
    run.timings = dict(timings)
    return run


def _deliveries(
    world: World, sent: list[tuple[OutboundMessage, float]], history: dict[int, list[float]], k: int
) -> Deliveries:
    sent = sorted(sent, key=lambda s: (s[1], s[0].message_id))
    m = len(sent)
    users = np.array([world.user_index[msg.user_id] for msg, _ in sent], dtype=np.int64)
    ts = np.array([t for _, t in sent], dtype=np.float64)
    width = max([k, *(len(msg.items) for msg, _ in sent)])
    items = np.full((m, width), -1, dtype=np.int64)
    fatigue = np.zeros(m)
    for row, (msg, t) in enumerate(sent):
        for j, it in enumerate(msg.items):
            items[row, j] = world.item_index.get(it["id"], -1)
        past = history[int(users[row])]
        fatigue[row] = sum(1 for x in past if t - FATIGUE_WINDOW <= x < t)
        past.append(t)
    return Deliveries(users, items, ts, fatigue, [msg.message_id for msg, _ in sent])


def _ingest(
    conn: psycopg.Connection[Any],
    world: World,
    d: Deliveries,
    r: Responses,
    horizon: float,
    online: OnlineConfig,
) -> None:
    """The responses as events through store_events and the online profile update, one transaction."""
    counter: dict[tuple[int, str], int] = defaultdict(int)
    events = []
    for row, item, kind, ts in zip(r.event_row, r.event_item, r.event_type, r.event_ts, strict=True):
        mid = d.message_ids[int(row)]
        n = counter[(int(row), kind)]
        counter[(int(row), kind)] += 1
        events.append(
            EventRecord(
                id=f"sim-{mid}-{kind}-{n}",
                user_id=world.user_ids[int(d.users[int(row)])],
                type=kind,
                item_id=world.item_ids[int(item)] if item >= 0 else None,
                ts=as_utc(float(ts)),
                value=None,
                message_id=mid,
                context={"source": "sim"},
            )
        )
    events.sort(key=lambda e: (e.ts, e.id))
    with conn.transaction():
        store_events(conn, events)
        apply_events(conn, events, now=as_utc(horizon), config=online)


def _tally(
    run: PolicyRun, world: World, d: Deliveries, r: Responses, day: int, item_provider: np.ndarray
) -> None:
    np.add.at(run.reward, d.users, r.reward)
    np.add.at(run.messages, d.users, 1.0)
    valid = d.items >= 0
    np.add.at(run.slots, d.users, valid.sum(axis=1))
    tail = np.where(valid, world.long_tail[np.maximum(d.items, 0)], False)
    np.add.at(run.tail_slots, d.users, tail.sum(axis=1))
    newly = d.users[r.unsubscribed]
    first = newly[run.unsubscribed_day[newly] < 0]
    run.unsubscribed_day[first] = day
    run.daily_reward[day] = r.reward.sum()
    run.daily_messages[day] = len(d.message_ids)
    weights = 1.0 / np.log2(np.arange(d.items.shape[1]) + 2.0) if d.items.size else np.zeros(0)
    rows, cols = np.nonzero(valid)
    for u, j, w in zip(d.users[rows], item_provider[d.items[rows, cols]], weights[cols], strict=True):
        run.exposure.append((int(u), int(j), float(w)))
