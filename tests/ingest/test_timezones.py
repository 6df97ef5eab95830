"""Zone names PostgreSQL reads otherwise than Python: CET, EET, MET and WET are fixed abbreviations
in `at time zone` (CET +01:00 all year) but zones with summer time in zoneinfo, so SQL-built
hour-of-week histograms put summer activity an hour early. They are stored as their IANA zones, at
ingest and, for users stored before, by a migration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.records import parse_user
from tagloop.tools.store import migrate

LEGACY = {"CET": "Europe/Brussels", "EET": "Europe/Athens", "MET": "Europe/Brussels", "WET": "Europe/Lisbon"}
INSTANTS = [datetime(y, m, 15, 12, tzinfo=UTC) for y in (2000, 2026, 2035) for m in (1, 7)]


@pytest.mark.parametrize(("given", "stored"), sorted(LEGACY.items()))
def test_an_abbreviation_zone_is_stored_as_its_iana_zone(given: str, stored: str) -> None:
    assert parse_user({"id": "u", "timezone": given}).timezone == stored
    for t in INSTANTS:
        assert t.astimezone(ZoneInfo(stored)).utcoffset() == t.astimezone(ZoneInfo(given)).utcoffset(), t
    assert parse_user({"id": "u", "timezone": "Europe/Berlin"}).timezone == "Europe/Berlin"


def _local_times(conn: psycopg.Connection[Any], t: datetime) -> dict[str, datetime]:
    rows = conn.execute("select id, %(t)s::timestamptz at time zone timezone as local from users", {"t": t})
    return {r["id"]: r["local"] for r in rows}


def test_postgresql_reads_the_stored_zones_as_python_reads_the_given_ones(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        "".join(f'{{"id": "{name}", "timezone": "{name}"}}\n' for name in LEGACY), encoding="utf-8"
    )
    assert import_file(db, "users", path).stored == 4
    for t in INSTANTS:
        local = _local_times(db, t)
        assert local == {name: t.astimezone(ZoneInfo(name)).replace(tzinfo=None) for name in LEGACY}, t


def test_the_migration_rewrites_stored_users_and_is_idempotent(db: psycopg.Connection[Any]) -> None:
    (step,) = [m for m in migrate.available() if m.name == "users_timezone_not_abbreviations"]
    zones = [*LEGACY, "Europe/Berlin", "UTC"]
    for name in zones:
        db.execute("insert into users (id, timezone) values (%(id)s, %(id)s)", {"id": name})
    before = db.execute("select id, updated_at from users order by id").fetchall()
    for _ in range(2):
        db.execute(step.sql)
    stored = {r["id"]: r["timezone"] for r in db.execute("select id, timezone from users")}
    assert stored == LEGACY | {"Europe/Berlin": "Europe/Berlin", "UTC": "UTC"}
    assert db.execute("select id, updated_at from users order by id").fetchall() == before  # consent's mark
    t = datetime(2026, 7, 15, 12, tzinfo=UTC)
    assert _local_times(db, t)["CET"] == datetime(2026, 7, 15, 14)
