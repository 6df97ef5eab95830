"""What the graph's nodes may use, injected per run (never globals): the database connection, the
candidate sources, the policy, the channels, the clock reading, the LLM (optional), the run-level
facts (long-tail providers, provider exposure, overall arm engagement), a cache the run's batches
share, and the run key that makes ids deterministic. Randomness: every user's generator is seeded
from the decision id."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from tagloop.policies import PolicyConfig
from tagloop.policies.config import DiversityConfig
from tagloop.tools.candidates import CandidateSource
from tagloop.tools.llm import LLM
from tagloop.tools.messaging.channels import Channel
from tagloop.tools.store.runs import ArmCounts

DECISION_NAMESPACE = uuid.UUID("1d8f3c55-9a0e-5b43-8f0e-7461676c6f70")


@dataclass(frozen=True)
class RunFacts:
    """Read once per run, shared by every batch."""

    long_tail: frozenset[str] = frozenset()
    exposure: Mapping[str, float] = field(default_factory=dict)
    arms: ArmCounts = field(default_factory=ArmCounts)


_ITEM_TAGS = "select id, tag_vec from items where id = any(%(ids)s) and tag_vec is not null"


@dataclass
class RunCache:
    """Filled lazily during a run and shared by its batches: items' tag vectors (MMR/calibration),
    stored over the run's own dense tag columns, and exact Thompson propensities per distinct
    (successes, failures) evidence."""

    item_tags: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (columns, weights)
    tag_columns: dict[int, int] = field(default_factory=dict)  # tag id → column of the run's tag space
    thompson: dict[tuple[bytes, bytes], np.ndarray] = field(default_factory=dict)

    def column(self, tag_id: int) -> int:
        return self.tag_columns.setdefault(tag_id, len(self.tag_columns))

    def load_item_tags(self, conn: psycopg.Connection[Any], item_ids: Iterable[str]) -> None:
        """Tag vectors of the items not cached yet, one query in binary (items without tags: empty rows)."""
        missing = [i for i in item_ids if i not in self.item_tags]
        if not missing:
            return
        with conn.cursor(binary=True) as cur:
            found = {r["id"]: r["tag_vec"] for r in cur.execute(_ITEM_TAGS, {"ids": missing})}
        column = self.column
        for item_id in missing:
            vec = found.get(item_id)
            tags, weights = (vec.indices(), vec.values()) if vec is not None else ([], [])
            self.item_tags[item_id] = (
                np.array([column(t) for t in tags], dtype=np.int32),
                np.asarray(weights, dtype=np.float64),
            )

    def tag_matrix(
        self,
        conn: psycopg.Connection[Any],
        cfg: DiversityConfig,
        item_ids: list[str],
        profile: Mapping[int, float],
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The items' dense (n × tags they use) matrix for `choose_slate` and, when calibration is
        on, the user's tag mix (`profile`: tag id → weight) over the same columns (its tags added);
        (None, None) when neither knob is on. Dense over the candidates' own tags: small (~100 × a
        few hundred), and MMR's similarity rows are then plain matrix-vector products."""
        if cfg.mmr_lambda <= 0 and cfg.calibration_lambda <= 0:
            return None, None
        self.load_item_tags(conn, item_ids)
        rows = [self.item_tags[i] for i in item_ids]
        lens = [r[0].size for r in rows]
        cols = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32)
        data = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0)
        with_mix = cfg.calibration_lambda > 0 and bool(profile)
        if with_mix:
            cols = np.concatenate([cols, np.array([self.column(t) for t in profile], dtype=np.int32)])
        used, local = np.unique(cols, return_inverse=True)
        matrix = np.zeros((len(rows), max(used.size, 1)))
        matrix[np.repeat(np.arange(len(rows)), lens), local[: data.size]] = data
        mix = None
        if with_mix:
            mix = np.zeros(matrix.shape[1])
            mix[local[data.size :]] = list(profile.values())
        return matrix, mix


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
