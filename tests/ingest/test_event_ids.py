"""Derived event ids (an event without `id`): identical lines WITH `ts` are one event (a resent
line is a duplicate), but identical lines without `ts` are distinct plays — their ts is the
import time, the same for every line, so the derived id also takes the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tagloop.tools.ingest.loader import import_file


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_identical_events_without_ts_are_each_stored(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    play = {"user_id": "u1", "type": "play", "item_id": "i1"}
    result = import_file(catalogue, "events", _write(tmp_path / "plays.jsonl", [play, play, play]))
    assert (result.stored, result.duplicates) == (3, 0)
    csv = tmp_path / "plays.csv"
    csv.write_text("user_id,type,item_id\nu1,play,i1\nu1,play,i1\n", encoding="utf-8")
    result = import_file(catalogue, "events", csv)
    assert (result.stored, result.duplicates) == (2, 0)
    assert catalogue.execute("select count(*) as n from events").fetchone()["n"] == 5


def test_identical_events_with_ts_are_one(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    play = {"user_id": "u1", "type": "play", "item_id": "i1", "ts": "2024-05-01T12:00:00Z"}
    path = _write(tmp_path / "plays.jsonl", [play, play, {**play, "value": 0.5}])
    result = import_file(catalogue, "events", path)
    assert (result.stored, result.duplicates) == (2, 1)
    again = import_file(
        catalogue, "events", _write(tmp_path / "again.jsonl", [{"x": 1}, play]), skip_bad=True
    )
    assert (again.stored, again.duplicates) == (0, 1)  # another line number: still the same event
