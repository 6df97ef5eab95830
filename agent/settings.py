"""Settings from the environment (prefix `TAGLOOP_`) and an optional TOML file named by
`TAGLOOP_CONFIG` (same names, lower-case, without the prefix); the environment wins.

Built in entrypoints (CLI, HTTP app, worker), never at import time. Secrets are `SecretStr` so they
are never printed or logged.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from tagloop.policies.config import near_miss_channel
from tagloop.tools.errors import ConfigError
from tagloop.tools.messaging.endpoints import check_endpoint, http_url_problem
from tagloop.tools.messaging.unsubscribe import UnsubscribeLinks


def _default_home() -> Path:
    """`$XDG_DATA_HOME/tagloop`, or `~/.local/share/tagloop` when it is unset, empty or relative (the
    XDG spec ignores those): an empty one made the home `tagloop`, a new database per directory."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "tagloop"


# a duration setting's bound, about ten years: larger ones overflowed the datetimes they are added to
# (TAGLOOP_TRIGGER_MAX_AGE_SECONDS=1e11 for "never" made every profile fold fail)
MAX_SECONDS = 10 * 365 * 86400


class _TomlUnderEnv(TomlConfigSettingsSource):
    """The TOML file's values of the settings the environment (or an override) leaves unset: a value
    set there replaces the file's whole, where pydantic-settings merged a dict (`cadences`) key by key."""

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in super().__call__().items() if key not in self.current_state}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAGLOOP_",
        extra="forbid",
        populate_by_name=True,
        env_ignore_empty=True,
        allow_inf_nan=False,  # `nan` or `inf` is no timeout, spread or half-life
    )

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TAGLOOP_DATABASE_URL", "DATABASE_URL", "database_url")
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    outbound_webhook_url: str | None = None
    outbound_webhook_secret: SecretStr | None = None
    outbound_allow_private: bool = False
    smtp_url: str | None = None
    smtp_from: str = "tagloop@localhost"
    llm_base_url: str | None = None
    llm_model: str | None = None
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    custom_event_types: Annotated[list[str], NoDecode] = Field(default_factory=list)
    profile_half_life_days: float = Field(default=30.0, gt=0, le=MAX_SECONDS / 86400)
    policy_file: Path | None = None
    file_channel_path: Path | None = None
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_batch_events: int = Field(default=1000, gt=0)
    rate_limit_per_minute: int = Field(default=6000, gt=0)
    public_docs: bool = False  # /openapi.json and /docs without a key (SPEC §4: only /healthz is open)
    trigger_delay_seconds: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    trigger_max_age_seconds: float = Field(
        default=6 * 3600.0, ge=0, le=MAX_SECONDS
    )  # older events trigger no run
    # agent runs and scheduling (agent/cadence.py, agent/worker.py)
    cadences: dict[str, str] = Field(default_factory=lambda: {"weekly_discovery": "7d"})
    cadence_spread: float = Field(default=1.0, ge=0, le=1)
    run_batch_size: int = Field(default=200, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0, le=MAX_SECONDS)
    candidate_k: int = Field(default=100, gt=0)
    candidate_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tags", "trending", "new_from_providers", "co_likes", "cf"], min_length=1
    )
    # "exact": the tags source scans every item in the process (tools/tag_exact.py) instead of
    # pgvector's HNSW index: exact and the same on any index build
    tag_search: Literal["hnsw", "exact"] = "hnsw"
    quiet_exempt_channels: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["file", "console"])
    # delivery (tools/messaging/delivery.py)
    delivery_max_attempts: int = Field(default=6, gt=0)
    delivery_backoff_seconds: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    delivery_backoff_max_seconds: float = Field(default=3600.0, ge=0, le=MAX_SECONDS)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    delivery_lease_seconds: float = Field(default=300.0, gt=0, le=MAX_SECONDS)
    # message copy (tools/messaging/compose.py)
    llm_timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    llm_max_retries: int = Field(default=1, ge=0, le=10)
    llm_breaker_failures: int = Field(default=2, ge=1)  # failed LLM calls in a row → templates for the run
    llm_budget_seconds: float = Field(default=60.0, gt=0, le=MAX_SECONDS)  # LLM time per run before templates
    # one-click unsubscribe links in mail (tools/messaging/unsubscribe.py): both or neither
    public_url: str | None = None  # where mail readers reach this API, e.g. https://notify.example.com
    unsubscribe_secret: SecretStr | None = None
    log_key: SecretStr | None = None  # keys the user pseudonyms in logs (tools/logsafe.py)
    allowed_link_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # the background profile folder waits for this many pending events, or for the oldest pending
    # event to be this old, before it folds (bigger folds cost far less per event; reads fold the
    # user's own pending events first, so they never wait)
    fold_min_events: int = Field(default=20_000, ge=0)
    fold_max_wait_seconds: float = Field(default=1.0, ge=0, le=MAX_SECONDS)

    @field_validator(
        "database_url",
        "outbound_webhook_url",
        "outbound_webhook_secret",
        "smtp_url",
        "llm_base_url",
        "llm_model",
        "openai_api_key",
        "policy_file",
        "file_channel_path",
        "public_url",
        "unsubscribe_secret",
        "log_key",
        mode="before",
    )
    @classmethod
    def _none_clears(cls, value: Any) -> Any:
        """`none` unsets an optional setting: an empty variable is ignored, so the environment could
        not turn off what the TOML file sets (email for one process, an external database)."""
        return None if isinstance(value, str) and value.strip().lower() == "none" else value

    @field_validator(
        "api_keys",
        "webhook_secrets",
        "custom_event_types",
        "candidate_sources",
        "quiet_exempt_channels",
        "allowed_link_hosts",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """A comma-separated string or a (TOML) list, either way each entry stripped and an empty
        one dropped: `" key-two"` as given was a key no bearer header could match."""
        if isinstance(value, str):
            if value.strip().lower() == "none":  # an empty value is ignored: "none" names no entry
                return []
            value = value.split(",")
        if isinstance(value, list):
            items = [v.strip() if isinstance(v, str) else v for v in value]
            return [v for v in items if v != ""]
        return value

    @field_validator("cadences")
    @classmethod
    def _usable_cadences(cls, value: dict[str, str]) -> dict[str, str]:
        """Names and intervals checked when settings load, so every command refuses a bad one
        naming the setting (the scheduler parses them again when it starts)."""
        from tagloop.agent.cadence import cadences_from

        try:
            cadences_from(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        """An OpenAI-compatible endpoint is http(s)://host…; anything else failed every call. The
        client adds /chat/completions itself: a URL ending in it posted to …/chat/completions twice,
        and every message fell back to its template."""
        if value is None:
            return None
        if problem := http_url_problem(value):
            raise ValueError(problem)
        if urlsplit(value).path.rstrip("/").endswith("/completions"):
            raise ValueError(
                "is the full endpoint; give the base URL it is under, e.g. https://api.example.com/v1 "
                "(the client adds /chat/completions)"
            )
        return value

    @field_validator("allowed_link_hosts")
    @classmethod
    def _bare_hosts(cls, value: list[str]) -> list[str]:
        """Host names as links are compared with them (lower case); a URL or a host with a port can
        never match one, and every copy with a link then fell back to the template."""
        hosts = [host.lower().rstrip(".") for host in value]
        for host in hosts:
            if not host or any(c in host for c in "/:@?#") or any(c.isspace() for c in host):
                raise ValueError(
                    f"{host!r} is not a host name (give e.g. music.example.com, no scheme or path)"
                )
        return hosts

    @field_validator("quiet_exempt_channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        """Channel names as sends compare them (lower case); a near miss of a built-in one (`emial`)
        is a typo that would leave that channel under quiet hours, so it is refused."""
        names = [name.lower() for name in value]
        for name in names:
            if meant := near_miss_channel(name):
                raise ValueError(f"no such channel {name!r}; did you mean {meant!r}?")
        return names

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("TAGLOOP_CONFIG")
        if config:
            if not Path(config).is_file():
                raise ConfigError(f"TAGLOOP_CONFIG={config}: no such file")
            sources.append(_TomlUnderEnv(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    @property
    def outbox_file(self) -> Path:
        return self.file_channel_path or self.home / "outbox" / "messages.jsonl"


def load_settings(**overrides: Any) -> Settings:
    """Read settings now (environment + TAGLOOP_CONFIG); keyword overrides win. A bad value or
    file is a `ConfigError` naming the setting, never echoing the value (it may be a secret), and so
    is a variable that misspells a setting's (`TAGLOOP_DELIVERY_MAX_ATTEMPT`): it would be ignored."""
    _misspelt_variables()
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except tomllib.TOMLDecodeError as exc:
        config = os.environ.get("TAGLOOP_CONFIG")
        raise ConfigError(f"TAGLOOP_CONFIG={config}: not valid TOML ({exc})") from None
    except SettingsError as exc:  # a structured value (e.g. cadences) that is not JSON
        hint = ' (a JSON object, e.g. {"weekly_discovery": "7d"})' if '"cadences"' in str(exc) else ""
        raise ConfigError(f"invalid settings: {str(exc).split(':')[0]}{hint}") from None
    unsubscribe_links(settings)  # both or neither, and usable
    check_webhooks(settings)
    if settings.llm_base_url and not settings.llm_model:  # templates only, and nothing said why
        raise ConfigError("TAGLOOP_LLM_BASE_URL is set but TAGLOOP_LLM_MODEL is not: LLM copy needs both")
    return settings


# the test suite's and the benchmarks' servers (tests/conftest.py, bench/): not settings, not typos
_TOOLING = ("TAGLOOP_TEST_DATABASE_URL", "TAGLOOP_BENCH_DATABASE_URL")


def _misspelt_variables() -> None:
    """A `TAGLOOP_` variable that is not a setting's but nearly is one: a typo the environment source
    would silently ignore (the TOML file refuses unknown keys outright). Other `TAGLOOP_` names are
    left alone: they may be the deployment's own."""
    known = {f"TAGLOOP_{name.upper()}" for name in Settings.model_fields} | {"TAGLOOP_CONFIG"}
    for name in sorted(os.environ):
        if not name.startswith("TAGLOOP_") or name in known or name in _TOOLING or not os.environ[name]:
            continue
        if meant := difflib.get_close_matches(name, known, n=1, cutoff=0.9):
            raise ConfigError(f"{name} is not a setting; did you mean {meant[0]}?")


def check_webhooks(settings: Settings) -> None:
    """Inbound secrets that sign, and the outbound webhook's URL and secret both or neither, usable
    (checked here so `serve`, `run` and `worker` refuse them before starting)."""
    if not (settings.webhook_secrets or settings.outbound_webhook_url or settings.outbound_webhook_secret):
        return
    from tagloop.tools.messaging.webhook import signer  # httpx: only when needed

    for n, inbound in enumerate(settings.webhook_secrets, start=1):
        signer(inbound.get_secret_value(), f"TAGLOOP_WEBHOOK_SECRETS (secret {n})")
    url, secret = settings.outbound_webhook_url, settings.outbound_webhook_secret
    if bool(url) != bool(secret):
        given, missing = (
            ("TAGLOOP_OUTBOUND_WEBHOOK_URL", "TAGLOOP_OUTBOUND_WEBHOOK_SECRET")
            if url
            else ("TAGLOOP_OUTBOUND_WEBHOOK_SECRET", "TAGLOOP_OUTBOUND_WEBHOOK_URL")
        )
        raise ConfigError(f"{given} is set but {missing} is not: the webhook channel needs both")
    if url and secret:
        check_endpoint(url, "TAGLOOP_OUTBOUND_WEBHOOK_URL")
        signer(secret.get_secret_value(), "TAGLOOP_OUTBOUND_WEBHOOK_SECRET")


def unsubscribe_links(settings: Settings) -> UnsubscribeLinks | None:
    """The mail unsubscribe links the settings ask for (None: off); a `ConfigError` when half set."""
    secret = settings.unsubscribe_secret.get_secret_value() if settings.unsubscribe_secret else None
    return UnsubscribeLinks.of(settings.public_url, secret)
