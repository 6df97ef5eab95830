"""Decision records: JSON-serialisable, round-trip, and refuse inconsistent slates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagloop.policies import Decision, PolicyConfig, choose_slate


def test_record_is_json_and_round_trips() -> None:
    scores = np.array([0.3, 0.9, 0.1, 0.5])
    d = choose_slate(
        PolicyConfig(k=3),
        scores,
        ["a", "b", "c", "d"],
        None,
        None,
        {"a": 2.0},
        np.array([False, False, True, True]),
        rng=17,
        item_ids=["i0", "i1", "i2", "i3"],
        context={"hour": np.int64(9), "device": "ios", "vec": np.array([0.5, 1.5])},
    )
    record = json.loads(json.dumps(d.to_record()))
    assert record["seed"] == 17 and record["policy"] == "default"
    assert record["chosen"] == [f"i{a}" for a in d.actions]
    assert record["context"]["vec"] == [0.5, 1.5] and record["context"]["hour"] == 9
    assert record["slate_propensity"] == pytest.approx(float(np.prod(d.propensities)))
    back = Decision.from_record(record)
    assert back.actions == d.actions and back.propensities == d.propensities
    assert back.candidates == d.candidates and back.scores == d.scores


def test_decision_rejects_repeated_actions_and_missing_propensities() -> None:
    with pytest.raises(ValueError, match="repeat"):
        Decision((1, 1), (0.5, 0.5), "p", "1")
    with pytest.raises(ValueError, match="one propensity per action"):
        Decision((1, 2), (0.5,), "p", "1")
