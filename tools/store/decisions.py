"""Decisions and their outbox messages as the agent writes them, and stored decisions read back.

A decision and its message are written in one transaction (the caller's), per batch in one statement
each (the batch's rows as one JSON document typed by `jsonb_to_recordset`, keeping the
on-conflict-do-nothing rule of a retried run, except that a retry with `send_now` pulls its message
forward while it is pending and untried); a decision's candidate set is stored as parallel arrays
(migration 0029: ids, scores, providers, source bit masks over `source_names`), which
`candidate_records` turns back into the `[{item_id, score, source, provider}]` list. Delivery's side
of the outbox is tools/store/outbox.py, the OPE export tools/store/decision_log.py; the facts a run
reads about its users (sends, caps, unsubscribes, arm engagement) are in tools/store/runs.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from tagloop.tools.retrieval import CandidateLog


@dataclass
class DecisionRow:
    id: str
    user_id: str
    trigger: str
    policy_name: str
    policy_version: str
    seed: int
    candidates: CandidateLog | list[dict[str, Any]]  # a list: [{item_id, score, source, provider}]
    chosen: list[str]
    propensities: list[float]
    channel: str | None
    send_at: datetime | None
    outcome: str
    explanation: str | None
    context: dict[str, Any]
    run_key: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)


@dataclass
class MessageRow:
    id: str
    decision_id: str
    user_id: str
    channel: str
    title: str
    body: str
    items: list[dict[str, str]]
    send_at: datetime
    send_hour: int | None = None


# A batch is one statement: its rows as one JSON document (orjson), typed by jsonb_to_recordset on
# the server, inserted with the same conflict rule as one row at a time (a retried run reuses its
# decision and message ids). Building the document in C is several times cheaper than psycopg's
# per-value dumping of a COPY (arrays and JSON columns were most of a decision's write time).
_DECISION_COLUMNS = (
    "id uuid, user_id text, trigger text, policy_name text, policy_version text, seed int8, chosen jsonb,"
    " propensities float8[], channel text, send_at timestamptz, outcome text, explanation text,"
    " context jsonb, run_key text, arms jsonb, candidate_ids text[], candidate_scores float8[],"
    " candidate_providers text[], candidate_sources int2[], source_names text[]"
)
_INSERT_DECISIONS = f"""
insert into decisions (id, user_id, trigger, policy_name, policy_version, seed, chosen, propensities,
                       channel, send_at, outcome, explanation, context, run_key, arms, candidate_ids,
                       candidate_scores, candidate_providers, candidate_sources, source_names)
select * from jsonb_to_recordset(%(rows)s::jsonb) as x({_DECISION_COLUMNS})
on conflict (id) do nothing
"""
_INSERT_MESSAGES = """
insert into messages (id, decision_id, user_id, channel, title, body, items, send_at, next_attempt_at,
                      send_hour)
select x.id, x.decision_id, x.user_id, x.channel, x.title, x.body, x.items, x.send_at, x.send_at,
       x.send_hour
from jsonb_to_recordset(%(rows)s::jsonb) as x(id uuid, decision_id uuid, user_id text, channel text,
                                               title text, body text, items jsonb, send_at timestamptz,
                                               send_hour int)
join decisions d on d.id = x.decision_id and d.outcome = 'message' and d.channel = x.channel
on conflict (id) do update set send_at = excluded.send_at, next_attempt_at = excluded.send_at,
                               send_hour = excluded.send_hour
where messages.status = 'pending' and messages.attempts = 0 and excluded.send_at < messages.next_attempt_at
"""
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows, default=str, option=_JSON_OPTIONS).decode()


def insert_decisions(conn: psycopg.Connection[Any], rows: list[DecisionRow]) -> None:
    """Insert decisions (a decision id already stored is left as it is)."""
    if not rows:
        return
    logs = [CandidateLog.from_records(c) if isinstance(c, list) else c for c in (r.candidates for r in rows)]
    doc = [
        {
            "id": r.id,
            "user_id": r.user_id,
            "trigger": r.trigger,
            "policy_name": r.policy_name,
            "policy_version": r.policy_version,
            "seed": r.seed,
            "chosen": r.chosen,
            "propensities": r.propensities,
            "channel": r.channel,
            "send_at": r.send_at,
            "outcome": r.outcome,
            "explanation": r.explanation,
            "context": r.context,
            "run_key": r.run_key,
            "arms": r.arms,
            "candidate_ids": c.item_ids,
            "candidate_scores": c.scores,
            "candidate_providers": c.providers,
            "candidate_sources": c.sources,
            "source_names": c.source_names,
        }
        for r, c in zip(rows, logs, strict=True)
    ]
    conn.execute(_INSERT_DECISIONS, {"rows": _json(doc)}, prepare=False)


def insert_messages(conn: psycopg.Connection[Any], rows: list[MessageRow]) -> None:
    """Insert outbox messages, first due at their send time (a message id already stored is kept).
    A message is only stored for a stored decision that sends on its channel: a run repeating a
    stored decision's run key (its insert kept the stored one) whose plan changed meanwhile (another
    channel reachable, consent given since) adds no second message to it."""
    if not rows:
        return
    doc = [
        {
            "id": r.id,
            "decision_id": r.decision_id,
            "user_id": r.user_id,
            "channel": r.channel,
            "title": r.title,
            "body": r.body,
            "items": r.items,
            "send_at": r.send_at,
            "send_hour": r.send_hour,
        }
        for r in rows
    ]
    conn.execute(_SEQSCAN_OFF)
    conn.execute(_INSERT_MESSAGES, {"rows": _json(doc)}, prepare=False)
    conn.execute(_SEQSCAN_BACK)


# Every message's foreign-key check looks its decision up by primary key. Planned while `decisions`
# is empty by its statistics (a new install, or a vacuum after a purge), that lookup is a
# sequential scan, and the plan stays cached in the session while the table fills up, so each
# message scans every decision written so far: +0.5 ms of server time per decision over a
# 10,000-user run (bench/agent.py). The check is planned inside the insert, so sequential scans are
# off around it (transaction-local; the previous setting is restored after).
_SEQSCAN_OFF = """
select set_config('tagloop.enable_seqscan', current_setting('enable_seqscan'), true),
       set_config('enable_seqscan', 'off', true)
"""
_SEQSCAN_BACK = "select set_config('enable_seqscan', current_setting('tagloop.enable_seqscan'), true)"


_EXISTING = "select id::text from decisions where id = any(%(ids)s::uuid[]) and created_at < now()"
_STORED = """
select d.id::text as id, d.user_id, d.outcome, d.channel, d.chosen, d.propensities, d.send_at, d.policy_name,
       d.policy_version, d.explanation, d.arms, d.context ->> 'held_back' as held_back,
       d.candidates, d.candidate_ids, d.candidate_scores,
       d.candidate_providers, d.candidate_sources, d.source_names,
       m.id::text as message_id, m.title, m.send_at as message_send_at, m.status as message_status,
       (select coalesce(jsonb_object_agg(i.id, i.title), '{}') from items i
        where i.id in (select jsonb_array_elements_text(d.chosen))) as titles
from decisions d left join messages m on m.decision_id = d.id
where d.id = any(%(ids)s::uuid[])
"""


def decided_before(conn: psycopg.Connection[Any], ids: list[str]) -> set[str]:
    """Which of these decision ids were stored before the current transaction (a repeated run:
    its insert kept the stored decision)."""
    if not ids:
        return set()
    return {r["id"] for r in conn.execute(_EXISTING, {"ids": ids})}


def stored_decisions(conn: psycopg.Connection[Any], ids: list[str]) -> list[dict[str, Any]]:
    """Stored decisions with their message (id, title, send time, status), chosen items' titles and
    candidate records (`candidate_records`: item_id, score, source, provider)."""
    if not ids:
        return []
    rows = conn.execute(_STORED, {"ids": ids}).fetchall()
    return [{**r, "candidate_records": candidate_records(r)} for r in rows]


def candidate_records(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored decision row's candidates as [{item_id, score, source, provider}] (parallel arrays,
    or the JSON list of decisions logged before migration 0029)."""
    if r["candidate_ids"] is None:
        return [dict(c) for c in r["candidates"] or []]
    log = CandidateLog(
        r["candidate_ids"],
        r["candidate_scores"],
        r["candidate_providers"],
        r["candidate_sources"],
        r["source_names"],
    )
    return log.records()
