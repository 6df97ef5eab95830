"""Settings (SPEC §7) and DATABASE_URL: a bad value, file or URL is one clear line on stderr with
exit 2, naming the setting and never echoing the value (it may be a secret)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop.agent.settings import load_settings
from tagloop.tools.errors import ConfigError
from tagloop.tools.store.db import redacted

TAGLOOP = Path(sys.executable).with_name("tagloop")
CANARY = "sk-CANARY-4242"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAGLOOP_") and k != "DATABASE_URL"}
    return subprocess.run(
        [str(TAGLOOP), *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


@pytest.mark.parametrize(
    ("env", "toml", "message"),
    [
        (
            {"TAGLOOP_OUTBOUND_ALLOW_PRIVATE": "maybe"},
            None,
            "outbound_allow_private: Input should be a valid boolean",
        ),
        (
            {"TAGLOOP_LLM_MAX_RETRIES": "-1"},
            None,
            "llm_max_retries: Input should be greater than or equal to 0",
        ),
        ({"TAGLOOP_LLM_TIMEOUT_SECONDS": "0"}, None, "llm_timeout_seconds: Input should be greater than 0"),
        (  # accepted silently, as if 0 (its siblings refuse a negative)
            {"TAGLOOP_FOLD_MIN_EVENTS": "-5"},
            None,
            "fold_min_events: Input should be greater than or equal to 0",
        ),
        (
            {"TAGLOOP_QUIET_EXEMPT_CHANNELS": "file,emial"},
            None,
            "quiet_exempt_channels: Value error, no such channel 'emial'; did you mean 'email'?",
        ),
        (
            {"TAGLOOP_PROFILE_HALF_LIFE_DAYS": "-5"},
            None,
            "profile_half_life_days: Input should be greater than 0",
        ),
        ({"TAGLOOP_CADENCES": "weekly"}, None, 'invalid settings: error parsing value for field "cadences"'),
        (  # refused by the worker only, when its scheduler started; `outbox status` took it
            {"TAGLOOP_CADENCES": '{"weekly": "5 minutes"}'},
            None,
            "cadences: Value error, cadence interval '5 minutes' is not like '30m'",
        ),
        (  # every scheduler sweep failed on it while `serve` kept running
            {"TAGLOOP_CADENCE_SPREAD": "nan"},
            None,
            "cadence_spread: Input should be a finite number",
        ),
        ({"TAGLOOP_CADENCE_SPREAD": "1.5"}, None, "cadence_spread: Input should be less than or equal to 1"),
        (  # every call failed with "llm: connection" and the run exited 0
            {"TAGLOOP_LLM_BASE_URL": "ftp://llm.example", "TAGLOOP_LLM_MODEL": "m"},
            None,
            "llm_base_url: Value error, must be an http(s)://host/… URL",
        ),
        (  # the client posted to …/chat/completions/chat/completions: templates only, silently
            {
                "TAGLOOP_LLM_BASE_URL": f"https://{CANARY}@api.example.com/v1/chat/completions",
                "TAGLOOP_LLM_MODEL": "m",
            },
            None,
            "llm_base_url: Value error, is the full endpoint; give the base URL it is under",
        ),
        (
            {"TAGLOOP_LLM_BASE_URL": "http://127.0.0.1:8080/v1/completions/", "TAGLOOP_LLM_MODEL": "m"},
            None,
            "e.g. https://api.example.com/v1 (the client adds /chat/completions)",
        ),
        (  # templates only, and nothing said the LLM was skipped
            {"TAGLOOP_LLM_BASE_URL": "http://127.0.0.1:9/v1"},
            None,
            "TAGLOOP_LLM_BASE_URL is set but TAGLOOP_LLM_MODEL is not",
        ),
        (  # a URL never matches a link's host: every copy with a link fell back
            {"TAGLOOP_ALLOWED_LINK_HOSTS": "music.example.com,https://music.example.com/"},
            None,
            "allowed_link_hosts: Value error, 'https://music.example.com/' is not a host name",
        ),
        (  # "never expire": accepted, then every profile fold overflowed the date (and reads answered 500)
            {"TAGLOOP_TRIGGER_MAX_AGE_SECONDS": "1e11"},
            None,
            "trigger_max_age_seconds: Input should be less than or equal to 315360000",
        ),
        (
            {"TAGLOOP_DELIVERY_TIMEOUT_SECONDS": "inf"},
            None,
            "delivery_timeout_seconds: Input should be a finite",
        ),
        (  # ignored silently: the TOML file refused the same typo
            {"TAGLOOP_DELIVERY_MAX_ATTEMPT": "0"},
            None,
            "TAGLOOP_DELIVERY_MAX_ATTEMPT is not a setting; did you mean TAGLOOP_DELIVERY_MAX_ATTEMPTS?",
        ),
        ({}, f'openai_api_key = ["{CANARY}"]\n', "OPENAI_API_KEY: Input should be a valid string"),
        ({}, "api_keys = [\n", "not valid TOML"),
        ({}, "bogus = 1\n", "bogus: Extra inputs are not permitted"),
        (
            {"TAGLOOP_CONFIG": "/nonexistent/tagloop.toml"},
            None,
            "TAGLOOP_CONFIG=/nonexistent/tagloop.toml: no such file",
        ),
        ({"DATABASE_URL": f"garbage{CANARY}"}, None, "DATABASE_URL is not a PostgreSQL connection string"),
        (
            {"DATABASE_URL": f"mysql://u:{CANARY}@h/d"},
            None,
            "DATABASE_URL is not a PostgreSQL connection string",
        ),
        ({"TAGLOOP_HOME": "/dev/null/home"}, None, "cannot use TAGLOOP_HOME=/dev/null/home for the embedded"),
        (
            {"TAGLOOP_HOME": "/tmp/tagloop h;ome"},
            None,
            "cannot use TAGLOOP_HOME='/tmp/tagloop h;ome' for the embedded database: its path holds ' ', ';'",
        ),
        (
            {"TAGLOOP_WEBHOOK_SECRETS": f"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_{CANARY}x"},
            None,
            "TAGLOOP_WEBHOOK_SECRETS (secret 2) is not a Standard Webhooks secret",
        ),
        ({"TAGLOOP_WEBHOOK_SECRETS": "whsec_"}, None, "(secret 1) is not a Standard Webhooks secret"),
        (  # a 3-byte key was accepted silently
            {"TAGLOOP_WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_QUFB"},
            None,
            "TAGLOOP_WEBHOOK_SECRETS (secret 2) is too short: its key has 3 bytes, at least 16",
        ),
        (
            {
                "TAGLOOP_OUTBOUND_WEBHOOK_URL": "https://hooks.example/t",
                "TAGLOOP_OUTBOUND_WEBHOOK_SECRET": "QUFBQUFBQUFBQUFBQUFB",
            },
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_SECRET is too short: its key has 15 bytes",
        ),
        (
            {
                "TAGLOOP_OUTBOUND_WEBHOOK_URL": "https://hooks.example/t",
                "TAGLOOP_OUTBOUND_WEBHOOK_SECRET": CANARY + "x",
            },
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_SECRET is not a Standard Webhooks secret",
        ),
        (
            {"TAGLOOP_OUTBOUND_WEBHOOK_URL": "https://hooks.example/t"},
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_URL is set but TAGLOOP_OUTBOUND_WEBHOOK_SECRET is not",
        ),
        (  # accepted at start-up, failed at every send
            {
                "TAGLOOP_OUTBOUND_WEBHOOK_URL": "http://exa mple.com/h",
                "TAGLOOP_OUTBOUND_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_URL must be an http(s)://host/… URL; it holds a space",
        ),
        (
            {
                "TAGLOOP_OUTBOUND_WEBHOOK_URL": "https://example.com:0/h",
                "TAGLOOP_OUTBOUND_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_URL must be an http(s)://host/… URL; its host or port is not valid",
        ),
        (
            {"TAGLOOP_OUTBOUND_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_SECRET is set but TAGLOOP_OUTBOUND_WEBHOOK_URL is not",
        ),
        (
            {
                "TAGLOOP_OUTBOUND_WEBHOOK_URL": f"ftp://u:{CANARY}@hooks.example/t",
                "TAGLOOP_OUTBOUND_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
            None,
            "TAGLOOP_OUTBOUND_WEBHOOK_URL must be an http(s)://host/… URL, got scheme 'ftp'",
        ),
    ],
)
def test_bad_settings_are_one_line_without_the_value(
    tmp_path: Path, env: dict[str, str], toml: str | None, message: str
) -> None:
    if toml is not None:
        (tmp_path / "tagloop.toml").write_text(toml)
        env = {**env, "TAGLOOP_CONFIG": str(tmp_path / "tagloop.toml")}
    result = _run({"TAGLOOP_HOME": str(tmp_path / "home"), **env}, "db", "url")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert CANARY not in result.stderr + result.stdout


def test_an_empty_tagloop_database_url_falls_back_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", "")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/app")
    assert load_settings().database_url == "postgresql://u@db.example/app"
    monkeypatch.setenv("TAGLOOP_PROFILE_HALF_LIFE_DAYS", "0")
    with pytest.raises(ConfigError, match="profile_half_life_days"):
        load_settings()


def test_db_status_hides_the_password(tagloop_env: Path, db_url: str) -> None:
    assert redacted("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert "pw" not in redacted("host=h password=pw dbname=d") and "password=***" in redacted(
        "host=h password=pw"
    )
    assert "ret" not in redacted("host=h user=u password='s3c ret'")
    assert (
        redacted("postgresql://h/d?password=pw&sslmode=require")
        == "postgresql://h/d?password=***&sslmode=require"
    )
    # the client key's passphrase was shown as it is
    assert redacted("postgresql://u:PW@h/db?sslpassword=KEYPW") == "postgresql://u:***@h/db?sslpassword=***"
    assert "KEYPW" not in redacted("postgresql://h/db?sslmode=verify-full&sslpassword=KEYPW&password=PW")
    assert "KEYPW" not in redacted("host=h sslpassword=KEYPW") and "sslpassword=***" in redacted(
        "host=h sslpassword=KEYPW"
    )
    status = subprocess.run(
        [str(TAGLOOP), "db", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["url"] == redacted(db_url)


def test_none_empties_a_list_setting_that_an_empty_value_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().quiet_exempt_channels == ["file", "console"]
    monkeypatch.setenv("TAGLOOP_QUIET_EXEMPT_CHANNELS", "")  # ignored, as every empty value
    assert load_settings().quiet_exempt_channels == ["file", "console"]
    monkeypatch.setenv("TAGLOOP_QUIET_EXEMPT_CHANNELS", "None")
    assert load_settings().quiet_exempt_channels == []
    monkeypatch.setenv("TAGLOOP_QUIET_EXEMPT_CHANNELS", "file")
    assert load_settings().quiet_exempt_channels == ["file"]
    monkeypatch.setenv("TAGLOOP_CANDIDATE_SOURCES", "none")  # no source: every run would send nothing
    with pytest.raises(ConfigError, match="candidate_sources: List should have at least 1 item"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGLOOP_SMTP_URL": f"ftp://u:{CANARY}@mail.example"}, "TAGLOOP_SMTP_URL must look like smtp://"),
        ({"TAGLOOP_CANDIDATE_SOURCES": "tags,trendng"}, "TAGLOOP_CANDIDATE_SOURCES names unknown"),
        (
            {"TAGLOOP_POLICY_FILE": "/nonexistent/POLICY.toml"},
            "TAGLOOP_POLICY_FILE: /nonexistent/POLICY.toml",
        ),
    ],
)
def test_serve_without_scheduler_or_delivery_checks_what_runs_build(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """Only the worker and the scheduler built channels, policy and sources: without them `serve`
    started, and the first run requested over HTTP failed on the bad setting."""
    env = {
        "TAGLOOP_HOME": str(tmp_path / "home"),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        **env,
    }
    result = _run(env, "serve", "--port", "0", "--no-scheduler", "--no-delivery")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert CANARY not in result.stderr + result.stdout
