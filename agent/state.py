"""What flows between the graph's nodes for one batch of users, and nothing else.

The graph runs a batch (one user for an API call, hundreds for a sweep) so that each node makes
one database round trip per batch; every per-user result is keyed by user id."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tagloop.tools.messaging.compose import Copy
from tagloop.tools.profiles import Profile
from tagloop.tools.retrieval import Candidate


@dataclass
class UserContext:
    id: str
    timezone: str
    channels: dict[str, str]
    consent: dict[str, bool]
    profile: Profile


@dataclass
class Plan:
    """The decision for one user, built up by choose → compose → record → deliver."""

    user_id: str
    decision_id: str
    seed: int
    outcome: str  # message | nothing_to_send | holdout | no_consent | unknown_user
    policy_name: str
    policy_version: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: list[Candidate] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)
    channel: str | None = None
    send_at: datetime | None = None
    copy: Copy | None = None
    explanation: str | None = None
    message_id: str | None = None
    delivered: bool = False
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunInput:
    user_ids: list[str]
    trigger: str = "manual"
    send_now: bool = False


@dataclass
class RunState(RunInput):
    users: dict[str, UserContext] = field(default_factory=dict)
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
