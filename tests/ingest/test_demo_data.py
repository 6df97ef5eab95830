"""The seeded demo data set: reproducible, and nothing in it happens after `now`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tagloop.tools.ingest import demo

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


def test_demo_events_are_seeded_and_never_in_the_future(tmp_path: Path) -> None:
    sizes = demo.DemoSizes(users=60, providers=20, items=200, days=3)
    paths = demo.generate(tmp_path / "a", seed=3, sizes=sizes, now=NOW)
    again = demo.generate(tmp_path / "b", seed=3, sizes=sizes, now=NOW)
    assert paths["events"].read_bytes() == again["events"].read_bytes()
    stamps = [datetime.fromisoformat(json.loads(line)["ts"]) for line in paths["events"].open()]
    assert len(stamps) > 500 and max(stamps) <= NOW
    assert max(stamps) > NOW.replace(hour=0)  # today's sessions are kept, just not after now
