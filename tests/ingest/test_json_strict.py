"""JSON in import files is read as strictly as HTTP bodies (tools/ingest/jsontext.py): a key given
twice in one object and an integer too large to read or to store are bad lines naming file, line
and field — in JSON Lines and in the JSON cells of CSV files — never a traceback or a silent pick
of one of the values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest import jsontext
from tagloop.tools.ingest.loader import import_file

HUGE = "1" + "0" * 5000  # past the 4,300 digits Python converts
PAST_DOUBLE = "1" + "0" * 400  # an exact integer, but past what a double holds


def _events(tmp_path: Path, line: str, name: str = "events.jsonl") -> Path:
    good = json.dumps({"id": "e-good", "user_id": "u1", "type": "play"})
    path = tmp_path / name
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"user_id": "u1", "type": "play", "value": ' + PAST_DOUBLE + "}", "value: must be a finite number"),
        ('{"user_id": "u1", "type": "play", "value": ' + HUGE + "}", "value: is an integer of more than 4,3"),
        (
            '{"user_id": "u1", "type": "play", "context": {"n": [1, -' + HUGE + "]}}",
            r"context.n\[1\]: is an integer of more than 4,300",
        ),
        ('{"user_id": "u1", "type": "play", "user_id": "u2"}', "user_id: is given more than once"),
        (
            '{"user_id": "u1", "type": "play", "context": {"a": {"b": 1, "b" : 2}}}',
            "context.a.b: is given more than once",
        ),
    ],
)
def test_big_integers_and_repeated_keys_are_bad_jsonl_lines(
    catalogue: psycopg.Connection[Any], tmp_path: Path, line: str, needle: str
) -> None:
    path = _events(tmp_path, line)
    with pytest.raises(InvalidInput, match=f"events.jsonl:2: {needle}"):
        import_file(catalogue, "events", path)
    result = import_file(catalogue, "events", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (1, [2])
    assert catalogue.execute("select count(*) as n from events").fetchone()["n"] == 1


def test_a_repeated_consent_key_is_refused_not_last_wins(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text('{"id": "u7", "consent": {"email": false, "email": true}}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"users\.jsonl:1: consent\.email: is given more than once"):
        import_file(catalogue, "users", path)
    assert catalogue.execute("select count(*) as n from users where id = 'u7'").fetchone()["n"] == 0


def test_integers_past_64_bits_are_kept_exact_as_in_csv_and_http(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """orjson reads an integer past 2^64 as a float: 123456789012345678901234567890 became
    123456789012345680000000000000 in a JSON Lines import (CSV cells and HTTP bodies kept it)."""
    big = 123456789012345678901234567890
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps({"id": "big1", "timezone": "UTC", "attributes": {"account": big}}) + "\n")
    import_file(catalogue, "users", path)
    row = catalogue.execute("select attributes from users where id = 'big1'").fetchone()
    assert row["attributes"]["account"] == big


def test_key_like_text_inside_strings_is_no_repeated_key(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A string holding `"b":` makes the fast reader look twice; the line is still taken as given."""
    context = {"note": 'a "b": c, "b" : d', "b": 1}
    path = _events(tmp_path, json.dumps({"id": "e2", "user_id": "u1", "type": "play", "context": context}))
    assert import_file(catalogue, "events", path).stored == 2
    row = catalogue.execute("select context from events where id = 'e2'").fetchone()
    assert row["context"] == context


@pytest.mark.parametrize(
    ("header", "cell", "needle"),
    [
        ("context", '"{""n"": ' + HUGE + '}"', "context.n: is an integer of more than 4,300"),
        ("context", '"{""a"": 1, ""a"": 2}"', "context.a: is given more than once"),
        ("value", PAST_DOUBLE, "value: must be a finite number"),
    ],
)
def test_csv_json_cells_are_read_as_strictly(
    catalogue: psycopg.Connection[Any], tmp_path: Path, header: str, cell: str, needle: str
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(f"user_id,type,{header}\nu1,play,{cell}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=f"events.csv:2: {needle}"):
        import_file(catalogue, "events", path)


@pytest.mark.parametrize(
    ("cell", "needle"),
    [
        ('"{""rock"": 1, ""rock"": 0.5}"', "tags.rock: is given more than once"),
        ('"{""rock"": ' + HUGE + '}"', "tags.rock: is an integer of more than 4,300"),
    ],
)
def test_csv_tags_cells_are_read_as_strictly(
    catalogue: psycopg.Connection[Any], tmp_path: Path, cell: str, needle: str
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(f"id,title,tags\ni9,Nine,{cell}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=f"items.csv:2: {needle}"):
        import_file(catalogue, "items", path)


@pytest.mark.parametrize(
    "number",
    [2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(10**19) + 1, 10**19 + 7, -(10**30), 1733558400123456789],
)
def test_the_fast_reader_keeps_integers_at_the_64_bit_edges_exact(number: int) -> None:
    """orjson holds integers from -2^63 to 2^64 - 1; past either end it answers a float. The fast
    reader must notice both ends (-9999999999999999999 has only 19 digits) and give the exact int."""
    text = json.dumps({"id": "u", "attributes": {"account": number, "list": [number]}})
    value = jsontext.loads_fast(text)
    assert value == json.loads(text)
    assert type(value["attributes"]["account"]) is int and type(value["attributes"]["list"][0]) is int
