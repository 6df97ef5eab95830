"""POLICY.toml: the validated parameters of a policy (SPEC §6), and the shipped presets.

A policy file names itself (`name`, `version` — both logged with every decision) and sets the
slate size `k` plus one table per concern; every table and field is optional and defaults to the
`default` preset's value. Unknown keys are errors, so a typo never silently falls back:

    name = "default"
    version = "1"
    k = 10

    [exploration]          # policies/exploration.py
    epsilon = 0.1          # share of slots filled uniformly from `pool` (exact propensities)
    pool = "all"           # "all" remaining candidates, or "long_tail" ones (discovery slots)
    temperature = 0.0      # 0: the non-random slots take the best item; > 0: Plackett-Luce softmax

    [fairness]             # policies/fairness.py, policies/exposure.py
    lambda = 0.2           # 0 = pure relevance ... 1 = pure exposure equity
    long_tail_min_share = 0.2   # amortized guaranteed share of slots for long-tail providers
    long_tail_head_mass = 0.8   # head = most popular providers holding this share of popularity
    exposure_half_life_days = 7.0

    [diversity]            # policies/diversity.py; mmr_lambda + calibration_lambda <= 1
    mmr_lambda = 0.2
    calibration_lambda = 0.0
    calibration_alpha = 0.01

    [guards]               # policies/guards.py
    quiet_start = "21:00"  # local time of the user's IANA zone; start == end means no quiet hours
    quiet_end = "08:00"
    holdout_share = 0.05
    holdout_salt = "tagloop-holdout-v1"
    [guards.caps.push]
    per_day = 2            # at most this many in any rolling 24 h (omit for no limit)
    per_week = 7           # at most this many in any rolling 7 days

    [bandits]              # policies/bandits.py
    strategy = "thompson"  # or "uniform" / "greedy" (posterior mean) for baselines
    channels = ["push", "email", "webhook"]
    send_hours = [8, 12, 18, 20]
    prior_alpha = 1.0
    prior_beta = 1.0

`load_policy(path)` reads and validates a file; `preset(name)` loads a shipped preset
("default", "random", "greedy" — the simulator's baselines).
"""

from __future__ import annotations

import difflib
import tomllib
from datetime import time
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tagloop.tools.errors import InvalidInput

PRESETS = ("default", "random", "greedy")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ExplorationConfig(_Strict):
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    pool: Literal["all", "long_tail"] = "all"
    temperature: float = Field(default=0.0, ge=0.0, le=100.0)


class FairnessConfig(_Strict):
    lambda_: float = Field(default=0.2, ge=0.0, le=1.0, alias="lambda")
    long_tail_min_share: float = Field(default=0.2, ge=0.0, le=1.0)
    long_tail_head_mass: float = Field(default=0.8, gt=0.0, le=1.0)
    exposure_half_life_days: float = Field(default=7.0, gt=0.0)


class DiversityConfig(_Strict):
    mmr_lambda: float = Field(default=0.2, ge=0.0, le=1.0)
    calibration_lambda: float = Field(default=0.0, ge=0.0, le=1.0)
    calibration_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _weights_sum_at_most_one(self) -> DiversityConfig:
        if self.mmr_lambda + self.calibration_lambda > 1.0 + 1e-12:
            raise ValueError("mmr_lambda + calibration_lambda must be at most 1")
        return self


class ChannelCap(_Strict):
    per_day: int | None = Field(default=None, ge=0)
    per_week: int | None = Field(default=None, ge=0)


BUILTIN_CHANNELS = frozenset({"push", "email", "webhook", "file", "console"})


def near_miss_channel(name: str, known: frozenset[str] | set[str] = BUILTIN_CHANNELS) -> str | None:
    """The known channel `name` is probably a typo of (`emial` → `email`), or None: it is known, or
    far enough from every known name to be a custom channel. One rule for policy files, imports and
    unsubscribe events."""
    if name in known:
        return None
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


def _default_caps() -> dict[str, ChannelCap]:
    return {
        "push": ChannelCap(per_day=2, per_week=7),
        "email": ChannelCap(per_day=1, per_week=3),
        "webhook": ChannelCap(per_day=3, per_week=14),
    }


class GuardsConfig(_Strict):
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    holdout_share: float = Field(default=0.05, ge=0.0, le=1.0)
    holdout_salt: str = Field(default="tagloop-holdout-v1", min_length=1)
    caps: dict[str, ChannelCap] = Field(default_factory=_default_caps)

    @field_validator("caps", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        """A file's caps change the channels it names and keep the defaults of the others (a file
        with `[guards.caps.email]` alone used to leave push and webhook uncapped); an empty table,
        `[guards.caps.push]`, removes that channel's limits."""
        if isinstance(value, dict):
            return {**_default_caps(), **value}
        return value

    @field_validator("quiet_start", "quiet_end", mode="before")
    @classmethod
    def _parse_local_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return time.fromisoformat(value)
            except ValueError:
                raise ValueError(f"expected a local time like '21:00', got {value!r}") from None
        return value

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("quiet hours are local wall times; give them without an offset")
        return value


class BanditConfig(_Strict):
    strategy: Literal["thompson", "uniform", "greedy"] = "thompson"
    channels: list[str] = Field(default_factory=lambda: ["push", "email", "webhook"], min_length=1)
    send_hours: list[int] = Field(default_factory=lambda: [8, 12, 18, 20], min_length=1)
    # below ~0.1 Beta draws are often exactly 0.0 or 1.0, so arms tie and argmax takes the first:
    # the exact Thompson propensities (which assume no ties) would no longer be the play's
    prior_alpha: float = Field(default=1.0, ge=0.1)
    prior_beta: float = Field(default=1.0, ge=0.1)
    propensity: Literal["exact", "mc"] = "exact"
    n_mc: int = Field(default=2000, ge=10, le=1_000_000)
    linear_noise: float = Field(default=0.5, gt=0.0)
    linear_ridge: float = Field(default=1.0, gt=0.0)

    @field_validator("send_hours")
    @classmethod
    def _hours(cls, value: list[int]) -> list[int]:
        bad = [h for h in value if not 0 <= h <= 23]
        if bad:
            raise ValueError(f"send hours must be 0..23, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("send hours must not repeat")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


class PolicyConfig(_Strict):
    """The whole POLICY.toml; `PolicyConfig()` equals the shipped `default` preset."""

    name: str = Field(default="default", min_length=1, max_length=100)
    version: str = Field(default="1", min_length=1, max_length=50)
    k: int = Field(default=10, ge=1, le=1000)
    exploration: ExplorationConfig = ExplorationConfig()
    fairness: FairnessConfig = FairnessConfig()
    diversity: DiversityConfig = DiversityConfig()
    guards: GuardsConfig = GuardsConfig()
    bandits: BanditConfig = BanditConfig()

    @model_validator(mode="after")
    def _caps_name_channels(self) -> PolicyConfig:
        """A cap for a channel whose name is a near miss of a known one (`emial`) is a typo that
        would leave the real channel with its default; other names are custom channels."""
        known = set(self.bandits.channels) | BUILTIN_CHANNELS
        for name in sorted(set(self.guards.caps) - known):
            meant = near_miss_channel(name, known)
            if meant:
                raise ValueError(f"guards.caps.{name}: no such channel; did you mean {meant!r}?")
        return self


def parse_policy(data: dict[str, Any], source: str = "<policy>") -> PolicyConfig:
    """Validate a parsed TOML table; errors name `source` and the dotted field."""
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {_message(err)}"
            for err in exc.errors()
        )
        raise InvalidInput(f"{source}: invalid policy: {problems}") from None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    return str(err["msg"]).removeprefix("Value error, ")


def load_policy(path: str | Path) -> PolicyConfig:
    """Read and validate a POLICY.toml file; every problem raises `InvalidInput` naming file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: policy file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read policy file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
    return parse_policy(data, str(path))


def preset(name: str) -> PolicyConfig:
    """A shipped preset: "default", "random" (uniform slates) or "greedy" (pure relevance)."""
    if name not in PRESETS:
        raise InvalidInput(f"unknown policy preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("tagloop.policies").joinpath("presets", f"{name}.toml").read_text("utf-8")
    return parse_policy(tomllib.loads(text), f"preset {name}")
