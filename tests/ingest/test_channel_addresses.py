"""Channel addresses are validated where users are parsed (imports and the HTTP API): an `email`
address is exactly one plain address — no CR/LF header injection, no second recipient, no display
name — and other channels' addresses hold no control characters; the error names the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.records import FieldError, parse_user

BAD_EMAILS = [
    "e2@example.test\r\nBcc: evil@attacker.test",
    "e2@example.test\nBcc: evil@attacker.test",
    "e3@example.test, victim@attacker.test",
    "e3@example.test,victim@attacker.test",
    "e3@example.test;victim@attacker.test",
    "Listener <victim@attacker.test>",
    "e3@example.test <victim@attacker.test>",
    "<victim@attacker.test>",
    "(comment)e3@example.test",
    "e3@example.test\t",
    "e3@example.test\u2028",
    "e3 @example.test",
    "",
    "e3",
    "e3@",
    "@example.test",
    "e3@@example.test",
    "e3..x@example.test",
    "e3@-example.test",
    "e3@[127.0.0.1]",
    "ü@example.test",
    "x" * 65 + "@example.test",
]
GOOD_EMAILS = ["a@example.test", "first.last+tag@mail.example.co", "a@localhost", "a@exämple.test"]


@pytest.mark.parametrize("address", BAD_EMAILS)
def test_an_email_address_must_be_exactly_one_plain_address(address: str) -> None:
    with pytest.raises(FieldError) as err:
        parse_user({"id": "u", "channels": {"email": address}})
    assert err.value.field == "channels.email"
    assert "\n" not in str(err.value) and "\r" not in str(err.value)  # shown escaped


@pytest.mark.parametrize("address", GOOD_EMAILS)
def test_plain_email_addresses_are_kept_as_given(address: str) -> None:
    assert parse_user({"id": "u", "channels": {"email": address}}).channels == {"email": address}


@pytest.mark.parametrize("address", ["https://a.test/x\r\nX-Evil: 1", "tok\u2028en", "a\tb"])
def test_other_channel_addresses_hold_no_control_characters(address: str) -> None:
    with pytest.raises(FieldError) as err:
        parse_user({"id": "u", "channels": {"webhook": address}})
    assert err.value.field == "channels.webhook"


def test_other_channels_keep_free_form_addresses() -> None:
    channels = {"file": "inbox", "webhook": "device-token-42", "sms": "+49 30 1234"}
    assert parse_user({"id": "u", "channels": channels}).channels == channels


def test_import_refuses_an_injected_email_address_and_stores_nothing(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "users.jsonl"
    rows = [
        {"id": "ok", "channels": {"email": "ok@example.test"}},
        {"id": "e2", "channels": {"email": "e2@example.test\r\nBcc: evil@attacker.test"}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"users.jsonl:2: channels.email: contains a line break"):
        import_file(db, "users", path)
    assert db.execute("select count(*) as n from users").fetchone()["n"] == 0
    csv = tmp_path / "users.csv"
    csv.write_text(
        'id,channels\ne3,"{""email"": ""e3@example.test, victim@attacker.test""}"\n', encoding="utf-8"
    )
    with pytest.raises(InvalidInput, match=r"users.csv:2: channels.email: must be exactly one address"):
        import_file(db, "users", csv)


API_KEY = "test-key-addresses-0123"


@pytest.fixture
def client(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    from tagloop.agent.http import create_app
    from tagloop.agent.settings import Settings

    settings = Settings(database_url=db_url, home=tmp_path, api_keys=[API_KEY], rate_limit_per_minute=100_000)
    with TestClient(create_app(settings, pool_size=2)) as c:
        yield c


def test_the_api_refuses_injected_and_multiple_email_addresses(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for address in ("e2@example.test\r\nBcc: evil@attacker.test", "e3@example.test, victim@attacker.test"):
        bad = client.put("/v1/users/u9", json={"channels": {"email": address}}, headers=auth)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "channels.email"
    batch = client.post(
        "/v1/users",
        json=[{"id": "a"}, {"id": "b", "channels": {"email": "Evil <victim@attacker.test>"}}],
        headers=auth,
    )
    assert batch.status_code == 422 and batch.json()["errors"][0]["field"] == "[1].channels.email"
    assert db.execute("select count(*) as n from users").fetchone()["n"] == 0
    ok = client.put("/v1/users/u9", json={"channels": {"email": "u9@example.test"}}, headers=auth)
    assert ok.status_code == 200
