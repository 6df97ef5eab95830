"""Values JSON (or Python's JSON parser) allows but PostgreSQL cannot store — NaN, infinities,
1e400, a lone surrogate escape, objects nested deeper than the API can serialize — are bad lines
naming file, line and field (a psycopg traceback on COPY before); misspelt item fields and new items
without title or provider are stored with a warning; a near miss of a channel name is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.records import FieldError, parse_event, parse_item, parse_user
from tagloop.tools.store import migrate


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"user_id": "u1", "type": "play", "score": NaN}', "score: must be a finite number"),
        ('{"user_id": "u1", "type": "play", "score": Infinity}', "score: must be a finite number"),
        ('{"user_id": "u1", "type": "play", "score": 1e400}', "score: must be a finite number"),
        (
            '{"user_id": "u1", "type": "play", "context": {"x": [1, -Infinity]}}',
            r"context.x\[1\]: must be a finite",
        ),
        (
            '{"user_id": "u1", "type": "play", "title": "bad \\ud800"}',
            "title: contains an unpaired surrogate",
        ),
        (
            '{"user_id": "u1", "type": "play", "item_id": "i\\udfff"}',
            "item_id: contains an unpaired surrogate",
        ),
        ('{"user_id": "u1", "type": "play", "\\ud800": 1}', "field name .*: contains an unpaired surrogate"),
        (
            json.dumps({"user_id": "u1", "type": "play", "context": _deep(33)}),
            "context.a.a.a.*: is nested more than 32 levels deep",
        ),
        (
            '{"user_id": "u1", "type": "convert", "value": 1e308}',
            r"value: must lie within ±1e\+12, got 1e\+308",
        ),
        ('{"user_id": "u1", "type": "play", "value": -2e12}', r"value: must lie within ±1e\+12, got -2e\+12"),
    ],
)
def test_unstorable_values_are_bad_lines_naming_the_field(
    catalogue: psycopg.Connection[Any], tmp_path: Path, line: str, needle: str
) -> None:
    good = [json.dumps({"id": f"e{n}", "user_id": "u1", "type": "play"}) for n in range(999)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*good[:499], line, *good[499:]]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=f"events.jsonl:500: {needle}"):
        import_file(catalogue, "events", path)
    result = import_file(catalogue, "events", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (999, [500])


def test_context_32_levels_deep_is_kept() -> None:
    event = parse_event({"user_id": "u", "type": "play", "context": _deep(32)}, now=_now())
    assert event.context == _deep(32)


def test_csv_json_cells_and_items_are_checked_too(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text('user_id,type,context\nu1,play,"{""x"": NaN}"\nu1,skip,"{""x"": 1}"\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"events.csv:2: context.x: must be a finite number"):
        import_file(catalogue, "events", path)
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"id": "i2", "title": "bad \\ud800"}\n{"id": "i3", "tags": {"rock": NaN}}\n', encoding="utf-8"
    )
    with pytest.raises(
        InvalidInput, match=r"(?s)items.jsonl:1: title: contains an unpaired.*:2: tags.rock: must"
    ):
        import_file(catalogue, "items", items)


API_KEY = "test-key-record-checks-01"


@pytest.fixture
def client(catalogue: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    from tagloop.agent.http import create_app
    from tagloop.agent.settings import Settings

    settings = Settings(database_url=db_url, home=tmp_path, api_keys=[API_KEY], rate_limit_per_minute=100_000)
    with TestClient(create_app(settings, pool_size=2)) as c:
        yield c


def test_the_api_refuses_a_context_too_deep_to_serve(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    # 60 levels: within what the API decodes (100, agent/http/bodies.py), past what a field may hold
    body = json.dumps({"user_id": "u1", "type": "play", "context": _deep(60)})
    refused = client.post("/v1/events", content=body, headers=auth)
    assert refused.status_code == 422
    assert "is nested more than 32 levels deep" in refused.text
    assert refused.json()["errors"][0]["field"].startswith("context.a.a")
    page = client.get("/v1/users/u1/events", headers=auth)
    assert page.status_code == 200 and page.json()["events"] == []


def test_misspelt_fields_and_new_items_without_title_or_provider_are_warned(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    rows = [
        {"id": "i1", "tags": ["rock"]},  # stored already: keeps its title and provider, no warning
        {"id": "n1", "titel": "New", "artist": "someone", "tag": ["rock"], "colour": "red"},
        {"id": "n2", "title": "Two", "provider": "p"},
        {"id": "n3", "title": "Three"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = import_file(catalogue, "items", path)
    assert result.stored == 4
    assert [(w.line, w.field) for w in result.warnings] == [
        (2, "titel"),
        (2, "artist"),
        (2, "tag"),
        (2, "kind"),  # once for the file
        (2, "title"),
        (2, "provider"),
        (4, "provider"),
    ]
    assert "did you mean 'title'?" in str(result.warnings[0])
    assert "did you mean 'provider'?" in str(result.warnings[1])
    assert "missing on 3 new item(s)" in str(result.warnings[3]) and "`track`" in str(result.warnings[3])
    assert result.summary()["warned"] == 7
    row = catalogue.execute("select attributes from items where id = 'n1'").fetchone()
    assert row is not None and row["attributes"] == {
        "titel": "New",
        "artist": "someone",
        "tag": ["rock"],
        "colour": "red",
    }


def test_a_csv_tags_cell_separated_by_commas_is_one_tag_with_a_warning(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        'id,title,provider,tags\nk1,K1,pk,"rock, pop, indie"\nk2,K2,pk,rock;pop\nk3,K3,pk,rock|pop\n'
        'k4,K4,pk,"[""a, b""]"\n',
        encoding="utf-8",
    )
    result = import_file(catalogue, "items", path)
    assert result.stored == 4
    assert [(w.line, w.field, w.reason) for w in result.warnings if w.field != "kind"] == [
        (2, "tags", "one tag 'rock, pop, indie' holds ','; separate tags with '|'"),
        (3, "tags", "one tag 'rock;pop' holds ';'; separate tags with '|'"),
    ]
    tags = catalogue.execute(
        """select it.item_id, array_agg(t.name order by t.name) as names from item_tags it
           join tags t on t.id = it.tag_id where it.item_id like 'k%' group by it.item_id order by 1"""
    ).fetchall()
    assert [r["names"] for r in tags] == [["rock,-pop,-indie"], ["rock;pop"], ["pop", "rock"], ["a,-b"]]


@pytest.mark.parametrize("field", ["consent", "channels"])
def test_a_near_miss_of_a_channel_name_is_refused(field: str) -> None:
    value = {"emial": True} if field == "consent" else {"emial": "a@example.test"}
    with pytest.raises(FieldError, match="no such channel; did you mean 'email'") as bad:
        parse_user({"id": "u", field: value})
    assert bad.value.field == f"{field}.emial"
    custom = {"sms": True} if field == "consent" else {"sms": "+49 30 1234567"}
    assert getattr(parse_user({"id": "u", field: custom}), field) == custom


def test_items_without_title_are_still_valid() -> None:
    assert parse_item({"id": "x"}).title is None


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("File", "file"), (" EMAIL ", "email"), ("", "*"), (None, "*"), ("*", "*"), ("my-sms", "my-sms")],
)
def test_an_unsubscribe_names_its_channel_as_deliveries_compare_it(given: Any, stored: str) -> None:
    """'File', '' and the like were stored as given, matched no channel, and the sends went on."""
    for data in ({"channel": given}, {"context": {"channel": given}}):
        event = parse_event({"user_id": "u1", "type": "unsubscribe", **data}, now=_now())
        assert event.context["channel"] == stored


@pytest.mark.parametrize(("given", "reason"), [("fiel", "did you mean 'file'"), (["file"], "channel name")])
def test_an_unsubscribe_from_a_channel_that_cannot_be_matched_is_refused(given: Any, reason: str) -> None:
    with pytest.raises(FieldError, match=reason) as err:
        parse_event({"user_id": "u1", "type": "unsubscribe", "channel": given}, now=_now())
    assert err.value.field == "channel"
    with pytest.raises(FieldError, match=reason) as err:  # the error named "channel" here too
        parse_event({"user_id": "u1", "type": "unsubscribe", "context": {"channel": given}}, now=_now())
    assert err.value.field == "context.channel"


def test_custom_event_types_are_accepted_and_listed_when_a_type_is_unknown() -> None:
    custom = frozenset({"rate", "vote"})
    event = parse_event({"user_id": "u", "type": "vote", "item_id": "i"}, now=_now(), extra_types=custom)
    assert event.type == "vote"
    with pytest.raises(FieldError) as bad:
        parse_event({"user_id": "u", "type": "wat"}, now=_now(), extra_types=custom)
    assert str(bad.value).endswith("unsubscribe; custom: rate, vote)"), str(bad.value)
    with pytest.raises(FieldError, match=r"'vote' \(known: add_to_playlist, .*, unsubscribe\)$"):
        parse_event({"user_id": "u", "type": "vote"}, now=_now())


def test_an_rfc_3339_leap_second_is_the_last_microsecond_of_its_minute() -> None:
    event = parse_event({"user_id": "u", "type": "play", "ts": "2016-12-31T23:59:60Z"}, now=_now())
    assert event.ts.isoformat() == "2016-12-31T23:59:59.999999+00:00"
    shifted = parse_event({"user_id": "u", "type": "play", "ts": "2017-01-01T00:59:60.25+01:00"}, now=_now())
    assert shifted.ts == event.ts
    with pytest.raises(FieldError, match="not an RFC 3339 timestamp"):
        parse_event({"user_id": "u", "type": "play", "ts": "2016-12-31T23:59:61Z"}, now=_now())
    with pytest.raises(FieldError, match="second 60 outside a leap second"):
        parse_event({"user_id": "u", "type": "play", "ts": "2016-12-31T23:58:60Z"}, now=_now())


@pytest.mark.parametrize("tag", ["\u200b", "\u2060", "...", "\u00ad", "\u200b\u00ad-", "🔥"])
def test_a_tag_without_a_letter_or_digit_is_a_bad_line(
    catalogue: psycopg.Connection[Any], tmp_path: Path, tag: str
) -> None:
    """Zero-width and punctuation-only tags were stored, as blank names in `tag vocab`."""
    path = tmp_path / "items.jsonl"
    lines = [{"id": "z1", "title": "Zw", "tags": ["rock", tag]}, {"id": "z2", "tags": {tag: 0.5}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(
        InvalidInput, match=r"(?s)items.jsonl:1: tags\[1\]: has no letter or digit.*:2: tags: has no letter"
    ):
        import_file(catalogue, "items", path)


def test_invisible_characters_are_not_part_of_a_tag() -> None:
    item = parse_item({"id": "z", "tags": ["zeu\u200bhl\u00ad", "\u2060krautrock\ufeff", "Ka\u200dmasi"]})
    assert item.tags == {"zeuhl": 1.0, "krautrock": 1.0, "ka\u200dmasi": 1.0}  # joiners shape words


@pytest.mark.parametrize("tag", ["\ufdfa" * 200, "&" * 200, "ﬃ" * 100])
def test_the_length_cap_is_on_the_stored_name(tag: str) -> None:
    """200 × U+FDFA passed the check and was stored as 3,600 characters, 200 × & as 799."""
    with pytest.raises(FieldError, match="longer than 200 characters"):
        parse_item({"id": "long", "tags": [tag]})


@pytest.mark.parametrize(
    "ts",
    [
        "20240501T100000Z",  # ISO 8601 basic format
        "2024-W18-3T10:00:00Z",  # week date
        "2024-05-01T10Z",  # hour only
        "2024-05-01T10:00Z",  # no seconds
        "2024-05-01",  # a date alone
        "2024-05-01T10:00:00,5Z",  # decimal comma
        "2024-05-01T10:00:00+00:60",  # offset minutes past 59
        "２０２４-05-01T10:00:00Z",  # full-width digits
        "2024-05-01T10:00:00+25:00",  # an offset datetime cannot hold
    ],
)
def test_times_that_are_iso_8601_but_not_rfc_3339_are_refused(ts: str) -> None:
    with pytest.raises(FieldError, match="not an RFC 3339 timestamp"):
        parse_event({"user_id": "u", "type": "play", "ts": ts}, now=_now())


def test_rfc_3339_forms_and_postgresql_offsets_are_read() -> None:
    want = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    for ts in (
        "2024-05-01T10:00:00+02:00",
        "2024-05-01t08:00:00z",
        "2024-05-01 08:00:00Z",
        "2024-05-01T08:00:00.000Z",
    ):
        assert parse_event({"user_id": "u", "type": "play", "ts": ts}, now=_now()).ts == want, ts
    with pytest.raises(FieldError, match="has no time zone offset"):
        parse_event({"user_id": "u", "type": "play", "ts": "2024-05-01T10:00:00.5"}, now=_now())


def test_a_leap_second_with_a_postgresql_offset_is_read() -> None:
    event = parse_event({"user_id": "u", "type": "play", "ts": "2016-12-31 23:59:60+00"}, now=_now())
    assert event.ts.isoformat() == "2016-12-31T23:59:59.999999+00:00"


def test_tags_given_as_one_string_are_checked_like_lists(
    catalogue: psycopg.Connection[Any], tmp_path: Path, client: TestClient
) -> None:
    """A NUL in a "a|b" tag failed the whole file ('PostgreSQL text fields cannot contain NUL', no
    line) even with skip_bad; a lone surrogate was a traceback (HTTP: a 500)."""
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "s1", "tags": "rock"}\n{"id": "s2", "tags": "rock|zz\\u0000qq"}\n'
        '{"id": "s3", "tags": "rock|zz\\ud800"}\n{"id": "s4", "tags": "pop"}\n',
        encoding="utf-8",
    )
    bad = r"(?s)items.jsonl:2: tags\[1\]: contains a NUL.*:3: tags\[1\]: contains an unpaired"
    with pytest.raises(InvalidInput, match=bad):
        import_file(catalogue, "items", path)
    result = import_file(catalogue, "items", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (2, [2, 3])
    cells = tmp_path / "items.csv"
    cells.write_text("id,tags\nc1,rock|zz\x00qq\nc2,rock\n", encoding="utf-8")
    result = import_file(catalogue, "items", cells, skip_bad=True)
    assert (result.stored, [(e.line, e.field) for e in result.skipped]) == (1, [(2, "tags[1]")])
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    refused = client.put("/v1/items/s5", content='{"tags": "rock|zz\\ud800"}', headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "tags[1]"


def test_a_tag_weight_too_small_for_a_real_is_a_bad_line(
    catalogue: psycopg.Connection[Any], tmp_path: Path, client: TestClient
) -> None:
    """1e-46 passed 0 < w <= 1 and aborted the import ('value out of range: underflow', no line,
    even with skip_bad); over HTTP a 422 naming no field."""
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "w1", "tags": {"rock": 1e-6}}\n{"id": "w2", "tags": {"rock": 1e-46}}\n'
        '{"id": "w3", "tags": "{\\"pop\\": 1e-7}"}\n{"id": "w4", "tags": {"pop": 0.5}}\n',
        encoding="utf-8",
    )
    with pytest.raises(
        InvalidInput, match=r"(?s)items.jsonl:2: tags.rock: weight 1e-46 is below 1e-06.*:3: tags.pop"
    ):
        import_file(catalogue, "items", path)
    result = import_file(catalogue, "items", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (2, [2, 3])
    row = catalogue.execute("select weight from item_tags where item_id = 'w1'").fetchone()
    assert row is not None and row["weight"] == pytest.approx(1e-6)
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    refused = client.put("/v1/items/w5", content='{"tags": {"x": 1e-46}}', headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "tags.x"


def test_channel_names_are_folded_to_lower_case(client: TestClient) -> None:
    """{"EMAIL": true} was stored as a custom channel EMAIL: the user had no email consent and
    the address escaped the email check."""
    user = parse_user(
        {"id": "u", "consent": {"EMAIL": "true", " Push ": True}, "channels": {"Email": "a@example.test"}}
    )
    assert (user.consent, user.channels) == ({"email": True, "push": True}, {"email": "a@example.test"})
    with pytest.raises(FieldError, match="must be exactly one address") as bad:
        parse_user({"id": "u", "channels": {"EMAIL": "a@example.test, b@example.test"}})
    assert bad.value.field == "channels.email"
    with pytest.raises(FieldError, match="did you mean 'email'") as bad:
        parse_user({"id": "u", "consent": {"EMIAL": True}})
    assert bad.value.field == "consent.emial"
    assert parse_user({"id": "u", "consent": {"email": True, "EMAIL": "true"}}).consent == {"email": True}
    for field, value in (
        ("consent", {"email": True, "EMAIL": False}),
        ("channels", {"sms": "1", "SMS": "2"}),
    ):
        with pytest.raises(FieldError, match="given twice with different values") as bad:
            parse_user({"id": "u", field: value})
        assert bad.value.field == f"{field}.{next(iter(value))}"
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    body = {"consent": {"EMAIL": True}, "channels": {"EMAIL": "x"}}
    refused = client.put("/v1/users/u7", json=body, headers=auth)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "channels.email"


def test_an_item_created_more_than_a_day_ahead_is_a_bad_line(
    catalogue: psycopg.Connection[Any], tmp_path: Path, client: TestClient
) -> None:
    """A future created_at was stored silently and the item served as "new from …" before it
    existed; event times already had this rule."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "f1", "created_at": "2026-01-01T23:00:00Z"}\n'
        '{"id": "f2", "created_at": "2026-01-02T01:00:00Z"}\n',
        encoding="utf-8",
    )
    with pytest.raises(
        InvalidInput, match=r"items.jsonl:2: created_at: '2026-01-02T01:00:00Z' is more than a day ahead"
    ):
        import_file(catalogue, "items", path, now=now)
    result = import_file(catalogue, "items", path, now=now, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (1, [2])
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    refused = client.put("/v1/items/f3", json={"created_at": "9000-01-01T00:00:00Z"}, headers=auth)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "created_at"


def test_stored_channel_names_are_folded_like_new_ones(db: psycopg.Connection[Any]) -> None:
    """Ingest folds channel names now; a user stored before with {"EMAIL": true} had no email
    consent (sends ask for "email") until PUT again. Colliding keys are left for a PUT to decide."""
    (step,) = [m for m in migrate.available() if m.name == "users_channel_names_folded"]
    rows = {
        "upper": ('{"EMAIL": true, " Webhook ": false}', '{"EMAIL": "a@example.org"}'),
        "clash": ('{"Email": true, "email": false}', "{}"),
        "plain": ('{"email": true}', '{"email": "b@example.org"}'),
    }
    for user, (consent, channels) in rows.items():
        db.execute(
            "insert into users (id, timezone, consent, channels) values (%(u)s, 'UTC', %(c)s, %(ch)s)",
            {"u": user, "c": consent, "ch": channels},
        )
    before = db.execute("select id, updated_at from users order by id").fetchall()
    for _ in range(2):
        db.execute(step.sql)
    stored = {
        r["id"]: (r["consent"], r["channels"]) for r in db.execute("select id, consent, channels from users")
    }
    assert stored["upper"] == ({"email": True, "webhook": False}, {"email": "a@example.org"})
    assert stored["clash"] == ({"Email": True, "email": False}, {})
    assert stored["plain"] == ({"email": True}, {"email": "b@example.org"})
    assert db.execute("select id, updated_at from users order by id").fetchall() == before
