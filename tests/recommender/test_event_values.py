"""Only a play's `value` counts (its play count), in SQL and in Python alike: a convert's value is
revenue, and weighing it let the price, not the user, decide (a 259-unit purchase weighed 1,295, a
0.5-unit one less than a like)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tagloop.tools.recommender.confidence import EVENT_WEIGHTS, event_weight
from tagloop.tools.recommender.train import RAW_WEIGHTS


@pytest.mark.parametrize(
    ("type_", "value", "weight"),
    [
        ("play", 3.0, 3.0),
        ("play", None, 1.0),
        ("convert", 259.0, 5.0),
        ("convert", 0.5, 5.0),
        ("like", 7.0, 5.0),
    ],
)
def test_only_a_plays_value_counts(
    db: psycopg.Connection[Any], type_: str, value: float | None, weight: float
) -> None:
    assert event_weight(type_, value) == weight
    db.execute("insert into users (id, timezone) values ('u', 'UTC')")
    db.execute("insert into items (id, title) values ('i', 'I')")
    db.execute(
        """insert into events (id, user_id, type, item_id, ts, value)
           values ('e', 'u', %(t)s, 'i', now(), %(v)s)""",
        {"t": type_, "v": value},
    )
    row = db.execute(RAW_WEIGHTS, {"weights": json.dumps(EVENT_WEIGHTS)}).fetchone()
    assert row is not None and row["w"] == weight  # the model's SQL agrees
