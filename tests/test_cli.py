"""End to end through the `tagloop` entry point: database commands, imports with errors, the
Last.fm converter on a slice of the real data, and the demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.http.api_support import afternoon_zone

TAGLOOP = Path(sys.executable).with_name("tagloop")


def tagloop(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(TAGLOOP), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tagloop {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def test_db_commands_report_the_database_in_use(tagloop_env: Path, db_url: str) -> None:
    assert tagloop("db", "url").stdout.strip() == db_url
    migrate = json.loads(tagloop("db", "migrate", "--json").stdout)
    assert migrate == {"applied": []}  # the test database is already migrated: a second run is a no-op
    status = json.loads(tagloop("db", "status", "--json").stdout)
    assert status["database"] == "external" and status["pending"] == [] and status["pgvector"]
    assert "0001_extensions" in status["applied"] and status["rows"]["events"] == 0
    assert status["size_bytes"] > 1_000_000  # an empty migrated database still holds its catalogue
    assert re.search(r"size\s+│?\s*[\d.,]+ MiB", tagloop("db", "status").stdout)


def test_db_status_on_a_database_not_yet_migrated(
    tagloop_env: Path, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagloop.tools.store import db as store_db

    name = f"tagloop_empty_{os.getpid()}"
    store_db.ensure_database(pg_admin_url, name)
    try:
        monkeypatch.setenv("TAGLOOP_DATABASE_URL", store_db.with_dbname(pg_admin_url, name))
        status = json.loads(tagloop("db", "status", "--json").stdout)
        assert status["applied"] == [] and status["pgvector"] is None and status["rows"] == {}
        assert "0001_extensions" in status["pending"]
        table = tagloop("db", "status").stdout
        assert "tagloop db migrate" in table
        assert "not installed yet" in table and "None" not in table
        applied = json.loads(tagloop("db", "migrate", "--json").stdout)["applied"]  # creates pgvector
        assert applied[0] == "0001_extensions" and applied == status["pending"]
        assert json.loads(tagloop("db", "migrate", "--json").stdout) == {"applied": []}
        assert json.loads(tagloop("db", "status", "--json").stdout)["pgvector"]
    finally:
        store_db.drop_database(pg_admin_url, name)


def test_import_reports_bad_lines_without_a_traceback(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    users = tmp_path / "users.jsonl"
    users.write_text('{"id": "a", "timezone": "Europe/Paris"}\n{"id": "b", "timezone": "Nowhere/City"}\n')
    failed = tagloop("import", "users", str(users), check=False)
    assert failed.returncode == 2
    assert f"{users}:2: timezone: 'Nowhere/City' is not an IANA time zone" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert db.execute("select count(*) as n from users").fetchone()["n"] == 0
    skipped = json.loads(tagloop("import", "users", str(users), "--skip-bad", "--json").stdout)
    assert skipped["stored"] == 1 and skipped["skipped"] == 1


def test_a_database_refusing_the_command_is_one_line_not_a_traceback(
    tagloop_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. DATABASE_URL pointed at a read-only replica (here: every transaction read-only)."""
    users = tmp_path / "users.jsonl"
    users.write_text('{"id": "a", "timezone": "Europe/Paris"}\n')
    monkeypatch.setenv("PGOPTIONS", "-c default_transaction_read_only=on")
    failed = tagloop("import", "users", str(users), check=False)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    line = failed.stderr.strip().splitlines()[-1]  # after the import's progress lines
    assert line.startswith("error: the database refused") and "read-only transaction" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_a_full_disk_is_one_line_not_a_traceback(tagloop_env: Path) -> None:
    demo = tagloop_env / "demo"
    demo.mkdir(parents=True)
    (demo / "items.jsonl").symlink_to("/dev/full")  # where `tagloop demo` writes its catalogue
    failed = tagloop("demo", "--users", "20", check=False)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("error: No space left on device")


def test_run_says_when_a_message_was_not_delivered(
    tagloop_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook URL on this host is refused by the SSRF guard: the message is dead at once, and
    the run must say so rather than count '1 message' as if it went out."""
    user = {
        "id": "w1",
        "timezone": afternoon_zone(),
        "channels": {"webhook": "hooks"},
        "consent": {"webhook": True},
    }
    files = {
        "users": [user],
        "items": [{"id": f"i{n}", "title": f"Song {n}", "provider": "p", "tags": ["jazz"]} for n in range(4)],
        "events": [{"user_id": "w1", "type": "like", "item_id": "i0"}],
    }
    for kind, rows in files.items():
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tagloop("import", kind, str(path))
    monkeypatch.setenv("TAGLOOP_OUTBOUND_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("TAGLOOP_OUTBOUND_WEBHOOK_SECRET", "whsec_" + "QUJD" * 8)
    text = " ".join(tagloop("run", "--user", "w1").stdout.split())
    assert "[undelivered: " in text and "private or loopback" in text
    assert "1 decision(s): 1 message (1 undelivered)" in text
    (decision,) = json.loads(tagloop("run", "--user", "w1", "--json").stdout)["decisions"]
    assert decision["delivery"] == "dead" and "private or loopback" in decision["delivery_error"]
    # two runs in one minute share a decision; across a minute boundary they make two
    letters = json.loads(tagloop("decisions", "dead-letters", "--json").stdout)["dead_letters"]
    assert 1 <= len(letters) <= 2
    (dead,) = [letter for letter in letters if letter["id"] == decision["message_id"]]
    assert datetime.fromisoformat(dead["dead_at"]).tzinfo is not None and "T" in dead["dead_at"]


def test_run_all_shows_progress_on_stderr(tagloop_env: Path, tmp_path: Path) -> None:
    """A run over many users takes minutes: each tenth of the users decided is a line on stderr."""
    files = {
        "users": [{"id": f"p{n:03d}", "timezone": "UTC"} for n in range(450)],
        "items": [
            {"id": f"i{n}", "title": f"Song {n}", "provider": f"a{n % 3}", "tags": ["jazz"]} for n in range(6)
        ],
        "events": [{"user_id": f"p{n:03d}", "type": "like", "item_id": f"i{n % 6}"} for n in range(450)],
    }
    for kind, rows in files.items():
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tagloop("import", kind, str(path))
    done = tagloop("run", "--all")
    steps = [line for line in done.stderr.splitlines() if line.startswith("decided ")]
    assert [s.split(" user(s)")[0] for s in steps] == ["decided 200 of 450", "decided 400 of 450"]
    assert all(re.search(r"\(\d[\d,]*/s\)$", s) for s in steps)
    assert "450 decision(s)" in done.stdout


def test_import_events_streams_with_progress_on_stderr(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    users, events = tmp_path / "users.jsonl", tmp_path / "events.jsonl"
    users.write_text('{"id": "a"}\n{"id": "b"}\n')
    tagloop("import", "users", str(users))
    lines = [
        {"id": f"e{n}", "user_id": "ab"[n % 2], "type": "open", "ts": "2026-01-01T00:00:00Z"}
        for n in range(50)
    ]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines + lines[:5]))
    done = tagloop("import", "events", str(events))
    assert "events: 50 stored from 55 line(s), 5 duplicate(s) skipped" in done.stdout
    assert "events: 100% of" in done.stderr  # progress goes to stderr, never into --json output
    again = tagloop("import", "events", str(events), "--json")
    assert json.loads(again.stdout)["duplicates"] == 55 and "%" not in again.stderr
    assert db.execute("select count(*) as n from events").fetchone()["n"] == 50


def test_run_prints_ids_and_titles_literally_and_refuses_unknown_users(
    tagloop_env: Path, tmp_path: Path
) -> None:
    """Data is never read as rich markup ("[unknown]" is a real Last.fm artist title; "[/x]" crashed)."""
    users, items = tmp_path / "users.jsonl", tmp_path / "items.jsonl"
    users.write_text('{"id": "[/x]", "consent": {"file": true}}\n{"id": "[bold]b"}\n')
    items.write_text('{"id": "i1", "title": "[unknown]", "tags": ["rock"]}\n')
    tagloop("import", "users", str(users))
    tagloop("import", "items", str(items))
    done = tagloop("run", "--user", "[/x]", "--user", "[bold]b")
    assert (
        "[/x]: nothing_to_send: no unseen candidates" in done.stdout
        and "\n[bold]b: nothing_to_send" in done.stdout
    )
    missing = tagloop("run", "--user", "[/x]", "--user", "nobody", check=False)
    assert missing.returncode == 2 and "unknown user(s): 'nobody'" in missing.stderr
    both = tagloop("run", "--user", "[/x]", "--all", check=False)
    assert both.returncode == 2 and "not both" in both.stderr


def test_run_folds_just_imported_events_into_profiles_first(
    tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    users, items, events = tmp_path / "users.jsonl", tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    users.write_text('{"id": "p1"}\n')
    items.write_text('{"id": "s1", "tags": ["shoegaze"]}\n{"id": "s2", "tags": ["shoegaze"]}\n')
    events.write_text('{"id": "x1", "user_id": "p1", "type": "like", "item_id": "s1"}\n')
    for kind, path in (("users", users), ("items", items), ("events", events)):
        tagloop("import", kind, str(path))
    db.rollback()
    assert db.execute("select count(*) as n from user_profiles where user_id = 'p1'").fetchone() == {"n": 0}
    tagloop("run", "--user", "p1", "--json")
    db.rollback()
    row = db.execute("select n_events from user_profiles where user_id = 'p1'").fetchone()
    assert row == {"n_events": 1}


def test_dead_letters_are_listed(tagloop_env: Path, tmp_path: Path, db: psycopg.Connection[Any]) -> None:
    empty = json.loads(tagloop("decisions", "dead-letters", "--json").stdout)
    assert empty == {"dead_letters": [], "total": 0}
    db.execute("insert into users (id) values ('d1')")
    db.execute(
        """insert into decisions (id, user_id, policy_name, policy_version, seed, candidates, chosen,
                                  propensities, outcome)
           values ('00000000-0000-0000-0000-00000000000a', 'd1', 'default', '1', 1, '[]', '[]', '{}',
                   'message')"""
    )
    db.execute(
        """insert into messages (id, decision_id, user_id, channel, title, body, send_at, status, attempts,
                                 last_error, dead_at)
           values ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-00000000000a', 'd1',
                   'webhook', 't', 'b', now(), 'dead', 6, 'HTTP 410 Gone', now())"""
    )
    db.commit()
    listed = json.loads(tagloop("decisions", "dead-letters", "--json").stdout)["dead_letters"]
    assert [(r["id"], r["channel"], r["attempts"], r["last_error"]) for r in listed] == [
        ("00000000-0000-0000-0000-00000000000b", "webhook", 6, "HTTP 410 Gone")
    ]
    assert "HTTP 410 Gone" in tagloop("decisions", "dead-letters").stdout
    assert json.loads(tagloop("decisions", "dead-letters", "--limit", "1", "--json").stdout)["total"] == 1


def _slice_of_lastfm(src: Path, dst: Path, users: int) -> None:
    """The first `users` users of the real data set with their artists and tags (a few seconds to load)."""
    dst.mkdir()
    listens = (src / "user_artists.dat").read_text(encoding="utf-8").splitlines()
    keep_users = sorted({line.split("\t")[0] for line in listens[1:]}, key=int)[:users]
    kept = [listens[0]] + [line for line in listens[1:] if line.split("\t")[0] in keep_users]
    artists = {line.split("\t")[1] for line in kept[1:]}
    (dst / "user_artists.dat").write_text("\n".join(kept) + "\n", encoding="utf-8")
    for name, key in (("artists.dat", 0), ("user_taggedartists.dat", 1)):
        lines = (src / name).read_text(encoding="utf-8").splitlines()
        rows = [lines[0]] + [line for line in lines[1:] if line.split("\t")[key] in artists]
        (dst / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (dst / "tags.dat").write_text((src / "tags.dat").read_text(encoding="utf-8"), encoding="utf-8")


@pytest.mark.realdata
def test_lastfm_import_then_run_decides_from_real_tastes(
    tagloop_env: Path, tmp_path: Path, lastfm_dir: Path, db: psycopg.Connection[Any]
) -> None:
    _slice_of_lastfm(lastfm_dir, tmp_path / "lastfm", users=40)
    summary = json.loads(tagloop("import", "lastfm", str(tmp_path / "lastfm"), "--json").stdout)
    assert summary["users"]["stored"] == 40 and summary["events"]["stored"] > 40 * 5
    assert summary["profiles"] == 40
    assert not (tagloop_env / "lastfm").exists()  # no converted copy kept without --out (erasure)
    latest = db.execute("select max(ts) as t from events").fetchone()["t"]
    assert latest <= datetime.now(UTC)  # no listening in the future
    # a second import stores nothing new: event ids are stable
    again = json.loads(tagloop("import", "lastfm", str(tmp_path / "lastfm"), "--json").stdout)
    assert again["events"]["stored"] == 0 and again["events"]["duplicates"] == summary["events"]["stored"]
    from tagloop.tools.profiles import load_profiles

    top = load_profiles(db, ["2"], top=5)["2"].top_tags
    assert len(top) == 5 and all(weight > 0 for _, weight in top)
    decided = json.loads(tagloop("run", "--user", "2", "--user", "3", "--json").stdout)["decisions"]
    assert {d["user_id"] for d in decided} == {"2", "3"}
    for d in decided:
        played = {
            r["item_id"]
            for r in db.execute("select item_id from events where user_id = %(u)s", {"u": d["user_id"]})
        }
        assert not played & {c["item_id"] for c in d["chosen"]}
    # the patterns the candidate sources use, from the command line on the same real data
    fans = db.execute(
        "select item_id from events where type = 'play' group by 1 order by count(distinct user_id) desc, 1"
    ).fetchone()["item_id"]
    co = json.loads(tagloop("patterns", "co-likes", fans, "--json").stdout)["co_likes"]
    assert co and all(c["support"] >= 2 and c["lift"] > 0 and c["title"] for c in co)


def test_demo_loads_decides_and_is_quick_the_second_time(
    tagloop_env: Path, db: psycopg.Connection[Any]
) -> None:
    first = tagloop("demo", "--users", "60", "--sample", "3", timeout=600)
    assert "tagloop decided for 3 demo users" in first.stdout
    assert db.execute("select count(*) as n from users where id like 'demo-u%%'").fetchone()["n"] == 60
    assert db.execute("select count(*) as n from decisions").fetchone()["n"] >= 3
    second = tagloop("demo", "--users", "60", "--sample", "3", timeout=600)
    assert "demo data already loaded" in second.stderr
    assert "tagloop decided for 3 demo users" in second.stdout
