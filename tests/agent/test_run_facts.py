"""The run facts' long tail: every provider outside the head of 90-day interactions is long tail,
providers nobody has played yet included (they used to be counted as head, so the long-tail quota
could never reach new artists); an item without a provider is not; no popularity, no long tail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from tagloop.agent.context import RunFacts
from tagloop.agent.runner import load_facts
from tagloop.policies import preset
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import parse_event, parse_item, parse_user

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def test_providers_nobody_played_are_long_tail(db: psycopg.Connection[Any]) -> None:
    loader.store_users(db, [parse_user({"id": "u", "timezone": "UTC"})])
    items = [("hit", "star"), ("deep", "niche"), ("new", "newcomer"), ("anon", None)]
    loader.store_items(db, [parse_item({"id": i, "provider": p} if p else {"id": i}) for i, p in items])
    before = load_facts(db, NOW, preset("default"))  # no interactions yet: no head, no long tail
    assert before.head == frozenset() and before.long_tail(["star", "niche"]).tolist() == [False, False]
    plays = [("hit", 90), ("deep", 10)]
    events = [
        parse_event(
            {"user_id": "u", "type": "play", "item_id": i, "ts": (NOW - timedelta(hours=n + 1)).isoformat()},
            now=NOW,
        )
        for i, count in plays
        for n in range(count)
    ]
    loader.store_events(db, events)
    facts = load_facts(db, NOW, preset("default"))  # head mass 0.8: "star" alone
    assert facts.head == frozenset({"star"})
    flags = facts.long_tail(["star", "niche", "newcomer", ""])
    assert flags.tolist() == [False, True, True, False]
    assert RunFacts().long_tail(["niche"]).tolist() == [False]
    assert isinstance(flags, np.ndarray) and flags.dtype == bool
