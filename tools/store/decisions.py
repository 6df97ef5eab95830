"""Decisions and the message outbox. A decision and its message are written in one transaction
(the caller's); delivery claims due messages with FOR UPDATE SKIP LOCKED so any number of workers
share the outbox without sending a message twice. A claim is a lease (`claimed_until`): a message
whose worker died mid-send is claimed again once the lease expires (receivers dedupe on its id).

Decisions and messages are inserted per batch in one statement each (the batch's rows as one JSON
document typed by `jsonb_to_recordset`, keeping the on-conflict-do-nothing rule of a retried run, except
that a retry with `send_now` pulls its message forward while it is pending and untried);
a decision's candidate set is stored as parallel arrays (migration 0029: ids, scores, providers,
source bit masks over `source_names`), which the export turns back into the
`[{item_id, score, source, provider}]` list. The facts a run reads about its users (sends, caps,
unsubscribes, arm engagement) are in tools/store/runs.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import psycopg

from tagloop.tools.errors import InvalidInput
from tagloop.tools.retrieval import CandidateLog
from tagloop.tools.store.runs import UNSUBSCRIBED_CHANNEL


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
on conflict (id) do update set send_at = excluded.send_at, next_attempt_at = excluded.send_at
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
    """Insert outbox messages, first due at their send time (a message id already stored is kept)."""
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


_CLAIM = """
update messages m set status = 'sending', attempts = m.attempts + 1, claimed_until = %(lease_end)s
from users u
where u.id = m.user_id and m.id in (
    select id from messages
    where ((status = 'pending' and next_attempt_at <= %(now)s)
           or (status = 'sending' and claimed_until < %(now)s))
      and (%(any)s or id = any(%(ids)s::uuid[]))
    order by next_attempt_at
    limit %(limit)s
    for update skip locked)
returning m.*, u.channels ->> m.channel as address, u.consent, u.timezone, u.updated_at as user_updated_at
"""


def claim_due(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    limit: int = 100,
    ids: list[str] | None = None,
    lease: timedelta = timedelta(minutes=5),
) -> list[dict[str, Any]]:
    """Lease up to `limit` due messages (and expired leases) as 'sending' and return them with the
    user's address, consent and time zone. Commit before sending."""
    return conn.execute(
        _CLAIM, {"now": now, "lease_end": now + lease, "limit": limit, "any": ids is None, "ids": ids or []}
    ).fetchall()


DELIVERY_LOCK_SPACE = 0x74676D  # two-key advisory lock: one sender per user at a time (caps)

_TAKE = f"""
update messages m set claimed_until = %(lease_end)s
from users u
left join lateral (
    select array_agg(x.channel) as unsub_channels, array_agg(x.at) as unsub_times from (
        select {UNSUBSCRIBED_CHANNEL} as channel, max(least(e.ts, %(now)s)) as at
        from events e
        where e.user_id = u.id and e.type = 'unsubscribe' and e.received_at >= u.updated_at
        group by 1
    ) x
) us on true
where m.id = %(id)s and m.status = 'sending' and m.claimed_until = %(mine)s and u.id = m.user_id
returning u.channels ->> m.channel as address, u.consent, u.timezone, us.unsub_channels, us.unsub_times,
          array(select s.sent_at from messages s
                where s.user_id = m.user_id and s.channel = m.channel and s.status = 'sent'
                  and s.sent_at >= %(since)s order by s.sent_at) as sent
"""


def take_claimed(
    conn: psycopg.Connection[Any], row: dict[str, Any], *, now: datetime, lease: timedelta, since: datetime
) -> dict[str, Any] | None:
    """In the caller's transaction, just before a claimed message is checked and sent: wait for any
    other sender of the same user (a transaction-scoped advisory lock, so caps count what they sent),
    then lock the message if it is still this claim's (the batch's lease may have run out and another
    worker claimed it since: None, do not send) with a fresh lease, and read what the send-time
    checks need as of now: the user's address, consent, time zone, unsubscribes (channel → time;
    every unsubscribe stored by now counts, one whose `ts` lies ahead of this clock too) and this
    channel's sends since `since`."""
    conn.execute(
        "select pg_advisory_xact_lock(%(space)s, hashtext(%(user)s))",
        {"space": DELIVERY_LOCK_SPACE, "user": row["user_id"]},
    )
    params = {
        "id": row["id"],
        "mine": row["claimed_until"],
        "now": now,
        "lease_end": now + lease,
        "since": since,
    }
    found = conn.execute(_TAKE, params).fetchone()
    if found is None:
        return None
    unsubscribed = dict(zip(found.pop("unsub_channels") or [], found.pop("unsub_times") or [], strict=True))
    return {**found, "unsubscribed": unsubscribed}


def renew_claims(
    conn: psycopg.Connection[Any], ids: list[str], *, mine: datetime, until: datetime
) -> set[str]:
    """Extend this batch's lease (claimed until `mine`) on `ids` to `until`; returns the ids still
    this batch's (any other was claimed by another worker after the lease ran out)."""
    rows = conn.execute(
        """update messages set claimed_until = %(until)s
           where id = any(%(ids)s::uuid[]) and status = 'sending' and claimed_until = %(mine)s
           returning id::text as id""",
        {"ids": ids, "mine": mine, "until": until},
    ).fetchall()
    return {r["id"] for r in rows}


def release_claims(conn: psycopg.Connection[Any], ids: list[str], *, mine: datetime) -> list[str]:
    """Hand this batch's claim (claimed until `mine`) on `ids` back unsent: pending again, due when
    it was, without the attempt the claim counted. Returns the ids released (any other was claimed
    by another worker after the lease ran out)."""
    if not ids:
        return []
    rows = conn.execute(
        """update messages set status = 'pending', attempts = greatest(attempts - 1, 0), claimed_until = null
           where id = any(%(ids)s::uuid[]) and status = 'sending' and claimed_until = %(mine)s
           returning id::text as id""",
        {"ids": ids, "mine": mine},
    ).fetchall()
    return sorted(r["id"] for r in rows)


def mark_sent(conn: psycopg.Connection[Any], message_id: str, now: datetime) -> None:
    conn.execute(
        """update messages set status = 'sent', sent_at = %(now)s, last_error = null, claimed_until = null
           where id = %(id)s""",
        {"id": message_id, "now": now},
    )


def mark_failed(
    conn: psycopg.Connection[Any], message_id: str, *, error: str, retry_in: timedelta | None, now: datetime
) -> None:
    """Back to 'pending' with a later attempt time, or 'dead' (dead-lettered) when no retry is due."""
    conn.execute(
        """update messages set status = case when %(retry)s then 'pending' else 'dead' end,
               next_attempt_at = %(next)s, last_error = %(error)s, claimed_until = null,
               dead_at = case when %(retry)s then null else %(now)s end
           where id = %(id)s""",
        {
            "id": message_id,
            "retry": retry_in is not None,
            "next": now + (retry_in or timedelta()),
            "error": error[:500],
            "now": now,
        },
    )


def defer(conn: psycopg.Connection[Any], message_id: str, *, until: datetime, reason: str) -> None:
    """Back to 'pending' until `until` without spending an attempt (quiet hours, caps)."""
    conn.execute(
        """update messages set status = 'pending', next_attempt_at = %(until)s, attempts = attempts - 1,
               last_error = %(r)s, claimed_until = null where id = %(id)s""",
        {"id": message_id, "until": until, "r": reason[:500]},
    )


def cancel(conn: psycopg.Connection[Any], message_id: str, reason: str) -> None:
    conn.execute(
        """update messages set status = 'cancelled', last_error = %(r)s, claimed_until = null
           where id = %(id)s""",
        {"id": message_id, "r": reason[:500]},
    )


_EXPORT = """
select d.id, d.user_id, d.created_at, d.policy_name, d.policy_version, d.seed, d.candidates, d.candidate_ids,
       d.candidate_scores, d.candidate_providers, d.candidate_sources, d.source_names, d.chosen,
       d.propensities, d.channel, d.send_at, d.context, d.arms, d.outcome, d.trigger,
       exists (select 1 from messages m join events e on e.message_id = m.id::text
               where m.decision_id = d.id and e.user_id = m.user_id
                 and e.type in ('open', 'click')) as engaged
from decisions d
order by d.created_at, d.id
"""


def iter_decision_log(conn: psycopg.Connection[Any], chunk: int = 500) -> Iterator[dict[str, Any]]:
    """Every decision as an OPE log record (see `tagloop decisions export`).

    Each candidate also carries what an offline replay of a slate policy needs beyond its score and
    provider (evals/ope/logs.py): `long_tail` and `exposure` (its provider's) as the policy saw
    them — logged with the decision (`context.slate.replay`, policies/slate.py `replay_inputs`;
    absent on decisions logged before) — and `tags`, the item's tag vector {tag id: weight} as
    stored now (read at export time; absent for an item no longer in the catalogue)."""
    with conn.cursor(name="decision_export") as cur:
        cur.execute(_EXPORT)
        while rows := cur.fetchmany(chunk):
            tags = _item_tags(conn, {i for r in rows for i in _candidate_ids(r)})
            for r in rows:
                context = dict(r["context"] or {})
                slate = context.get("slate")
                replay = None
                if isinstance(slate, dict) and "replay" in slate:
                    slate = dict(slate)
                    replay = slate.pop("replay")
                    if "exposure_slots" in replay:  # a ProviderExposure's counts (amortized quota)
                        slate["exposure_slots"] = replay["exposure_slots"]
                    context["slate"] = slate
                yield {
                    "decision_id": str(r["id"]),
                    "user_id": r["user_id"],
                    "ts": r["created_at"].isoformat(),
                    "policy": r["policy_name"],
                    "version": r["policy_version"],
                    "seed": r["seed"],
                    "candidates": _with_replay_inputs(_candidates(r), replay, tags),
                    "chosen": r["chosen"],
                    "propensities": r["propensities"],
                    "channel": r["channel"],
                    "send_at": r["send_at"].isoformat() if r["send_at"] else None,
                    "context": {
                        **context,
                        "arms": r["arms"],
                        "outcome": r["outcome"],
                        "trigger": r["trigger"],
                    },
                    "reward": int(r["engaged"]),
                }


def _candidate_ids(r: dict[str, Any]) -> list[str]:
    if r["candidate_ids"] is not None:
        return list(r["candidate_ids"])
    return [str(c.get("item_id")) for c in r["candidates"] or [] if isinstance(c, dict)]


_ITEM_TAGS = "select id, sparsevec_send(tag_vec) as vec from items where id = any(%(ids)s)"


def _item_tags(conn: psycopg.Connection[Any], ids: set[str]) -> dict[str, dict[str, float]]:
    """Tag vectors {tag id: weight} of the items that exist (an item without tags: {}). Read in the
    pgvector binary form, so each weight is the stored float4 exactly, as the agent reads it
    (agent/context.py `RunCache.load_item_tags`)."""
    found: dict[str, dict[str, float]] = {}
    if not ids:
        return found
    for r in conn.execute(_ITEM_TAGS, {"ids": list(ids)}):
        if r["vec"] is None:
            found[r["id"]] = {}
            continue
        blob = bytes(r["vec"])  # big-endian int32 dim, nnz, 0, nnz int32 indices, nnz float4 values
        nnz = int.from_bytes(blob[4:8], "big")
        idx = np.frombuffer(blob, ">i4", nnz, 12)
        val = np.frombuffer(blob, ">f4", nnz, 12 + 4 * nnz).astype(np.float64)
        found[r["id"]] = dict(zip(map(str, idx.tolist()), val.tolist(), strict=True))
    return found


def _with_replay_inputs(
    cands: list[dict[str, Any]], replay: dict[str, Any] | None, tags: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    tail = set(replay.get("long_tail") or []) if replay is not None else set()
    exposure = replay.get("exposure") or {} if replay is not None else {}
    for j, c in enumerate(cands):
        if replay is not None:
            c["long_tail"] = j in tail
            c["exposure"] = float(exposure.get(c.get("provider") or "", 0.0))
        if (t := tags.get(str(c.get("item_id")))) is not None:
            c["tags"] = t
    return cands


def _candidates(r: dict[str, Any]) -> list[dict[str, Any]]:
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
    return [{**r, "candidate_records": _candidates(r)} for r in rows]


def dead_letters(conn: psycopg.Connection[Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Messages given up on, newest first: id, user, channel, attempts, last error, decision id, title.
    Read in the order of messages_dead_idx (dead_at desc; every dead letter has its dead_at), so the
    newest `limit` come from the index without sorting all dead letters."""
    return conn.execute(
        """select id, user_id, channel, attempts, last_error, dead_at, decision_id, title from messages
           where status = 'dead' order by dead_at desc limit %(n)s""",
        {"n": limit},
    ).fetchall()


def dead_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) as n from messages where status = 'dead'").fetchone()
    return int(row["n"]) if row else 0


# --- the outbox at a glance (`tagloop outbox`, /metrics) and dead letters sent back ------------------

OUTBOX_STATUSES = ("pending", "sending", "sent", "dead", "cancelled")


def outbox_counts(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Messages by channel and status: [{channel, status, n}] (reads the whole outbox)."""
    return conn.execute(
        "select channel, status, count(*) as n from messages group by 1, 2 order by 1, 2"
    ).fetchall()


def oldest_pending(conn: psycopg.Connection[Any], now: datetime) -> dict[str, Any] | None:
    """The pending message whose send time passed longest ago (id, channel, send_at, next_attempt_at,
    attempts), or None when no pending message is past its send time."""
    return conn.execute(
        """select id::text as id, channel, send_at, next_attempt_at, attempts from messages
           where status = 'pending' and send_at <= %(now)s order by send_at, id limit 1""",
        {"now": now},
    ).fetchone()


def due_count(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Pending messages due now (their next attempt time has come), from the due index."""
    row = conn.execute(
        "select count(*) as n from messages where status = 'pending' and next_attempt_at <= %(now)s",
        {"now": now},
    ).fetchone()
    return int(row["n"]) if row else 0


_BACKLOG = """
select (select count(*) from messages where status = 'pending') as pending,
       (select count(*) from messages where status = 'sending') as sending,
       (select count(*) from messages where status = 'dead') as dead
"""


def outbox_backlog(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Pending, sending and dead messages (for /metrics at scrape time), each counted from its
    partial index (tests/messaging/test_outbox_backlog_plan.py)."""
    row = conn.execute(_BACKLOG).fetchone()
    return {k: int(row[k]) for k in ("pending", "sending", "dead")} if row else {}


_STATUS_OF = """
select id::text as id, status, channel from messages where id = any(%(ids)s::uuid[]) for update
"""
_REQUEUE = """
update messages set status = 'pending', attempts = 0, send_at = %(now)s, next_attempt_at = %(now)s,
       claimed_until = null, dead_at = null
where status = 'dead' and (%(all)s or id = any(%(ids)s::uuid[]))
  and (%(channel)s::text is null or channel = %(channel)s::text)
returning id::text as id
"""


def retry_dead_letters(
    conn: psycopg.Connection[Any], *, ids: list[str] | None, channel: str | None, now: datetime
) -> list[str]:
    """Send dead letters again: `ids` (all of them dead, on `channel` when given) or, with None, every
    dead letter (on `channel`). Each goes back to 'pending' with its attempts reset, due at `now`
    (its `send_at` too, so the payload and the latency metric count from the retry); consent,
    unsubscribes, quiet hours and caps are checked again when it is sent. An id that is not a dead
    letter refuses the whole request (`InvalidInput` naming each), nothing requeued. Returns the
    requeued ids, in the caller's transaction."""
    if ids is not None:
        bad_form = [i for i in ids if not _is_uuid(i)]
        if bad_form:
            raise InvalidInput(f"--id {', '.join(map(repr, bad_form))}: not a message id (a UUID)")
        ids = list(dict.fromkeys(str(uuid.UUID(i.strip())) for i in ids))
        found = {r["id"]: r for r in conn.execute(_STATUS_OF, {"ids": ids})}
        problems = []
        for i in ids:
            row = found.get(i)
            if row is None:
                problems.append(f"{i}: no such message")
            elif row["status"] != "dead":
                problems.append(f"{i}: is {row['status']}, not dead (only dead letters are retried)")
            elif channel is not None and row["channel"] != channel:
                problems.append(f"{i}: is on channel {row['channel']!r}, not {channel!r}")
        if problems:
            raise InvalidInput("cannot retry: " + "; ".join(problems) + " — nothing was requeued")
    rows = conn.execute(
        _REQUEUE, {"now": now, "all": ids is None, "ids": ids or [], "channel": channel}
    ).fetchall()
    return sorted(r["id"] for r in rows)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True
