"""Every stored decision as an off-policy evaluation log record (`tagloop decisions export`), with
what an offline replay of its slate needs (evals/ope/logs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg

from tagloop.tools.sparsevec import parse_sparsevecs
from tagloop.tools.store.decisions import candidate_records

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
                    "candidates": _with_replay_inputs(candidate_records(r), replay, tags),
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
    pgvector binary form and parsed as the agent parses it (tools/sparsevec.py, agent/context.py
    `RunCache.load_item_tags`), so each weight is the stored float4 exactly."""
    if not ids:
        return {}
    rows = conn.execute(_ITEM_TAGS, {"ids": list(ids)}).fetchall()
    nnz, tags, weights = parse_sparsevecs([r["vec"] for r in rows])
    ends = np.cumsum(nnz).tolist()
    names, values = list(map(str, tags.tolist())), weights.tolist()
    return {
        r["id"]: dict(zip(names[end - n : end], values[end - n : end], strict=True))
        for r, n, end in zip(rows, nnz.tolist(), ends, strict=True)
    }


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
