"""The `Decision` every policy returns, and its JSON log record.

A decision is what a policy chose plus everything an offline evaluator needs to re-weight it:

- `actions`: indices into the candidate arrays the policy was given, in slate order (slot 0 first).
  For an arm bandit (template, channel, send hour) it is a 1-tuple holding the arm index.
- `propensities`: `propensities[i]` is the *conditional* probability that slot `i` received
  `actions[i]`, given the inputs and the actions already placed in slots `0..i-1`. So
  `slate_propensity` (their product) is the exact probability of the whole ordered slate, and
  `propensities[0]` is the marginal probability of the top item. For a single-arm decision the one
  propensity is the probability of that arm.
- `policy`, `version`: name and version from POLICY.toml, so a log row names the code path.
- `seed`: the integer the run's `np.random.Generator` was seeded with (None when the caller passed
  a generator it did not seed itself); with the same inputs and seed the decision replays exactly.
- `candidates`: ids of the candidate set (or `None` when only indices were known), `scores`: the
  relevance scores the policy saw, `context`: context features and policy-internal facts (the
  long-tail quota, exploration flags per slot, ...) needed to audit or replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JsonScalar = str | int | float | bool | None


@dataclass(frozen=True)
class Decision:
    """The chosen actions with exact propensities; see the module docstring for each field."""

    actions: tuple[int, ...]
    propensities: tuple[float, ...]
    policy: str
    version: str
    seed: int | None = None
    candidates: tuple[str, ...] | None = None
    scores: tuple[float, ...] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.actions) != len(self.propensities):
            raise ValueError("a decision needs one propensity per action")
        if len(set(self.actions)) != len(self.actions):
            raise ValueError("a slate may not repeat an action")

    @property
    def slate_propensity(self) -> float:
        """Probability of the whole ordered slate (product of the conditional propensities)."""
        return math.prod(self.propensities)

    @property
    def chosen_ids(self) -> tuple[str, ...] | None:
        """Ids of the chosen candidates in slate order, when candidate ids were given."""
        if self.candidates is None:
            return None
        return tuple(self.candidates[a] for a in self.actions)

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict for the decision log (plain lists, floats, strings)."""
        return {
            "policy": self.policy,
            "version": self.version,
            "seed": self.seed,
            "actions": [int(a) for a in self.actions],
            "chosen": list(self.chosen_ids) if self.chosen_ids is not None else None,
            "propensities": [float(p) for p in self.propensities],
            "slate_propensity": float(self.slate_propensity),
            "candidates": list(self.candidates) if self.candidates is not None else None,
            "scores": [float(s) for s in self.scores] if self.scores is not None else None,
            "context": _jsonable(self.context),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Decision:
        """Inverse of `to_record` (the derived `chosen` and `slate_propensity` are ignored)."""
        cands = record.get("candidates")
        scores = record.get("scores")
        return cls(
            actions=tuple(int(a) for a in record["actions"]),
            propensities=tuple(float(p) for p in record["propensities"]),
            policy=str(record["policy"]),
            version=str(record["version"]),
            seed=record.get("seed"),
            candidates=tuple(str(c) for c in cands) if cands is not None else None,
            scores=tuple(float(s) for s in scores) if scores is not None else None,
            context=dict(record.get("context") or {}),
        )


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples inside `value` to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str | bytes):
        return value if isinstance(value, str) else value.decode()
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars
        return _jsonable(value.tolist()) if hasattr(value, "shape") and value.shape else value.tolist()
    return value
