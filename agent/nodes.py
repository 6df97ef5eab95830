"""The graph's nodes: small typed functions that read the state, call one tool, return an update.

load_context → gather_candidates → apply_policies → choose_channel_time → compose → enqueue → record.
Each works on the whole batch with one database round trip (or one per source) where it touches the
database; the routers between them are pure functions of the state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from langgraph.runtime import Runtime

from tagloop.agent import reads
from tagloop.agent.context import CHANNEL_SETTINGS, RunContext
from tagloop.agent.prompts import COPY_SYSTEM
from tagloop.agent.state import ArmChoice, Plan, RunState, UserContext
from tagloop.policies import check_caps, choose_slate, in_holdout, next_allowed_time
from tagloop.policies.guards import consented, zone
from tagloop.tools import candidates as sources
from tagloop.tools.messaging import timing
from tagloop.tools.messaging.compose import compose_discovery, compose_with_llm
from tagloop.tools.store import decisions as store
from tagloop.tools.wording import habit, habit_of

MESSAGE = "message"
SEND_HORIZON = timedelta(days=7)
PUMP_EVERY = 10  # users between reads of what the database sent meanwhile (agent/pipeline.py)


def load_context(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Users, profiles, recent and scheduled sends (caps), unsubscribes and per-user arm evidence
    (agent/reads.py; already sent by the run's pipeline in a chunked batch)."""
    ctx = runtime.context
    pending = ctx.pipeline.users_for(state.user_ids) if ctx.pipeline else None
    pending = pending or reads.request_users(ctx.conn, state.user_ids, ctx.now, ctx.cache.tag_names)
    return {"users": pending.result()}


def gather_candidates(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Every configured source for the batch, merged per user, and the candidates' tag vectors
    into the run cache when the policy diversifies."""
    ctx = runtime.context
    ids = list(state.users)
    if not ids:
        if ctx.pipeline:
            ctx.pipeline.reads_done()
        return {"candidates": {}}
    history = ctx.pipeline.history_for(state.user_ids) if ctx.pipeline else None
    found = sources.gather(ctx.conn, ctx.sources, ids, ctx.candidate_k, ctx.now, history)
    weights = {s.name: s.weight for s in ctx.sources}
    merged = {u: sources.merge(found, weights, u, ctx.candidate_k) for u in ids}
    if templates := ctx.facts.templates:  # message templates are copy, not content (README)
        merged = {u: [c for c in cs if c[0] not in templates] for u, cs in merged.items()}
    diversity = ctx.policy.diversity
    if diversity.mmr_lambda > 0 or diversity.calibration_lambda > 0:  # MMR/calibration read them
        ctx.cache.load_item_tags(ctx.conn, {c.item_id for found in merged.values() for c in found})
    if ctx.pipeline:  # this chunk's last read: the next chunk's may go out (agent/pipeline.py)
        ctx.pipeline.reads_done()
    return {"candidates": merged}


def apply_policies(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Holdout, then the policy's slate (`choose_slate`, exact propensities, with the candidates'
    item × tag matrix for MMR/calibration) for everyone else."""
    ctx = runtime.context
    cfg = ctx.policy
    plans = {}
    chunk_tags = None  # MMR alone needs only cosines: one dense unit-row matrix for the batch
    if cfg.diversity.mmr_lambda > 0 and cfg.diversity.calibration_lambda <= 0:
        chunk_tags = ctx.cache.unit_rows(
            ctx.conn, (c.item_id for cs in state.candidates.values() for c in cs)
        )
    todo: list[Plan] = []  # first every plan, so the slates' generators are made in one go
    for user_id, user in state.users.items():
        run_key = state.run_keys.get(user_id, ctx.run_key)
        decision_id = ctx.decision_id(user_id, run_key)
        plan = Plan(user_id, decision_id, run_key, ctx.seed_of(decision_id), MESSAGE, cfg.name, cfg.version)
        plan.candidates = state.candidates.get(user_id, [])
        plan.context = _features(user, ctx, state.trigger)
        if in_holdout(user_id, cfg.guards.holdout_share, cfg.guards.holdout_salt):
            plan.outcome, plan.reason = "holdout", "user is in the global holdout"
        elif not plan.candidates:
            plan.outcome, plan.reason = "nothing_to_send", "no unseen candidates"
        else:
            todo.append(plan)
        plans[user_id] = plan
    rngs = ctx.rngs_for([plan.seed for plan in todo], 0)
    for n, (plan, rng) in enumerate(zip(todo, rngs, strict=True)):
        if n % PUMP_EVERY == 0:
            ctx.pump()
        c = plan.candidates
        columns = list(zip(*c, strict=True))  # Candidate: item_id, title, provider, score, source
        ids, providers = list(columns[0]), [p or "" for p in columns[2]]
        if chunk_tags is not None:
            item_tags, mix = chunk_tags.of(ids), None
        else:
            profile = state.users[plan.user_id].profile.tags
            item_tags, mix = ctx.cache.tag_matrix(ctx.conn, cfg.diversity, ids, profile)
        decision = choose_slate(
            cfg,
            np.array(columns[3], dtype=np.float64),
            providers,
            item_tags,
            mix,
            ctx.facts.exposure,
            ctx.facts.long_tail(providers),
            rng,
            item_ids=ids,
            seed=plan.seed,
        )
        plan.chosen = [c[i] for i in decision.actions]
        plan.propensities = list(decision.propensities)
        plan.context["slate"] = {k: v for k, v in decision.context.items() if k != "chosen_providers"}
    return {"plans": plans}


def choose_channel_time(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Channel and send hour by Thompson sampling on opens/clicks of past messages, then the guards:
    quiet hours move the send time, a full cap moves it to when the cap allows (or gives up)."""
    ctx = runtime.context
    bandits = ctx.policy.bandits
    arms = timing.ThompsonArms(bandits, ctx.cache.thompson)
    hours = list(bandits.send_hours)
    plans: dict[str, Plan] = {}
    # First every user's arms and evidence, so the propensities come from one batched quadrature.
    todo: list[tuple[Plan, UserContext, list[str], tuple[np.ndarray, np.ndarray], Any]] = []
    for user_id, plan in state.plans.items():
        if plan.outcome != MESSAGE:
            plans[user_id] = plan
            continue
        user = state.users[user_id]
        eligible = _eligible_channels(user, ctx)
        if not eligible:
            outcome, reason = _no_channel(user, ctx)
            plans[user_id] = plan.update(outcome=outcome, reason=reason)
            continue
        by_channel = timing.evidence(eligible, user.arms.channel, ctx.facts.arms.channel)
        by_hour = None
        if not state.send_now:
            succ, fail = timing.evidence(hours, user.arms.hour, ctx.facts.arms.hour)
            by_hour = (succ + timing.activity_prior(user.profile.stats.get("hour_of_week"), hours), fail)
        todo.append((plan, user, eligible, by_channel, by_hour))
    arms.prepare([t[3] for t in todo] + [t[4] for t in todo if t[4] is not None])
    ctx.pump()
    seeds = [t[0].seed for t in todo]
    rngs = zip(ctx.rngs_for(seeds, 1), ctx.rngs_for(seeds, 2), strict=True)
    for (plan, user, eligible, by_channel, by_hour), (channel_rng, hour_rng) in zip(todo, rngs, strict=True):
        user_id = plan.user_id
        arm, p = arms.choose(*by_channel, channel_rng)
        channel = eligible[arm]
        channel_choice = ArmChoice(channel, p, list(eligible))
        if by_hour is None:
            send_at, hour_choice = ctx.now, ArmChoice(None, 1.0, [])
        else:
            h, p = arms.choose(*by_hour, hour_rng)
            send_at, hour_choice = (
                timing.next_local_hour(ctx.now, user.timezone, hours[h]),
                ArmChoice(hours[h], p, hours),
            )
        allowed, why = _allowed_time(user, channel, send_at, ctx)
        if allowed is None:
            plans[user_id] = plan.update(
                outcome="capped",
                reason=why,
                channel=channel,
                channel_choice=channel_choice,
                hour_choice=hour_choice,
            )
            continue
        if why:  # the time chosen (now, for send_now) moved later: the run's caller is told why
            plan.context["held_back"] = why
        send_at = allowed
        plans[user_id] = plan.update(
            channel=channel, channel_choice=channel_choice, hour_choice=hour_choice, send_at=send_at
        )
    return {"plans": {u: plans[u] for u in state.plans}}


def compose(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Template copy, or LLM copy (validated, falling back to the template) when an LLM is set and
    the run's breaker has not stopped asking it (failures in a row, time budget); the decision's
    context records the template used and why the LLM copy was not."""
    ctx = runtime.context
    ctx.pump()
    plans = {}
    for user_id, plan in state.plans.items():
        if plan.outcome == MESSAGE:
            user = state.users[user_id]
            picks = [c.item_id for c in plan.chosen]
            top, tagged, declared = _reason_tags(user, picks, ctx)
            titles = [c.title for c in plan.chosen]
            # the words of the picks the reason lists (those carrying its tags): a mixed catalogue
            named = [i for i, ok in zip(picks, tagged, strict=True) if ok] or picks
            kinds = [kind for i in named if (kind := ctx.cache.kinds.get(i)) is not None]
            words = habit_of(kinds)
            template = copy = compose_discovery(titles, top, tagged, declared=declared, words=words)
            if ctx.llm is not None:
                kind = next((k for k in kinds if habit(k) == words), "track")  # one the words fit
                locale = user.locale or "en"
                facts = {"items": titles[:5], "kind": kind, "top_tags": top[:3], "locale": locale}
                copy = compose_with_llm(
                    ctx.llm,
                    COPY_SYSTEM,
                    facts,
                    copy,
                    ctx.allowed_link_hosts,
                    breaker=ctx.llm_breaker,
                    ref=plan.decision_id,
                )
            plan = plan.update(copy=copy, explanation=template.body)
            plan.context["copy"] = {"template": copy.template, "fallback": copy.fallback_reason}
        plans[user_id] = plan
    return {"plans": plans}


def enqueue(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Outbox rows for the messages (ids: uuid5 of decision and channel)."""
    ctx = runtime.context
    ctx.pump()
    plans, outbox = {}, []
    for user_id, plan in state.plans.items():
        if plan.outcome == MESSAGE and plan.copy and plan.channel and plan.send_at:
            plan = plan.update(message_id=ctx.message_id(plan.decision_id, plan.channel))
            # a guard moved the chosen hour (caps, quiet hours): the message's engagement is not
            # that hour arm's (the decision still logs the hour chosen and its propensity)
            hour = plan.hour_choice.arm if plan.hour_choice and "held_back" not in plan.context else None
            outbox.append(
                store.MessageRow(
                    id=plan.message_id or "",
                    decision_id=plan.decision_id,
                    user_id=user_id,
                    channel=plan.channel,
                    title=plan.copy.title,
                    body=plan.copy.body,
                    items=[{"id": c.item_id, "title": c.title} for c in plan.chosen],
                    send_at=plan.send_at,
                    send_hour=hour if isinstance(hour, int) else None,
                )
            )
        plans[user_id] = plan
    return {"plans": plans, "outbox": outbox}


def record(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Every decision and its outbox message in one transaction (a savepoint inside the caller's;
    in a chunked batch, the caller's transaction, see agent/pipeline.py)."""
    ctx = runtime.context
    ctx.pump()
    names = [s.name for s in ctx.sources]
    decisions = [_decision_row(plan, state.trigger, names) for plan in state.plans.values()]
    if ctx.pipeline:  # sent once the next chunk has read (agent/pipeline.py)
        ctx.pipeline.hold(_insert, ctx.conn, decisions, state.outbox)
        return {}
    with ctx.conn.transaction():
        _insert(ctx.conn, decisions, state.outbox)
    return {}


def _insert(conn: Any, decisions: list[store.DecisionRow], outbox: list[store.MessageRow]) -> None:
    store.insert_decisions(conn, decisions)
    store.insert_messages(conn, outbox)


def after_policies(state: RunState) -> Literal["choose_channel_time", "record"]:
    """Nothing worth sending / everyone in holdout → straight to record."""
    return "choose_channel_time" if any(p.outcome == MESSAGE for p in state.plans.values()) else "record"


def after_timing(state: RunState) -> Literal["compose", "record"]:
    """No consent or caps full for everyone → record without composing."""
    return "compose" if any(p.outcome == MESSAGE for p in state.plans.values()) else "record"


def _eligible_channels(user: UserContext, ctx: RunContext) -> list[str]:
    preferred = [c for c in ctx.policy.bandits.channels if c in ctx.channels]
    preferred += [c for c in ctx.channels if c not in preferred]
    return [
        c for c in preferred if _consented(user, c, ctx) and (c in user.channels or c in ctx.local_channels)
    ]


def _allowed_time(
    user: UserContext, channel: str, send_at: datetime, ctx: RunContext
) -> tuple[datetime | None, str]:
    """The first instant from `send_at` outside quiet hours (unless the channel is exempt) at which
    the caps allow one more message, with what moved it there ("" when nothing did), or (None, why)
    when none is within the send horizon. A cap moves the send later, which can land in quiet hours
    again: both are checked until they agree."""
    guards = ctx.policy.guards
    moved: list[str] = []
    for _ in range(8):
        if channel not in ctx.quiet_exempt:
            later = next_allowed_time(send_at, user.timezone, guards.quiet_start, guards.quiet_end)
            if later != send_at and "quiet hours" not in moved:
                moved.append("quiet hours")
            send_at = later
        cap = check_caps(user.sends, channel, send_at, guards.caps)
        if cap:
            return send_at, " and ".join(moved)
        if cap.retry_at is None or cap.retry_at - ctx.now > SEND_HORIZON:
            return None, cap.reason
        if cap.reason not in moved:
            moved.append(cap.reason)
        send_at = cap.retry_at
    return None, "no time within the send horizon is both outside quiet hours and under the caps"


def _reason_tags(
    user: UserContext, item_ids: list[str], ctx: RunContext
) -> tuple[list[str], list[bool], bool]:
    """The user's top tags, strongest first, that at least one of the picks carries (the copy says
    "because you play a lot of X" only when X is among what it sends), and for each pick whether it
    carries one of the two the template names: the reason lists those picks alone (it had credited
    all five picks it listed to tags most of them did not carry). A user whose events give no such
    tag (a new user) is given their declared interests the picks carry, if any: the third value
    says so ("because you like X")."""
    per_item = ctx.cache.tags_per_item(ctx.conn, item_ids)
    carried = set().union(*per_item)
    names = ctx.cache.tag_names  # the names of the users' top tags, read with the profiles
    shared = sorted(
        ((w, t, names[t]) for t, w in user.profile.tags.items() if w > 0 and t in carried and t in names),
        reverse=True,
    )
    declared = not shared and bool(user.interests)
    if declared:
        ids = ctx.cache.ids_of_tags(ctx.conn, user.interests)
        shared = sorted(
            ((w, ids[n], n) for n, w in user.interests.items() if n in ids and ids[n] in carried),
            reverse=True,
        )
    named = {t for _, t, _ in shared[:2]}
    return [n for _, _, n in shared[:3]], [bool(tags & named) for tags in per_item], declared and bool(shared)


def _no_channel(user: UserContext, ctx: RunContext) -> tuple[str, str]:
    """The outcome and reason when no channel is eligible: `no_channel` when the user consented
    (with an address) to channels this deployment does not deliver on, which no consent fixes
    (a webhook without its URL and secret, email without TAGLOOP_SMTP_URL, a channel tagloop does
    not have), else `no_consent`."""
    missing = sorted(
        c for c in user.consent if _consented(user, c, ctx) and c in user.channels and c not in ctx.channels
    )
    if missing:
        named = [f"{c} (needs {CHANNEL_SETTINGS[c]})" if c in CHANNEL_SETTINGS else c for c in missing]
        return "no_channel", f"the user's consented channels are not configured here: {', '.join(named)}"
    return "no_consent", "no channel with consent, an address and no unsubscribe"


def _consented(user: UserContext, channel: str, ctx: RunContext) -> bool:
    return consented(user.consent, user.unsubscribed, channel, ctx.now)


def _features(user: UserContext, ctx: RunContext, trigger: str) -> dict[str, Any]:
    local = ctx.now.astimezone(zone(user.timezone))
    return {
        "trigger": trigger,
        "local_hour": local.hour,
        "weekday": local.isoweekday(),
        "n_events": user.profile.n_events,
        "skip_rate": user.profile.stats.get("skip_rate"),
        "top_tags": [name for name, _ in user.profile.top_tags[:5]],
    }


def _decision_row(plan: Plan, trigger: str, source_names: list[str]) -> store.DecisionRow:
    arms = {}
    if plan.channel_choice:
        arms["channel"] = plan.channel_choice.log()
    if plan.hour_choice:
        arms["send_hour"] = plan.hour_choice.log()
    return store.DecisionRow(
        id=plan.decision_id,
        user_id=plan.user_id,
        trigger=trigger,
        policy_name=plan.policy_name,
        policy_version=plan.policy_version,
        seed=plan.seed,
        candidates=store.CandidateLog.of_candidates(plan.candidates, source_names),
        chosen=[c.item_id for c in plan.chosen],
        propensities=plan.propensities,
        channel=plan.channel,
        send_at=plan.send_at,
        outcome=plan.outcome,
        explanation=plan.explanation or plan.reason,
        context=plan.context,
        run_key=plan.run_key,
        arms=arms,
    )
