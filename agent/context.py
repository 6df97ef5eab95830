"""What the graph's nodes may use, injected per run (never globals): the database connection, the
candidate sources, the policy, the channels, the clock reading, the LLM (optional), the run-level
facts (long-tail providers, provider exposure, overall arm engagement), a cache the run's batches
share, and the run key that makes ids deterministic. Randomness: every user's generator is seeded
from the decision id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from tagloop.policies import PolicyConfig
from tagloop.tools.candidates import CandidateSource
from tagloop.tools.llm import LLM
from tagloop.tools.messaging.channels import Channel
from tagloop.tools.store.decisions import ArmCounts

DECISION_NAMESPACE = uuid.UUID("1d8f3c55-9a0e-5b43-8f0e-7461676c6f70")


@dataclass(frozen=True)
class RunFacts:
    """Read once per run, shared by every batch."""

    long_tail: frozenset[str] = frozenset()
    exposure: Mapping[str, float] = field(default_factory=dict)
    arms: ArmCounts = field(default_factory=ArmCounts)


@dataclass
class RunCache:
    """Filled lazily during a run and shared by its batches: items' tag vectors (MMR/calibration)
    and exact Thompson propensities per distinct (successes, failures) evidence."""

    item_tags: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (columns, weights)
    tag_columns: dict[int, int] = field(default_factory=dict)  # tag id → column of the run's tag space
    thompson: dict[tuple[bytes, bytes], np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    conn: psycopg.Connection[Any]
    channels: Mapping[str, Channel]
    now: datetime
    run_key: str
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sources: Sequence[CandidateSource] = ()
    facts: RunFacts = field(default_factory=RunFacts)
    candidate_k: int = 100
    llm: LLM | None = None
    allowed_link_hosts: frozenset[str] = frozenset()
    quiet_exempt: frozenset[str] = frozenset({"file", "console"})
    local_channels: frozenset[str] = frozenset({"file", "console"})  # need no address
    cache: RunCache = field(default_factory=RunCache, compare=False)

    def decision_id(self, user_id: str, run_key: str | None = None) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"decision|{user_id}|{run_key or self.run_key}"))

    def message_id(self, decision_id: str, channel: str) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"message|{decision_id}|{channel}"))

    @staticmethod
    def seed_of(decision_id: str) -> int:
        return uuid.UUID(decision_id).int & ((1 << 63) - 1)

    @staticmethod
    def rng_for(seed: int, stream: int) -> np.random.Generator:
        """Independent seeded streams per user: 0 slate, 1 channel, 2 send hour."""
        return np.random.default_rng([seed, stream])
