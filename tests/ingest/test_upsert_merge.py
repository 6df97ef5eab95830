"""Re-importing part of an item or user merges into what is stored: fields the record does not give
keep their values (a CSV without the column, a JSON line without the key), fields it gives replace
them, JSON null clears what can be empty; created_at never moves unless given. The HTTP PUT uses
the same code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagloop.tools.ingest.loader import import_file

STORED_AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def stored(db: psycopg.Connection[Any], tmp_path: Path) -> psycopg.Connection[Any]:
    import_file(
        db,
        "users",
        _jsonl(
            tmp_path / "users.jsonl",
            [
                {
                    "id": "u1",
                    "timezone": "Europe/Berlin",
                    "locale": "de-DE",
                    "channels": {"email": "u1@example.test", "push": "tok-1"},
                    "consent": {"email": True, "push": True},
                    "plan": "premium",
                }
            ],
        ),
    )
    import_file(
        db,
        "items",
        _jsonl(
            tmp_path / "items.jsonl",
            [
                {
                    "id": "i1",
                    "title": "One",
                    "kind": "album",
                    "provider": "p1",
                    "tags": ["shoegaze", "dream pop"],
                    "text": "liner notes",
                    "created_at": STORED_AT.isoformat(),
                    "mood": "dark",
                    "bpm": 120,
                },
                {"id": "i2", "title": "Two", "provider": "p2", "tags": ["jazz"]},
            ],
        ),
    )
    return db


def _item(conn: psycopg.Connection[Any], item_id: str) -> dict[str, Any]:
    row = conn.execute(
        """select i.title, i.kind, i.provider_id, i.text, i.created_at, i.attributes,
                  i.tag_vec is not null as has_vec,
                  array(select t.name from item_tags it join tags t on t.id = it.tag_id
                        where it.item_id = i.id order by t.name) as tags
           from items i where i.id = %(id)s""",
        {"id": item_id},
    ).fetchone()
    assert row is not None
    return dict(row)


def _user(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    row = conn.execute("select * from users where id = %(id)s", {"id": user_id}).fetchone()
    assert row is not None
    return dict(row)


def test_an_id_tags_csv_retags_and_keeps_everything_else(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    result = import_file(stored, "items", _csv(tmp_path / "retag.csv", "id,tags\ni1,post-rock|ambient\n"))
    assert result.stored == 1
    item = _item(stored, "i1")
    assert item["tags"] == ["ambient", "post-rock"] and item["has_vec"]
    assert (item["title"], item["kind"], item["provider_id"], item["text"]) == (
        "One",
        "album",
        "p1",
        "liner notes",
    )
    assert item["created_at"] == STORED_AT
    assert item["attributes"] == {"mood": "dark", "bpm": 120}


def test_a_title_provider_reimport_keeps_the_tags_and_tag_vector(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    import_file(stored, "items", _csv(tmp_path / "rename.csv", "id,title,provider\ni1,Uno,p9\n"))
    item = _item(stored, "i1")
    assert (item["title"], item["provider_id"]) == ("Uno", "p9")
    assert item["tags"] == ["dream-pop", "shoegaze"] and item["has_vec"]
    assert item["created_at"] == STORED_AT


def test_a_full_line_without_created_at_keeps_the_stored_one(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    line = {"id": "i1", "title": "One (remaster)", "provider": "p1", "tags": ["shoegaze"], "mood": "bright"}
    import_file(stored, "items", _jsonl(tmp_path / "again.jsonl", [line]))
    item = _item(stored, "i1")
    assert item["created_at"] == STORED_AT and item["title"] == "One (remaster)"
    assert item["tags"] == ["shoegaze"]
    assert item["attributes"] == {"mood": "bright", "bpm": 120}  # unknown fields merge key by key
    later = datetime(2025, 1, 2, tzinfo=UTC)
    import_file(
        stored, "items", _jsonl(tmp_path / "dated.jsonl", [{"id": "i1", "created_at": later.isoformat()}])
    )
    assert _item(stored, "i1")["created_at"] == later


def test_json_null_clears_what_can_be_empty(stored: psycopg.Connection[Any], tmp_path: Path) -> None:
    row = {"id": "i1", "provider": None, "text": None, "tags": None, "attributes": None, "title": None}
    import_file(stored, "items", _jsonl(tmp_path / "clear.jsonl", [row]))
    item = _item(stored, "i1")
    assert (item["provider_id"], item["text"], item["tags"], item["attributes"]) == (None, None, [], {})
    assert not item["has_vec"]
    assert item["title"] == "One" and item["created_at"] == STORED_AT  # cannot be empty: kept


def test_an_id_consent_reimport_keeps_zone_addresses_and_locale(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    import_file(stored, "users", _csv(tmp_path / "consent.csv", 'id,consent\nu1,"{""email"": false}"\n'))
    user = _user(stored, "u1")
    assert user["consent"] == {"email": False}  # given: replaces (absent channel = no consent)
    assert user["timezone"] == "Europe/Berlin" and user["locale"] == "de-DE"
    assert user["channels"] == {"email": "u1@example.test", "push": "tok-1"}
    assert user["attributes"] == {"plan": "premium"}


def test_a_user_line_without_consent_does_not_void_an_unsubscribe(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    from tagloop.tools.store import runs

    def unsubscribes(conn: psycopg.Connection[Any], users: list[str]) -> dict[str, dict[str, datetime]]:
        found = runs.unsubscribes(conn, users)
        conn.rollback()  # a read outside import_file's transaction
        return found

    import_file(
        stored,
        "events",
        _jsonl(tmp_path / "unsub.jsonl", [{"user_id": "u1", "type": "unsubscribe", "channel": "email"}]),
    )
    assert "email" in unsubscribes(stored, ["u1"])["u1"]
    import_file(stored, "users", _csv(tmp_path / "zone.csv", "id,timezone\nu1,Europe/Paris\n"))
    assert _user(stored, "u1")["timezone"] == "Europe/Paris"
    assert "email" in unsubscribes(stored, ["u1"]).get("u1", {})
    import_file(stored, "users", _jsonl(tmp_path / "optin.jsonl", [{"id": "u1", "consent": {"email": True}}]))
    assert unsubscribes(stored, ["u1"]).get("u1", {}) == {}


def test_lines_repeating_an_id_merge_in_file_order(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    rows = [
        {"id": "n1", "title": "First", "provider": "p1", "colour": "red"},
        {"id": "n1", "tags": ["rock"], "size": "L"},
        {"id": "n1", "title": "Final"},
    ]
    assert import_file(db, "items", _jsonl(tmp_path / "items.jsonl", rows)).stored == 1
    item = _item(db, "n1")
    assert (item["title"], item["provider_id"], item["tags"]) == ("Final", "p1", ["rock"])
    assert item["attributes"] == {"colour": "red", "size": "L"}


API_KEY = "test-key-merge-0123456"


@pytest.fixture
def client(stored: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    from tagloop.agent.http import create_app
    from tagloop.agent.settings import Settings

    settings = Settings(database_url=db_url, home=tmp_path, api_keys=[API_KEY], rate_limit_per_minute=100_000)
    with TestClient(create_app(settings, pool_size=2)) as c:
        yield c


def test_put_without_created_at_keeps_it(client: TestClient, stored: psycopg.Connection[Any]) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    done = client.put("/v1/items/i1", json={"title": "One", "provider": "p1"}, headers=auth)
    assert done.status_code == 200
    stored.rollback()
    item = _item(stored, "i1")
    assert item["created_at"] == STORED_AT and item["tags"] == ["dream-pop", "shoegaze"]


def test_an_auto_tag_an_import_repeated_comes_back_when_the_import_drops_it(
    stored: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The import took over the keyword tag 'chill' it repeated (one row per item and tag) and,
    when a later import left 'chill' out, deleted it: the auto tag was gone for good."""
    stored.execute(
        """insert into tags (name) values ('chill') on conflict do nothing;
           insert into item_tags (item_id, tag_id, weight, source, confidence)
           select 'i1', id, 0.8, 'keyword', 0.9 from tags where name = 'chill'"""
    )
    stored.commit()

    def chill() -> dict[str, Any] | None:
        return stored.execute(
            """select it.source, it.weight, it.confidence from item_tags it join tags t on t.id = it.tag_id
               where it.item_id = 'i1' and t.name = 'chill'"""
        ).fetchone()

    import_file(stored, "items", _csv(tmp_path / "a.csv", 'id,tags\ni1,"{""chill"": 1.0, ""house"": 1.0}"\n'))
    assert chill() == {"source": "import", "weight": 1.0, "confidence": 1.0}
    import_file(stored, "items", _csv(tmp_path / "b.csv", "id,tags\ni1,house\n"))
    assert chill() == {"source": "keyword", "weight": pytest.approx(0.8), "confidence": pytest.approx(0.9)}
    assert "chill" in _item(stored, "i1")["tags"]


def test_a_blank_title_keeps_the_stored_one(stored: psycopg.Connection[Any], tmp_path: Path) -> None:
    """README: a title is only replaced, never cleared; JSON "" and a CSV cell of spaces cleared it."""
    import_file(stored, "items", _jsonl(tmp_path / "blank.jsonl", [{"id": "i1", "title": "", "kind": ""}]))
    import_file(stored, "items", _csv(tmp_path / "blank.csv", "id,title\ni1,   \n"))
    assert (_item(stored, "i1")["title"], _item(stored, "i1")["kind"]) == ("One", "album")


def test_a_blank_csv_cell_is_not_given(stored: psycopg.Connection[Any], tmp_path: Path) -> None:
    """A cell of spaces was a value: `tags` of ' ' was an error, a title of ' ' replaced the title."""
    result = import_file(stored, "items", _csv(tmp_path / "blank-tags.csv", "id,title,tags\ni1,Uno, \n"))
    assert result.stored == 1
    item = _item(stored, "i1")
    assert item["title"] == "Uno" and item["tags"] == ["dream-pop", "shoegaze"]
