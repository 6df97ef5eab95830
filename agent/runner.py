"""Running the decision graph for users: batches through the compiled graph on one connection,
with the policy, candidate sources, channels and LLM the settings configure. Used by `tagloop run`,
the HTTP API (`POST /v1/users/{id}/runs`), the worker and the benchmark alike.

`run_users` holds the per-user advisory locks the worker uses while it decides a batch (so a
requested run and a worker never decide one user at once), commits each batch's decisions (so they
are durable before anything is sent), then, with `send_now`, delivers that batch's messages through
the outbox — guards still apply, so a message in the user's quiet hours or over a cap stays queued.
`decide` is the same without commit or delivery, for callers that own the transaction (the worker).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from tagloop.agent.context import RunCache, RunContext, RunFacts
from tagloop.agent.graph import graph
from tagloop.agent.pipeline import ChunkPipeline
from tagloop.agent.runshare import RunShare
from tagloop.agent.settings import Settings, unsubscribe_links
from tagloop.agent.state import Plan, RunInput
from tagloop.policies import PolicyConfig, head_providers, load_policy, preset
from tagloop.tools import neighbors
from tagloop.tools.candidates import CandidateSource, sources_named
from tagloop.tools.errors import ConfigError, InvalidInput
from tagloop.tools.gc_pause import gc_paused
from tagloop.tools.llm import LLM, LLMBreaker, OpenAICompatibleLLM
from tagloop.tools.messaging.channels import Channel, ConsoleChannel, FileChannel
from tagloop.tools.messaging.delivery import DeliveryConfig, deliver_due
from tagloop.tools.store import runs
from tagloop.tools.store.decisions import decided_before, stored_decisions

BATCH = 200
CHUNK = 50  # users per graph invoke within a larger batch (agent/pipeline.py)
log = logging.getLogger("tagloop.agent")


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
    reason: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)
    # the message's outbox status after the run (pending, sent, dead, cancelled, …) and, unless
    # sent, its last delivery error
    delivery: str | None = None
    delivery_error: str | None = None
    # what moved the message's send time later than chosen (quiet hours, a channel's cap), if any
    held_back: str | None = None

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> RunOutcome:
        """The outcome of a decision already stored (`store.stored_decisions`): `delivered` says
        whether its message was sent, by this run or the one that stored it."""
        records = {c["item_id"]: c for c in row["candidate_records"]}
        chosen = []
        for item in row["chosen"]:
            c = records.get(item, {})
            score = c.get("score")
            chosen.append(
                {
                    "item_id": item,
                    "title": row["titles"].get(item),
                    "score": round(float(score), 4) if score is not None else None,
                    "source": c.get("source"),
                }
            )
        send_at = row["message_send_at"] or row["send_at"]
        message = row["outcome"] == "message"
        return cls(
            user_id=row["user_id"],
            decision_id=row["id"],
            outcome=row["outcome"],
            channel=row["channel"],
            chosen=chosen,
            propensities=[round(p, 6) for p in row["propensities"]],
            send_at=send_at.isoformat() if send_at else None,
            policy=f"{row['policy_name']}@{row['policy_version']}",
            explanation=row["explanation"] if message else None,
            title=row["title"],
            message_id=row["message_id"],
            delivered=row["message_status"] == "sent",
            reason=None if message else row["explanation"],
            arms=dict(row["arms"] or {}),
            held_back=row["held_back"],
        )

    @classmethod
    def from_plan(cls, plan: Plan) -> RunOutcome:
        arms = {}
        if plan.channel_choice:
            arms["channel"] = plan.channel_choice.log()
        if plan.hour_choice:
            arms["send_hour"] = plan.hour_choice.log()
        return cls(
            user_id=plan.user_id,
            decision_id=plan.decision_id,
            outcome=plan.outcome,
            channel=plan.channel,
            chosen=[
                {"item_id": c.item_id, "title": c.title, "score": round(c.score, 4), "source": c.source}
                for c in plan.chosen
            ],
            propensities=[round(p, 6) for p in plan.propensities],
            send_at=plan.send_at.isoformat() if plan.send_at else None,
            policy=f"{plan.policy_name}@{plan.policy_version}",
            explanation=plan.explanation,
            title=plan.copy.title if plan.copy else None,
            message_id=plan.message_id,
            delivered=plan.delivered,
            reason=plan.reason,
            arms=arms,
            held_back=plan.context.get("held_back"),
        )


def configured_channels(settings: Settings) -> frozenset[str]:
    """The names of `default_channels(settings)` without building them (what a profile reports
    as reachable; tests/agent/test_graph.py checks that the two agree)."""
    names = {"console", "file"}
    if settings.outbound_webhook_url and settings.outbound_webhook_secret:
        names.add("webhook")
    if settings.smtp_url:
        names.add("email")
    return frozenset(names)


def default_channels(settings: Settings) -> dict[str, Channel]:
    """console and file always; webhook and email when the settings configure them."""
    channels: dict[str, Channel] = {"console": ConsoleChannel(), "file": FileChannel(settings.outbox_file)}
    if settings.outbound_webhook_url and settings.outbound_webhook_secret:
        from tagloop.tools.messaging.webhook import WebhookChannel

        channels["webhook"] = WebhookChannel(
            settings.outbound_webhook_url,
            settings.outbound_webhook_secret.get_secret_value(),
            timeout=settings.delivery_timeout_seconds,
            allow_private=settings.outbound_allow_private,
        )
    if settings.smtp_url:
        from tagloop.tools.messaging.email import EmailChannel

        channels["email"] = EmailChannel(
            settings.smtp_url,
            settings.smtp_from,
            timeout=settings.delivery_timeout_seconds,
            unsubscribe=unsubscribe_links(settings),
        )
    return channels


def sources_of(settings: Settings) -> tuple[CandidateSource, ...]:
    """New candidate sources as the settings name them, searching tags as they say."""
    return sources_named(settings.candidate_sources, tag_search=settings.tag_search)


def policy_of(settings: Settings) -> PolicyConfig:
    """The policy the settings name; a file that cannot be read or is not valid is a configuration
    error (a 500 over HTTP), not the client's invalid input."""
    if not settings.policy_file:
        return preset("default")
    try:
        return load_policy(settings.policy_file)
    except InvalidInput as exc:
        raise ConfigError(f"TAGLOOP_POLICY_FILE: {exc}") from None


def check_run_settings(settings: Settings) -> None:
    """Build what a run builds from the settings (channels, policy, candidate sources) once and
    drop it: `serve` checks them at start-up whatever its flags, where a bad one failed only the
    first run requested over HTTP when no worker or scheduler built them."""
    for channel in default_channels(settings).values():
        if close := getattr(channel, "close", None):  # the webhook's HTTP client
            close()
    policy_of(settings)
    sources_of(settings)


def llm_of(settings: Settings) -> LLM | None:
    """The LLM the settings name, one client per process and settings: a client per run context
    (every worker batch, every run over HTTP) opened new connections each time, a TLS handshake a
    batch, and left its sockets open until the cycle collector ran (paused while deciding)."""
    if not (settings.llm_base_url and settings.llm_model):
        return None
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "unused"
    return _llm(
        settings.llm_base_url, settings.llm_model, key, settings.llm_timeout_seconds, settings.llm_max_retries
    )


@functools.lru_cache(maxsize=4)  # clients of other settings kept: tests, a process reloading them
def _llm(base_url: str, model: str, key: str, timeout: float, max_retries: int) -> LLM:
    return OpenAICompatibleLLM(base_url, model, key, timeout=timeout, max_retries=max_retries)


def delivery_config(settings: Settings, policy: PolicyConfig) -> DeliveryConfig:
    return DeliveryConfig(
        max_attempts=settings.delivery_max_attempts,
        backoff=timedelta(seconds=settings.delivery_backoff_seconds),
        backoff_max=timedelta(seconds=settings.delivery_backoff_max_seconds),
        lease=timedelta(seconds=settings.delivery_lease_seconds),
        quiet_start=policy.guards.quiet_start,
        quiet_end=policy.guards.quiet_end,
        quiet_exempt=frozenset(settings.quiet_exempt_channels),
        caps=policy.guards.caps,
        holdout_share=policy.guards.holdout_share,
        holdout_salt=policy.guards.holdout_salt,
    )


_PROVIDER_POPULARITY = """
select i.provider_id, count(*) as n from events e join items i on i.id = e.item_id
where e.ts > %(since)s and e.ts <= %(now)s and i.provider_id is not null
group by 1
"""

_PROVIDER_EXPOSURE = """
select i.provider_id,
       sum(power(0.5, greatest(extract(epoch from (%(now)s - m.send_at)), 0) / %(hl)s)
           * ln(2) / ln(x.ord + 1)) as e
from messages m
cross join lateral jsonb_array_elements(m.items) with ordinality as x(item, ord)
join items i on i.id = x.item ->> 'id'
where m.send_at > %(since)s and m.status in ('pending', 'sending', 'sent') and i.provider_id is not null
group by 1
"""


def load_facts(conn: psycopg.Connection[Any], now: datetime, policy: PolicyConfig) -> RunFacts:
    """The head of providers by 90-day interactions (every other provider is long tail, those with
    none included), decayed position-weighted provider exposure from the last two weeks of
    messages, overall arm engagement and the message templates (items of kind `message`, which no
    source may propose) — one read per run."""
    rows = conn.execute(_PROVIDER_POPULARITY, {"since": now - timedelta(days=90), "now": now})
    popularity = {r["provider_id"]: float(r["n"]) for r in rows}
    hl = policy.fairness.exposure_half_life_days * 86400.0
    rows = conn.execute(_PROVIDER_EXPOSURE, {"now": now, "since": now - timedelta(days=14), "hl": hl})
    exposure = {r["provider_id"]: float(r["e"]) for r in rows}
    overall, _ = runs.arm_counts(conn, since=now - timedelta(days=90))
    head = frozenset(head_providers(popularity, policy.fairness.long_tail_head_mass))
    templates = frozenset(r["id"] for r in conn.execute("select id from items where kind = 'message'"))
    return RunFacts(head, exposure, overall, templates)


def make_context(
    conn: psycopg.Connection[Any],
    settings: Settings,
    *,
    now: datetime,
    run_key: str,
    channels: Mapping[str, Channel] | None = None,
    policy: PolicyConfig | None = None,
    facts: RunFacts | None = None,
    cache: RunCache | None = None,
    sources: tuple[CandidateSource, ...] | None = None,
    refresh_neighbors: bool = True,
) -> RunContext:
    """The run context; pass `cache` to share item tags and propensities across runs and `sources`
    (from `sources_named`) to share the sources' per-run reads (the worker renews both with its
    facts). A run starts by refreshing the precomputed co-likes when they are stale
    (tools/neighbors.py); with `refresh_neighbors=False` only when they were never computed (a
    run requested over HTTP leaves the daily refresh, ~10 s on a million events, to the workers)."""
    policy = policy or policy_of(settings)
    if "co_likes" in settings.candidate_sources:
        if refresh_neighbors:
            neighbors.refresh_if_stale(conn, now)
        else:
            neighbors.refresh_if_stale(conn, now, max_age=timedelta.max, growth=math.inf)
    return RunContext(
        conn=conn,
        channels=channels if channels is not None else default_channels(settings),
        now=now,
        run_key=run_key,
        policy=policy,
        sources=sources if sources is not None else sources_of(settings),
        facts=facts if facts is not None else load_facts(conn, now, policy),
        candidate_k=settings.candidate_k,
        llm=llm_of(settings),
        llm_breaker=LLMBreaker(
            max_failures=settings.llm_breaker_failures, budget_seconds=settings.llm_budget_seconds
        ),
        allowed_link_hosts=frozenset(settings.allowed_link_hosts),  # lower case already (settings)
        quiet_exempt=frozenset(settings.quiet_exempt_channels),
        cache=cache if cache is not None else RunCache(),
    )


def decide(
    ctx: RunContext,
    user_ids: list[str],
    *,
    trigger: str,
    send_now: bool = False,
    run_keys: dict[str, str] | None = None,
) -> dict[str, Plan]:
    """One batch through the graph inside the caller's transaction (no commit, no delivery).

    A batch of more than `CHUNK` users goes through in chunks in pipeline mode, each chunk's
    inserts written while the next is decided (agent/pipeline.py); either way every decision is
    written when this returns. Repeated ids are decided once."""
    user_ids = list(dict.fromkeys(user_ids))
    keys = run_keys or {}
    with gc_paused():
        if len(user_ids) <= CHUNK or ctx.conn.autocommit:  # autocommit: no transaction to hold writes in
            return _invoke(ctx, user_ids, trigger, send_now, keys)
        # The first chunk's reads and the last chunk's writes are waited for: half a chunk first
        head = CHUNK // 2
        chunks = [user_ids[:head]] + [user_ids[i : i + CHUNK] for i in range(head, len(user_ids), CHUNK)]
        pipeline = ChunkPipeline(ctx.conn, tuple(ctx.sources), ctx.candidate_k, ctx.now, ctx.cache.tag_names)
        chunked = replace(ctx, pipeline=pipeline)
        plans: dict[str, Plan] = {}
        try:
            with ctx.conn.pipeline():
                pipeline.start(chunks)
                for j, chunk in enumerate(chunks):
                    pipeline.upcoming = chunks[j + 1 : j + 3]
                    plans.update(_invoke(chunked, chunk, trigger, send_now, keys))
                pipeline.flush()
        except BaseException:
            pipeline.abandon()
            raise
        return plans


def _invoke(
    ctx: RunContext, user_ids: list[str], trigger: str, send_now: bool, run_keys: dict[str, str]
) -> dict[str, Plan]:
    state = graph.invoke(
        RunInput(user_ids=user_ids, trigger=trigger, send_now=send_now, run_keys=run_keys), context=ctx
    )
    plans: dict[str, Plan] = state["plans"]
    return plans


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
    share: RunShare | None = None,
) -> list[RunOutcome]:
    """Decide for `user_ids` (unknown ids are skipped), commit, and with `send_now` deliver.
    `share`: run facts and trending shared with other runs of the process (agent/runshare.py; the
    co-likes table is then only computed when missing, not refreshed). Without `now` the run
    follows the wall clock: each batch is decided, guarded and delivered at its own time (a run over
    many users takes minutes); the run key stays the start's. A given `now` is the run's one time
    (reproducible runs, simulations)."""
    live = now is None
    now = now or datetime.now(UTC)

    def clock() -> datetime:
        return datetime.now(UTC) if live else now

    policy = policy_of(settings)
    ctx = make_context(
        conn,
        settings,
        now=now,
        run_key=run_key or f"{trigger}|{now.strftime('%Y-%m-%dT%H:%M')}",
        channels=channels,
        policy=policy,
        facts=share.facts(conn, now, policy) if share else None,
        sources=share.sources(settings.candidate_sources, tag_search=settings.tag_search) if share else None,
        refresh_neighbors=share is None,
    )
    cfg = delivery_config(settings, ctx.policy)
    outcomes: list[RunOutcome] = []
    for batch in _batches(list(user_ids), BATCH):
        runs.wait_for_users(conn, batch)  # a worker deciding one of these users finishes first
        ctx = replace(ctx, now=clock())
        plans = decide(ctx, batch, trigger=trigger, send_now=send_now)
        # a run repeating one of the same run key kept the stored decision: report that one
        repeated = decided_before(conn, [p.decision_id for p in plans.values()])
        conn.commit()
        sent: set[str] = set()
        if send_now:
            ids = [p.message_id for p in plans.values() if p.message_id]
            if ids:
                rng = np.random.default_rng([ctx.seed_of(next(iter(plans.values())).decision_id), 9])
                report = deliver_due(conn, ctx.channels, cfg, now=clock(), rng=rng, ids=ids, limit=len(ids))
                sent = set(report.sent)
                plans = {u: _delivered(p, sent) for u, p in plans.items()}
        stored = {r["user_id"]: RunOutcome.from_stored(r) for r in stored_decisions(conn, sorted(repeated))}
        done = [stored.get(u) or RunOutcome.from_plan(plans[u]) for u in batch if u in plans]
        outbox = runs.message_statuses(conn, [o.message_id for o in done if o.message_id])
        conn.commit()
        outcomes.extend(_with_delivery(o, outbox.get(o.message_id or "")) for o in done)
        if progress:
            progress(len(batch))
    return outcomes


def _with_delivery(outcome: RunOutcome, status: tuple[str, str | None] | None) -> RunOutcome:
    if status is None:
        return outcome
    return replace(outcome, delivery=status[0], delivery_error=None if status[0] == "sent" else status[1])


def _delivered(plan: Plan, sent: set[str]) -> Plan:
    plan.delivered = plan.message_id in sent
    return plan


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
