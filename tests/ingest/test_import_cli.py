"""`tagloop import` on the command line: with --skip-bad the total of skipped lines is printed even
when only the first 20 are listed, and warnings are listed the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

TAGLOOP = Path(sys.executable).with_name("tagloop")


def _tagloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TAGLOOP), *args], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )


def test_skip_bad_counts_every_skipped_line(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    users, events = tmp_path / "users.jsonl", tmp_path / "events.jsonl"
    users.write_text('{"id": "a"}\n', encoding="utf-8")
    assert _tagloop("import", "users", str(users)).returncode == 0
    rows = [
        {"id": f"e{n}", "user_id": "a" if n % 4 else "ghost", "type": "open", "ts": "2026-01-01T00:00:00Z"}
        for n in range(100)
    ]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    done = _tagloop("import", "events", str(events), "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "events: 75 stored from 100 line(s), 0 duplicate(s) skipped, 25 bad line(s) skipped"
    )
    listed = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
    assert len(listed) == 21 and listed[-1] == "skipped … and 5 more"
    assert listed[0] == f"skipped {events}:1: user_id: unknown user 'ghost' (import users first)"


def test_item_warnings_are_listed_and_counted(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    items = tmp_path / "items.csv"
    items.write_text("id,titel,provider\nx1,One,p\nx2,Two,p\n", encoding="utf-8")
    done = _tagloop("import", "items", str(items))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "items: 2 stored from 2 line(s), 5 warning(s)"  # kind: once
    assert (
        f"warning: {items}:2: titel: unknown field, kept in attributes; did you mean 'title'?" in done.stderr
    )
    assert f"warning: {items}:3: title: missing: the new item is stored without a title" in done.stderr
    as_json = json.loads(_tagloop("import", "items", str(items), "--json").stdout)
    assert as_json["warned"] == 2 and len(as_json["warnings"]) == 2  # stored now: only the misspelling


def test_starting_the_embedded_server_says_so_on_stderr_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TAGLOOP_HOME", str(home))
    for name in ("TAGLOOP_DATABASE_URL", "DATABASE_URL", "TAGLOOP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    try:
        first = _tagloop("db", "url")
        assert first.returncode == 0, first.stderr
        assert first.stderr.startswith(f"starting the embedded PostgreSQL in {home / 'pgdata'}")
        assert first.stdout.startswith("postgresql://")
        again = _tagloop("db", "url")
        assert again.stderr == "" and again.stdout == first.stdout  # already running: not a word
    finally:
        _tagloop("db", "stop")


def test_item_and_user_imports_show_progress_on_stderr(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    for kind, row in (("users", {"timezone": "UTC"}), ("items", {"title": "T", "provider": "p"})):
        path = tmp_path / f"{kind}.jsonl"
        path.write_text(
            "".join(json.dumps({"id": f"x{n}", **row}) + "\n" for n in range(30)), encoding="utf-8"
        )
        done = _tagloop("import", kind, str(path))
        assert done.returncode == 0, done.stderr
        assert f"{kind}: 100% of 0.0 MB read (30 lines)" in done.stderr
        assert f"{kind}: 30 line(s) read; storing" in done.stderr
        quiet = _tagloop("import", kind, str(path), "--json")
        assert quiet.stderr == "" and json.loads(quiet.stdout)["stored"] == 30
