"""`tagloop import`: JSONL/CSV, line-numbered errors, all-or-nothing, --skip-bad, idempotent events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"select count(*) as n from {table}").fetchone()
    return int(row["n"]) if row else 0


@pytest.fixture
def catalogue(db: psycopg.Connection[Any], tmp_path: Path) -> psycopg.Connection[Any]:
    import_file(
        db,
        "users",
        write_jsonl(
            tmp_path / "users.jsonl",
            [
                {
                    "id": "u1",
                    "timezone": "Europe/Berlin",
                    "channels": {"email": "a@example.test"},
                    "consent": {"email": True},
                },
                {"id": "u2", "timezone": "America/New_York", "plan": "premium"},
            ],
        ),
    )
    import_file(
        db,
        "items",
        write_jsonl(
            tmp_path / "items.jsonl",
            [
                {"id": "i1", "title": "One", "provider": "p1", "tags": ["Shoegaze", "dream pop"]},
                {
                    "id": "i2",
                    "title": "Two",
                    "provider": "p2",
                    "tags": {"hip hop": 1.0, "80s": 0.5},
                    "mood": "dark",
                },
            ],
        ),
    )
    return db


def test_items_users_and_unknown_fields_are_kept(catalogue: psycopg.Connection[Any]) -> None:
    item = catalogue.execute("select * from items where id = 'i2'").fetchone()
    user = catalogue.execute("select * from users where id = 'u2'").fetchone()
    assert item is not None and item["attributes"] == {"mood": "dark"} and item["provider_id"] == "p2"
    assert user is not None and user["attributes"] == {"plan": "premium"}
    tags = {r["name"] for r in catalogue.execute("select name from tags")}
    assert tags == {"shoegaze", "dream-pop", "hip-hop", "80s"}
    assert catalogue.execute("select tag_vec from items where id = 'i1'").fetchone()["tag_vec"] is not None


def test_duplicate_event_id_is_stored_once(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    events = [
        {"id": "e1", "user_id": "u1", "type": "play", "item_id": "i1", "ts": "2026-01-01T10:00:00Z"},
        {"id": "e1", "user_id": "u1", "type": "play", "item_id": "i1", "ts": "2026-01-01T10:00:00Z"},
        {
            "id": "e2",
            "user_id": "u1",
            "type": "like",
            "item_id": "i1",
            "ts": "2026-01-01T10:01:00+01:00",
            "context": {"device": "mobile"},
            "source": "radio",
        },
    ]
    path = write_jsonl(tmp_path / "events.jsonl", events)
    first = import_file(catalogue, "events", path)
    second = import_file(catalogue, "events", path)
    assert (first.stored, first.duplicates) == (2, 1)
    assert (second.stored, second.duplicates) == (0, 3)
    assert count(catalogue, "events") == 2
    e2 = catalogue.execute("select context from events where id = 'e2'").fetchone()
    assert e2["context"] == {"device": "mobile", "source": "radio"}


def test_events_without_id_get_a_stable_id(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [{"user_id": "u1", "type": "skip", "item_id": "i2", "ts": "2026-01-01T10:00:00Z"}],
    )
    import_file(catalogue, "events", path)
    import_file(catalogue, "events", path)
    assert count(catalogue, "events") == 1


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"user_id": "u1", "type": "play", "item_id": "i1"', "malformed JSON"),
        ({"user_id": "nobody", "type": "play", "item_id": "i1"}, "user_id: unknown user 'nobody'"),
        ({"user_id": "u1", "type": "play", "item_id": "nothing"}, "item_id: unknown item 'nothing'"),
        ({"user_id": "u1", "type": "teleport", "item_id": "i1"}, "type: unknown event type 'teleport'"),
        ({"user_id": "u1", "type": "play", "ts": "yesterday"}, "ts: is not an RFC 3339 timestamp"),
        ({"user_id": "u1", "type": "play", "ts": "2026-01-01T10:00:00"}, "ts: has no time zone offset"),
        ({"user_id": "u1", "type": "play", "value": "lots"}, "value: must be a number"),
        ({"type": "play"}, "user_id: is required"),
        ([1, 2], "expected a JSON object"),
        (
            {"user_id": "u1", "type": "play", "context": {"device": "tv"}, "device": "phone"},
            "device: is given both as a field and inside context with different values",
        ),
    ],
)
def test_a_bad_event_line_names_file_line_and_field_and_stores_nothing(
    catalogue: psycopg.Connection[Any], tmp_path: Path, line: Any, needle: str
) -> None:
    good = {"id": "ok", "user_id": "u1", "type": "play", "item_id": "i1"}
    path = write_jsonl(tmp_path / "events.jsonl", [good, line])
    with pytest.raises(InvalidInput) as caught:
        import_file(catalogue, "events", path)
    assert f"{path}:2" in str(caught.value) and needle in str(caught.value)
    assert count(catalogue, "events") == 0


def test_skip_bad_imports_the_good_lines_and_reports_the_rest(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            {"id": "a", "user_id": "u1", "type": "play", "item_id": "i1"},
            {"id": "b", "user_id": "ghost", "type": "play", "item_id": "i1"},
            {"id": "c", "user_id": "u2", "type": "like", "item_id": "i2"},
        ],
    )
    result = import_file(catalogue, "events", path, skip_bad=True)
    assert result.stored == 2 and [e.line for e in result.skipped] == [2]
    assert count(catalogue, "events") == 2


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"id": "x", "timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not an IANA time zone"),
        # zone files that name no place: the host's own zone (differs per worker machine), a placeholder
        ({"id": "x", "timezone": "localtime"}, "timezone: 'localtime' is not an IANA time zone"),
        ({"id": "x", "timezone": "Factory"}, "timezone: 'Factory' is not an IANA time zone"),
        ({"id": "x", "consent": {"email": "maybe"}}, "consent.email: must be true or false"),
        ({"id": "x" * 300}, "id: is longer than 256 characters"),
        (
            {"id": "x", "attributes": {"tier": "gold"}, "tier": "free"},
            "tier: is given both as a field and inside",
        ),
    ],
)
def test_bad_user_lines_are_rejected(
    db: psycopg.Connection[Any], tmp_path: Path, row: Any, needle: str
) -> None:
    path = write_jsonl(tmp_path / "users.jsonl", [{"id": "fine"}, row])
    with pytest.raises(InvalidInput, match=":2: " + needle.split(":")[0]) as caught:
        import_file(db, "users", path)
    assert needle in str(caught.value)
    assert count(db, "users") == 0


def test_a_field_repeated_inside_attributes_or_context_is_kept_when_equal(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    items = tmp_path / "items.csv"
    items.write_text('id,attributes,mood\ni7,"{""mood"": ""sad"", ""era"": ""90s""}",sad\n', encoding="utf-8")
    import_file(catalogue, "items", items)
    row = catalogue.execute("select attributes from items where id = 'i7'").fetchone()
    assert row is not None and row["attributes"] == {"mood": "sad", "era": "90s"}
    clash = tmp_path / "clash.csv"
    clash.write_text('id,attributes,mood\ni7,"{""mood"": ""sad""}",happy\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"clash\.csv:2: mood: is given both"):
        import_file(catalogue, "items", clash)
    row = catalogue.execute("select attributes from items where id = 'i7'").fetchone()
    assert row is not None and row["attributes"] == {"mood": "sad", "era": "90s"}  # nothing stored is lost


def test_bad_item_tag_weight_is_rejected(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [{"id": "i", "tags": {"rock": 1.5}}])
    with pytest.raises(InvalidInput, match=r"items.jsonl:1: tags.rock: weight must be a number in \(0, 1\]"):
        import_file(db, "items", path)
    assert count(db, "items") == 0


def test_a_tag_too_long_to_index_is_a_bad_line(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """A 6,000-character tag overflowed the tags' unique index: a psycopg traceback, even with
    --skip-bad; it is now a bad line like any other."""
    rows = [{"id": "big", "tags": ["x" * 201, "rock"]}, {"id": "fine", "tags": {"rock": 1, "y" * 300: 0.5}}]
    path = write_jsonl(tmp_path / "items.jsonl", [*rows, {"id": "ok", "tags": ["rock"]}])
    with pytest.raises(InvalidInput, match=r"items.jsonl:1: tags\[0\]: is longer than 200 characters"):
        import_file(db, "items", path)
    result = import_file(db, "items", path, skip_bad=True)
    assert result.stored == 1 and [e.line for e in result.skipped] == [1, 2]


def test_a_line_that_is_not_utf8_is_a_bad_line(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "caf\xe9"}\n{"id": "b"}\n')
    with pytest.raises(InvalidInput, match=r"users.jsonl:2: the line is not UTF-8 \(byte 0xe9 at byte 12 "):
        import_file(db, "users", path)
    result = import_file(db, "users", path, skip_bad=True)
    assert result.stored == 2 and [e.line for e in result.skipped] == [2]


def test_csv_with_tag_lists_and_extra_columns(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,title,provider,tags,colour\ni9,Nine,p9,post-rock|Ambient,blue\n", encoding="utf-8")
    import_file(db, "items", path)
    row = db.execute("select attributes from items where id = 'i9'").fetchone()
    assert row["attributes"] == {"colour": "blue"}
    names = {
        r["name"]
        for r in db.execute(
            "select t.name from item_tags it join tags t on t.id = it.tag_id where it.item_id = 'i9'"
        )
    }
    assert names == {"post-rock", "ambient"}


def test_csv_events_with_wrong_column_count(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,type,item_id\nu1,play\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"events.csv:2: expected 3 columns, got 2"):
        import_file(db, "events", path)


@pytest.mark.parametrize(
    ("kind", "row", "needle"),
    [
        ("items", {"id": "a\u0000b"}, "id: contains a NUL character"),
        ("items", {"id": "a", "colour": "bl\u0000ue"}, "colour: contains a NUL character"),
        ("items", {"id": "a", "tags": ["ro\u0000ck"]}, r"tags\[0\]: contains a NUL character"),
        (
            "users",
            {"id": "u", "channels": {"email": "a\u0000@x"}},
            "channels.email: contains a NUL character",
        ),
    ],
)
def test_nul_characters_are_rejected_by_field(
    db: psycopg.Connection[Any], tmp_path: Path, kind: str, row: dict[str, Any], needle: str
) -> None:
    path = write_jsonl(tmp_path / f"{kind}.jsonl", [row])
    with pytest.raises(InvalidInput, match=":1: " + needle):
        import_file(db, kind, path)


def test_empty_provider_means_no_provider(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    import_file(db, "items", write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "provider": ""}]))
    row = db.execute("select provider_id from items where id = 'a'").fetchone()
    assert row is not None and row["provider_id"] is None


def test_json_lines_with_a_bom_and_no_extension_are_read_as_json(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "items.txt"
    path.write_bytes(b'\xef\xbb\xbf{"id": "bom1", "title": "B", "tags": ["x"]}\n')
    assert import_file(db, "items", path).stored == 1


@pytest.mark.parametrize(
    ("kind", "text", "needle"),
    [
        ("users", '{"id": "tz1", "timezone": "UTC"}\n', "no id column .*name it .jsonl"),
        ("items", "title,tags\nOne,rock\n", r"no id column \(columns: title, tags\)"),
        ("events", "user_id,item_id\nu1,i1\n", "no type column"),
        ("events", "item_id\n", "no user_id, type column"),
    ],
)
def test_a_csv_header_without_a_required_column_is_an_error(
    catalogue: psycopg.Connection[Any], tmp_path: Path, kind: str, text: str, needle: str
) -> None:
    path = tmp_path / f"{kind}.csv"
    path.write_text(text, encoding="utf-8")
    for skip_bad in (False, True):
        with pytest.raises(InvalidInput, match=f"{kind}.csv:1: the CSV header has {needle}"):
            import_file(catalogue, kind, path, skip_bad=skip_bad)
    header_only = tmp_path / f"{kind}-empty.csv"
    header_only.write_text("id,user_id,type\n", encoding="utf-8")
    assert import_file(catalogue, kind, header_only).stored == 0
