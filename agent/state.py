"""What flows between the graph's nodes for one batch of users, and nothing else.

The graph runs a batch (one user for an API call, hundreds for a sweep) so that each node makes
one database round trip per batch; every per-user result is keyed by user id. `RunInput` is the
graph's input schema; `RunState` adds what the nodes fill in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tagloop.tools.messaging.compose import Copy
from tagloop.tools.profiles import Profile
from tagloop.tools.retrieval import Candidate
from tagloop.tools.store.decisions import MessageRow
from tagloop.tools.store.runs import ArmCounts


@dataclass
class UserContext:
    id: str
    timezone: str
    locale: str | None
    channels: dict[str, str]
    consent: dict[str, bool]
    profile: Profile
    sends: dict[str, list[datetime]] = field(default_factory=dict)  # channel → sent/scheduled times (caps)
    unsubscribed: dict[str, datetime] = field(default_factory=dict)  # channel or '*' → time
    arms: ArmCounts = field(default_factory=ArmCounts)  # this user's engagement per channel / hour
    interests: dict[str, float] = field(default_factory=dict)  # declared: stored tag name → weight


@dataclass
class ArmChoice:
    """One bandit choice (channel or send hour) with the arms offered and its propensity."""

    arm: str | int | None
    propensity: float
    arms: list[Any] = field(default_factory=list)

    def log(self) -> dict[str, Any]:
        # unrounded: a small propensity is a large importance weight (rounded to 6 decimals, one
        # of 1.5e-7 was logged as 0 and unusable for offline evaluation)
        return {"arm": self.arm, "propensity": self.propensity, "arms": self.arms}


@dataclass
class Plan:
    """The decision for one user, built up by apply_policies → choose_channel_time → compose → enqueue."""

    user_id: str
    decision_id: str
    run_key: str
    seed: int
    outcome: str  # message | nothing_to_send | holdout | no_consent | no_channel | capped
    policy_name: str
    policy_version: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: list[Candidate] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)
    channel: str | None = None
    channel_choice: ArmChoice | None = None
    hour_choice: ArmChoice | None = None
    send_at: datetime | None = None
    copy: Copy | None = None
    explanation: str | None = None
    reason: str | None = None
    message_id: str | None = None
    delivered: bool = False
    context: dict[str, Any] = field(default_factory=dict)

    def update(self, **changes: Any) -> Plan:
        """Set fields in place and return the plan: a plan belongs to its graph run and is built up
        node by node (a `dataclasses.replace` per node copied every field, ~10 µs a user each)."""
        for name, value in changes.items():
            setattr(self, name, value)
        return self


@dataclass
class RunInput:
    user_ids: list[str]
    trigger: str = "manual"
    send_now: bool = False
    run_keys: dict[str, str] = field(default_factory=dict)  # per-user run key (cadence periods)


@dataclass
class RunState(RunInput):
    users: dict[str, UserContext] = field(default_factory=dict)
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    outbox: list[MessageRow] = field(default_factory=list)
