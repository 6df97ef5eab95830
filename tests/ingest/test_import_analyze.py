"""A bulk import leaves the planner statistics of the tables it wrote: the next command (often
`tagloop train`) would otherwise be planned from the table as it was before the load, or without
statistics (tests/recommender/test_plans_without_stats.py shows what that cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.ingest import loader


def _stats(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute("select count(*) as n from pg_stats where tablename = %(t)s", {"t": table}).fetchone()
    return int(row["n"]) if row else 0


@pytest.mark.parametrize(
    ("kind", "table", "line"),
    [
        (
            "events",
            "events",
            '{{"id": "e{n}", "user_id": "u1", "type": "play", "item_id": "i1",'
            ' "ts": "2026-05-01T10:00:00Z"}}',
        ),
        ("users", "users", '{{"id": "v{n}", "timezone": "UTC"}}'),
        ("items", "items", '{{"id": "j{n}", "title": "J", "provider": "p", "tags": ["jazz"]}}'),
    ],
)
def test_a_large_import_analyzes_what_it_wrote(
    catalogue: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    table: str,
    line: str,
) -> None:
    db = catalogue
    su = db.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if not (su and su["rolsuper"]):
        pytest.skip("removing statistics needs a superuser (the embedded server's role is one)")
    db.execute("delete from pg_statistic where starelid = %(t)s::regclass", {"t": table})
    assert _stats(db, table) == 0
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("".join(line.format(n=n) + "\n" for n in range(30)), encoding="utf-8")
    monkeypatch.setattr(loader, "ANALYZE_AFTER", 31)
    loader.import_file(db, kind, path)
    assert _stats(db, table) == 0  # 30 rows: below the threshold, left to autovacuum
    db.commit()  # as the CLI does after each file (the staging tables go with the transaction)
    path.write_text("".join(line.format(n=n) + "\n" for n in range(30, 61)), encoding="utf-8")
    loader.import_file(db, kind, path)
    assert _stats(db, table) > 0
    db.commit()
