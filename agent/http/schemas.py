"""Typed bodies of the HTTP API (what OpenAPI publishes). Request bodies of events, items and
users are validated by `tools.ingest.records` (the same checks as file imports); their models here
document the shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldProblem(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, max_length=256, description="Idempotency key: stored once.")
    user_id: str = Field(max_length=256)
    type: str = Field(
        description="impression, play, complete, skip, like, dislike, save, add_to_playlist, "
        "share, open, click, convert, dismiss, unsubscribe or a custom type"
    )
    item_id: str | None = Field(default=None, max_length=256)
    ts: datetime | None = None
    value: float | None = None
    message_id: str | None = None
    context: dict[str, Any] | None = None


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, max_length=256)
    title: str | None = None
    kind: str | None = None
    provider: str | None = None
    tags: list[str] | dict[str, float] | None = None
    text: str | None = None
    created_at: datetime | None = None
    attributes: dict[str, Any] | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, max_length=256)
    timezone: str | None = Field(default=None, description="IANA name, e.g. Europe/Berlin")
    locale: str | None = None
    channels: dict[str, str] | None = None
    consent: dict[str, bool] | None = None
    attributes: dict[str, Any] | None = None


class Accepted(BaseModel):
    accepted: int
    duplicates: int


class Stored(BaseModel):
    stored: int


class EventOut(BaseModel):
    id: str
    type: str
    item_id: str | None
    ts: datetime
    value: float | None
    message_id: str | None
    context: dict[str, Any]


class EventsPage(BaseModel):
    events: list[EventOut]
    next_before: datetime | None


class TagWeight(BaseModel):
    tag: str
    weight: float


class Timing(BaseModel):
    timezone: str
    hour_of_week: list[int] = Field(description="168 counts, Monday 00:00 local first")
    best_hours: list[str] = Field(description="Local weekday and hour with most activity, best first")
    weekday_share: float = Field(description="Share of activity on Monday–Friday (5/7 ≈ no preference)")
    weekend_share: float


class ChannelPreference(BaseModel):
    channel: str
    consent: bool
    sent: int  # messages delivered on it
    queued: int = 0  # messages waiting in the outbox (pending, or being sent now)
    engagement: dict[str, int]
    unsubscribed_at: datetime | None = None  # an unsubscribe (this channel's or '*') that counts
    configured: bool = False  # this deployment delivers on it (webhook and email need settings)
    reachable: bool = False  # configured, consent, an address (or a local channel), no such unsubscribe


class Profile(BaseModel):
    user_id: str
    n_events: int
    updated_at: datetime | None
    top_tags: list[TagWeight]
    skip_rate: float
    replays: int
    timing: Timing
    channels: list[ChannelPreference]
    devices: dict[str, float]
    sources: dict[str, float]
    regions: dict[str, float]
    source_tags: dict[str, list[TagWeight]]


class Recommendation(BaseModel):
    item_id: str
    title: str
    provider: str | None
    score: float
    explanation: str
    cold: bool  # scored from its tags alone: added after the model was trained (as `tagloop recommend`)


class Recommendations(BaseModel):
    user_id: str
    items: list[Recommendation]


class RunRequest(BaseModel):
    """The optional body of a run request (validated by `services.run_options`: strict types)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    send_now: bool = False


class ChosenItem(BaseModel):
    item_id: str
    title: str
    score: float


class RunDecision(BaseModel):
    user_id: str
    decision_id: str
    outcome: str
    channel: str | None
    chosen: list[ChosenItem]
    propensities: list[float]
    send_at: datetime | None
    policy: str
    policy_version: str
    explanation: str | None
    title: str | None
    message_id: str | None
    delivered: bool
    # the message's outbox status after the run (pending, sent, dead, cancelled, …) and, unless
    # it was sent, its last delivery error (a refused or failing endpoint says why here)
    delivery: str | None = None
    delivery_error: str | None = None
    held_back: str | None = None  # what moved send_at later than chosen (quiet hours, a cap)


class Erased(BaseModel):
    user_id: str
    deleted: dict[str, int]


class Unsubscribed(BaseModel):
    channel: str  # the channel of the message whose link was followed: no more messages on it
    already: bool  # the link had been followed before (one event is stored)


class Health(BaseModel):
    status: str
    database: str
