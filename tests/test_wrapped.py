"""`tagloop report user ID`: a Wrapped-style page from the store — taste that moved from jazz to
techno shows in the top tags now vs 30 days ago, the new techno artists are discoveries, the
listening clock is in the user's own zone, and an unknown user is a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tagloop.agent.cli_report import report_app
from tagloop.evals.wrapped import build_wrapped, write_wrapped
from tagloop.tools.errors import InvalidInput, NotFound
from tagloop.tools.ingest.loader import import_file

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def listener(db: psycopg.Connection[Any], tmp_path: Path) -> str:
    """User 'ann' (Tokyo) played jazz two months ago and techno (new artists) in the last two weeks."""
    items = [
        {
            "id": f"jazz{i}",
            "title": f"Jazz {i}",
            "kind": "track",
            "provider": f"jazzman{i % 2}",
            "tags": {"jazz": 1.0, "bebop": 0.5},
        }
        for i in range(4)
    ]
    items += [
        {
            "id": f"techno{i}",
            "title": f"Techno {i}",
            "kind": "track",
            "provider": f"raver{i}",
            "tags": {"techno": 1.0, "minimal": 0.6},
        }
        for i in range(3)
    ]
    users = [{"id": "ann", "timezone": "Asia/Tokyo", "channels": {}, "consent": {}}]
    events = [
        {
            "id": f"j{i}",
            "user_id": "ann",
            "type": "play",
            "item_id": f"jazz{i % 4}",
            "value": 3,
            "ts": (AT - timedelta(days=60 - i)).replace(hour=12).isoformat(),
        }
        for i in range(8)
    ]
    events += [
        {
            "id": f"t{i}",
            "user_id": "ann",
            "type": "like" if i % 3 == 0 else "play",
            "item_id": f"techno{i % 3}",
            "value": 2,
            "ts": (AT - timedelta(days=14 - i)).replace(hour=13).isoformat(),
        }
        for i in range(9)
    ]
    for kind, rows in (("items", items), ("users", users), ("events", events)):
        import_file(db, kind, _jsonl(tmp_path / f"{kind}.jsonl", rows), now=AT)
    db.commit()
    return "ann"


def test_wrapped_shows_the_move_from_jazz_to_techno(db: psycopg.Connection[Any], listener: str) -> None:
    w = build_wrapped(db, listener, at=AT, half_life_days=30)
    assert w.tags_now[0][0] == "techno"
    assert w.tags_before[0][0] == "jazz" and "techno" not in dict(w.tags_before)
    assert w.similarity is not None and w.similarity < 0.5
    assert [t for t, _ in w.rising][:2] == ["techno", "minimal"]
    assert "jazz" in dict(w.falling) and set(w.new_tags) == {"techno", "minimal"}
    assert sorted(d["provider"] for d in w.discoveries) == ["raver0", "raver1", "raver2"]
    assert w.clock[22] == 9 and sum(w.clock) == 9  # 13:00 UTC is 22:00 in Tokyo; jazz is outside the window


def test_report_user_writes_markdown_and_the_clock_png(
    tagloop_env: Path, listener: str, tmp_path: Path
) -> None:
    out = tmp_path / "page"
    result = CliRunner().invoke(
        report_app, ["user", listener, "--out", str(out), "--at", AT.isoformat(), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["user_id"] == "ann" and summary["tags_now"][0][0] == "techno"
    page = (out / "index.md").read_text(encoding="utf-8")
    assert "Top tags" in page and "Discoveries" in page and "clock.png" in page
    assert (out / "clock.png").stat().st_size > 1000 and (out / "index.html").exists()


def test_unknown_user_is_not_found(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(NotFound, match="unknown user 'ghost'"):
        build_wrapped(db, "ghost", at=AT, half_life_days=30)


def test_report_user_unknown_prints_an_error_without_traceback(tagloop_env: Path, tmp_path: Path) -> None:
    tagloop = Path(sys.executable).parent / "tagloop"
    done = subprocess.run(
        [str(tagloop), "report", "user", "ghost", "--out", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown user 'ghost'" in done.stderr and "Traceback" not in done.stderr


def test_a_far_away_at_does_not_underflow(db: psycopg.Connection[Any], listener: str) -> None:
    w = build_wrapped(db, listener, at=datetime(2999, 1, 1, tzinfo=UTC), half_life_days=30)
    assert {t for t, _ in w.tags_now} == {"techno", "minimal", "jazz", "bebop"}
    assert w.similarity == 1.0  # every event is centuries old at both instants: nothing moved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "/proc/nope"], "--out /proc/nope: cannot write there"),
        (["--out", "{tmp}/afile"], "exists and is not a directory"),
        (["--days", "99999999999"], "--days must be between 1 and 36,500"),
        (["--days", "1000000"], "--days must be between 1 and 36,500"),
        (["--days", "0"], "--days must be between 1 and 36,500"),
        (["--at", "0001-01-05T00:00:00Z"], "reaches before year 1"),
    ],
)
def test_bad_options_fail_before_the_work(
    tagloop_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(report_app, ["user", "ghost", *(a.format(tmp=tmp_path) for a in args)])
    assert isinstance(result.exception, InvalidInput) and message in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no wrapped-ghost/ left behind


def test_an_unknown_user_leaves_no_folder_behind(
    tagloop_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(report_app, ["user", "ghost", "--out", "a/b"])
    assert isinstance(result.exception, NotFound) and list(tmp_path.iterdir()) == []


def test_a_user_without_events_and_the_json_page_path(
    tagloop_env: Path, db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [{"id": "newu1", "timezone": "UTC", "channels": {}, "consent": {}}]
    import_file(db, "users", _jsonl(tmp_path / "users.jsonl", users), now=AT)
    db.commit()
    monkeypatch.chdir(tmp_path)
    text = CliRunner().invoke(report_app, ["user", "newu1", "--at", AT.isoformat()])
    assert text.exit_code == 0, text.output
    assert "None" not in text.stdout and "top tags: \n" not in text.stdout
    assert "no tagged listening up to 2026-03-01" in text.stdout
    assert "no profile yet to compare with 30 days ago" in text.stdout
    result = CliRunner().invoke(report_app, ["user", "newu1", "--at", AT.isoformat(), "--json"])
    page = Path(json.loads(result.stdout)["page"])
    assert page.is_absolute() and page == tmp_path / "wrapped-newu1" / "index.md" and page.exists()


def test_skips_are_neither_discoveries_nor_listening(
    db: psycopg.Connection[Any], listener: str, tmp_path: Path
) -> None:
    """A provider the user only skipped was listed as a discovery, and skips filled the listening
    clock; both now come from positive events only."""
    items = [{"id": "noise0", "title": "Noise 0", "provider": "skipped-artist", "tags": {"noise": 1.0}}]
    skip = {"id": "s0", "user_id": "ann", "type": "skip", "item_id": "noise0"}
    skip["ts"] = (AT - timedelta(days=3)).replace(hour=2).isoformat()  # 11:00 in Tokyo
    import_file(db, "items", _jsonl(tmp_path / "more-items.jsonl", items), now=AT)
    import_file(db, "events", _jsonl(tmp_path / "skip.jsonl", [skip]), now=AT)
    db.commit()
    w = build_wrapped(db, listener, at=AT, half_life_days=30)
    assert "skipped-artist" not in {d["provider"] for d in w.discoveries}
    assert w.clock[11] == 0 and sum(w.clock) == 9


def test_the_earlier_weight_of_every_current_top_tag_is_shown(
    db: psycopg.Connection[Any], listener: str, tmp_path: Path
) -> None:
    """Only the earlier top 10 was looked up, so a tag just outside it showed a blank weight,
    which reads as new; every current top tag now has its earlier weight (0.0 when it had none)."""
    w = build_wrapped(db, listener, at=AT, half_life_days=30)
    assert set(w.before_of_now) == {t for t, _ in w.tags_now}
    assert w.before_of_now["techno"] == 0.0 and w.before_of_now["jazz"] == dict(w.tags_before)["jazz"]
    text = write_wrapped(w, tmp_path / "page").read_text()
    techno_row = next(line for line in text.splitlines() if "| techno" in line)
    assert techno_row.rstrip(" |").split("|")[-1].strip() in ("0", "0.0"), techno_row  # not blank
