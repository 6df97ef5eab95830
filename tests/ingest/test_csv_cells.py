"""CSV files: cells are trimmed as header names are (` track` was stored as a kind of its own and
` ArtistA` as another provider); a header naming a column twice or not at all is refused like one
missing a required column (with --skip-bad a repeated column dropped the whole file and exited 0);
a record spanning lines is reported at its first line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file


def test_cells_are_trimmed_for_items_users_and_events(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    items = tmp_path / "items.csv"
    items.write_text(
        "id, title, provider, kind, tags\ni20, Twenty, p, track, rock | indie\n", encoding="utf-8"
    )
    import_file(catalogue, "items", items)
    row = catalogue.execute("select title, provider_id, kind from items where id = 'i20'").fetchone()
    assert (row["title"], row["provider_id"], row["kind"]) == ("Twenty", "p", "track")
    assert catalogue.execute("select count(*) as n from providers").fetchone()["n"] == 1
    users = tmp_path / "users.csv"
    users.write_text('id,timezone,consent\n u2 , Europe/Berlin ," {""email"": true} "\n', encoding="utf-8")
    import_file(catalogue, "users", users)
    user = catalogue.execute("select timezone, consent from users where id = 'u2'").fetchone()
    assert (user["timezone"], user["consent"]) == ("Europe/Berlin", {"email": True})
    events = tmp_path / "events.csv"
    events.write_text("id,user_id,type,item_id\ne1, u1 , play , i20\n", encoding="utf-8")
    import_file(catalogue, "events", events)
    event = catalogue.execute("select user_id, type, item_id from events where id = 'e1'").fetchone()
    assert (event["user_id"], event["type"], event["item_id"]) == ("u1", "play", "i20")


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("user_id,type,item_id,type", "names type more than once"),
        ("user_id,type,,item_id", "has no name for column 3"),
        ("user_id,type,item_id,", "has no name for column 4"),
    ],
)
@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_header_naming_a_column_twice_or_not_at_all_is_refused(
    catalogue: psycopg.Connection[Any], tmp_path: Path, header: str, needle: str, skip_bad: bool
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(f"{header}\nu1,play,i1,x\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=f"events.csv:1: the CSV header {needle}"):
        import_file(catalogue, "events", path, skip_bad=skip_bad)


def test_a_multi_line_record_is_reported_at_its_first_line(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text('user_id,type,context\nu1,play,"{\n""x"": NaN\n}"\nu1,skip,\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"events.csv:2: context.x: must be a finite number"):
        import_file(catalogue, "events", path)
