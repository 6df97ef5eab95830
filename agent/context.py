"""What the graph's nodes may use, injected per run (never globals): the database connection, the
channels, the policy parameters, the clock reading and the run key that makes ids deterministic."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tagloop.tools.messaging.channels import Channel

DECISION_NAMESPACE = uuid.UUID("1d8f3c55-9a0e-5b43-8f0e-7461676c6f70")


@dataclass(frozen=True)
class RunContext:
    conn: psycopg.Connection[Any]
    channels: Mapping[str, Channel]
    now: datetime
    run_key: str
    slate_size: int = 5
    candidate_k: int = 100
    epsilon: float = 0.2
    policy_name: str = "tag-profile-explore"
    policy_version: str = "1"
    channel_preference: tuple[str, ...] = ("webhook", "email", "file", "console")

    def decision_id(self, user_id: str) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"decision|{user_id}|{self.run_key}"))

    def message_id(self, decision_id: str, channel: str) -> str:
        return str(uuid.uuid5(DECISION_NAMESPACE, f"message|{decision_id}|{channel}"))

    @staticmethod
    def seed_of(decision_id: str) -> int:
        return uuid.UUID(decision_id).int & ((1 << 63) - 1)
