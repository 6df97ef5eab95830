"""HTTP API test support: an app on the session's test database with known API keys and webhook
secrets (an old and a new one, as during rotation), a TestClient, signing and seeding helpers."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from tagloop.agent.settings import Settings

API_KEY = "test-key-0123456789"
OLD_SECRET = "whsec_" + base64.b64encode(b"old-secret-old-secret-old-secret").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"new-secret-new-secret-new-secret").decode()
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def signed_headers(
    body: bytes, *, msg_id: str, secret: str = NEW_SECRET, at: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body` (signature over the exact bytes)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def make_settings(db_url: str, home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "home": home,
        "api_keys": [API_KEY],
        "webhook_secrets": [OLD_SECRET, NEW_SECRET],
        "rate_limit_per_minute": 100_000,
        "trigger_delay_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


def afternoon_zone() -> str:
    """An IANA zone where it is early afternoon now: outside any quiet hours, whenever a test runs."""
    from datetime import UTC, datetime

    offset = (14 - datetime.now(UTC).hour + 12) % 24 - 12
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"  # (Etc/GMT-5 is UTC+5)


USERS = [
    {
        "id": "u1",
        "timezone": "Europe/Berlin",
        "channels": {"webhook": "https://example.test/hook"},
        "consent": {"webhook": True, "email": False},
    },
    {"id": "u2", "timezone": "America/New_York"},
]
ITEMS = [
    {"id": "i1", "title": "Night Drive", "provider": "a1", "tags": ["synthwave", "electronic"]},
    {"id": "i2", "title": "Blue Hour", "provider": "a2", "tags": ["jazz", "piano"]},
    {"id": "i3", "title": "Neon Grid", "provider": "a1", "tags": ["synthwave", "retro"]},
    {"id": "i4", "title": "Late Set", "provider": "a3", "tags": ["jazz", "live"]},
    {"id": "i5", "title": "Chrome", "provider": "a4", "tags": ["electronic", "retro"]},
]


def seed(client: TestClient) -> None:
    assert client.post("/v1/users", json=USERS, headers=AUTH).status_code == 200
    assert client.post("/v1/items", json=ITEMS, headers=AUTH).status_code == 200


def post_events(client: TestClient, events: Any, **headers: str) -> Any:
    return client.post(
        "/v1/events",
        content=json.dumps(events).encode(),
        headers={"content-type": "application/json", **AUTH, **headers},
    )


def fold_all(conn: Any, *, timeout_s: float = 30.0) -> int:
    """Run the profile folder on `conn` until it has folded every committed event (what
    `tagloop serve` does in the background); returns the events folded."""
    from datetime import UTC, datetime

    from tagloop.tools.profile_folder import FoldOptions, fold_pending

    conn.rollback()
    folded, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = fold_pending(conn, FoldOptions(), now=datetime.now(UTC))
        folded += report.events
        behind = conn.execute(
            "select count(*) as n from events"
            " where seq > coalesce((select last_seq from profile_fold_state), 0)"
        ).fetchone()
        conn.commit()
        if report.last_seq is not None and not behind["n"]:
            return folded
        time.sleep(0.02)
    raise AssertionError("the profile folder did not catch up")


def wait_folded(conn: Any, total: int, *, timeout_s: float = 60.0) -> None:
    """Wait until the background folder of a `tagloop serve` has folded `total` events."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn.rollback()
        row = conn.execute("select coalesce(sum(n_events), 0) as n from user_profiles").fetchone()
        if row["n"] >= total:
            return
        time.sleep(0.05)


def server_env(db_url: str, home: Path) -> dict[str, str]:
    """The environment of a `tagloop serve` subprocess on the test database (no rate limit)."""
    env = {
        **os.environ,
        "TAGLOOP_DATABASE_URL": db_url,
        "TAGLOOP_API_KEYS": API_KEY,
        "TAGLOOP_HOME": str(home),
        "TAGLOOP_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    env.pop("DATABASE_URL", None)
    env.pop("TAGLOOP_CONFIG", None)
    return env
