"""`tagloop patterns co-likes|next|trends|timing` end to end on the test database: the numbers the
tools compute reach the table and the JSON, bad options and empty windows get a clear error, and
the plots are written."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tagloop.agent.cli_patterns import patterns_app
from tagloop.tools.errors import InvalidInput, NotFound
from tests.test_patterns import NOW, store  # NOW: a Monday


def patterns(*args: str) -> Any:
    result = CliRunner().invoke(patterns_app, [*args, "--now", NOW.isoformat(), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def failing(*args: str) -> BaseException:
    result = CliRunner().invoke(patterns_app, list(args))
    assert result.exit_code != 0 and result.exception is not None
    return result.exception


@pytest.fixture
def stream(tagloop_env: Path, db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Fans of x who also like niche; a→b→c sessions; a shoegaze spike in the last days; jazz on
    weekends."""
    fans, others = [f"f{n}" for n in range(10)], [f"o{n}" for n in range(30)]
    items = {"x": ["rock"], "pop": ["rock"], "niche": ["rock"], "a": ["folk"], "b": ["folk"], "c": ["folk"]}
    items |= {f"s{n}": ["shoegaze"] for n in range(4)} | {f"j{n}": ["jazz"] for n in range(3)}
    events: list[tuple[str, str, datetime]] = []
    t = NOW - timedelta(days=3)
    events += [(u, "x", t) for u in fans] + [(u, "pop", t) for u in fans + others]
    events += [(u, "niche", t) for u in fans[:6]]
    for n in range(5):
        start = NOW - timedelta(days=n + 1, hours=1)
        events += [(f"o{n}", i, start + timedelta(minutes=5 * j)) for j, i in enumerate("abc")]
    for day in range(28):  # shoegaze: one play a day for three weeks, then a spike
        plays = 1 if day < 25 else 12
        events += [
            (others[(day + k) % 30], f"s{k % 4}", NOW - timedelta(days=27 - day, hours=2))
            for k in range(plays)
        ]
    saturday = NOW - timedelta(days=2, hours=-8)  # Saturday 20:00 UTC
    events += [(others[k], f"j{k % 3}", saturday - timedelta(weeks=w)) for k in range(10) for w in range(3)]
    store(db, fans + others, items, events)
    return db


def test_co_likes_and_next_report_support_lift_and_titles(stream: psycopg.Connection[Any]) -> None:
    found = patterns("co-likes", "x")["co_likes"]
    assert [c["key"] for c in found] == ["niche", "pop"]
    assert (found[0]["support"], found[0]["confidence"], found[0]["title"]) == (6, 0.6, "Title niche")
    assert found[0]["lift"] == pytest.approx(4.0)
    nxt = patterns("next", "a", "b")["next"]
    assert nxt[0]["key"] == "c" and nxt[0]["support"] == 5 and nxt[0]["score"] == pytest.approx(1.0)


def test_trends_find_the_spike_and_draw_it(stream: psycopg.Connection[Any], tmp_path: Path) -> None:
    data = patterns("trends", "--min-events", "5", "--plot", str(tmp_path / "trends.png"))
    top = data["trends"][0]
    assert top["key"] == "shoegaze" and top["phase"] in ("rising", "peaking")
    assert top["daily"][-1] == 12 and sum(top["daily"]) == 25 + 3 * 12
    assert Path(data["plot"]).stat().st_size > 5_000


def test_timing_sees_weekend_jazz(stream: psycopg.Connection[Any], tmp_path: Path) -> None:
    data = patterns("timing", "--tag", "jazz", "--min-events", "5", "--plot", str(tmp_path / "t.png"))
    (jazz,) = data["tags"]
    assert jazz["tag"] == "jazz" and jazz["events"] == 30 and jazz["weekend_share"] == 1.0
    assert jazz["peak_hours"][0] == "Sat 20:00" and jazz["weekend_lift"] > 1.5
    assert Path(data["plot"]).stat().st_size > 5_000


def test_bad_options_and_empty_windows_say_what_to_do(stream: psycopg.Connection[Any]) -> None:
    assert "--level must be item or tag" in str(failing("co-likes", "x", "--level", "artist"))
    assert "expected an RFC 3339 time" in str(failing("trends", "--now", "yesterday"))
    empty = failing("co-likes", "x", "--now", "2020-01-01T00:00:00Z")
    assert isinstance(empty, NotFound) and "the latest event is at 2026-03-02" in str(empty)
    unknown = failing("co-likes", "nobody-likes-this", "--now", NOW.isoformat())
    assert isinstance(unknown, NotFound) and "no co-likes of 'nobody-likes-this'" in str(unknown)
    missing = failing("timing", "--tag", "polka", "--now", NOW.isoformat())
    assert isinstance(missing, NotFound) and "'polka'" in str(missing)
    assert isinstance(failing("trends", "--days", "3", "--now", NOW.isoformat()), InvalidInput)
