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
    # a history repeating an entry counts its transitions once (A A A gave three times the support)
    assert patterns("next", "b", "b", "b")["next"] == patterns("next", "b")["next"]


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
    missing = failing("timing", "--tag", "polka", "--now", NOW.isoformat())  # no such tag: said so
    assert isinstance(missing, NotFound) and str(missing) == "unknown tag 'polka': see `tagloop tag vocab`"
    few = failing("timing", "--tag", "jazz", "--min-events", "500", "--now", NOW.isoformat())
    assert isinstance(few, NotFound) and "no timing for 'jazz': fewer than 500 events" in str(few)
    assert isinstance(failing("trends", "--days", "3", "--now", NOW.isoformat()), InvalidInput)


def run(*args: str) -> Any:
    return CliRunner().invoke(patterns_app, [*args, "--now", NOW.isoformat()])


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("/proc/x.png", "cannot write there"),
        ("{tmp}/no-such-folder/x.png", "does not exist"),
        ("{tmp}/out.txt", "cannot draw .txt files; use one of .png"),
        ("{tmp}", "is a directory"),
        ("", "is a directory or empty"),
    ],
)
@pytest.mark.parametrize("command", ["trends", "timing"])
def test_a_bad_plot_path_fails_before_the_work(
    stream: psycopg.Connection[Any], tmp_path: Path, command: str, plot: str, message: str
) -> None:
    result = run(command, "--min-events", "5", "--plot", plot.format(tmp=tmp_path))
    assert isinstance(result.exception, InvalidInput) and message in str(result.exception)
    assert result.stdout == ""  # no table printed before the error
    assert list(tmp_path.iterdir()) == []


def test_a_plot_name_without_extension_reports_the_file_written(
    stream: psycopg.Connection[Any], tmp_path: Path
) -> None:
    data = patterns("trends", "--min-events", "5", "--plot", str(tmp_path / "trends"))
    assert data["plot"] == str(tmp_path / "trends.png") and Path(data["plot"]).stat().st_size > 5_000
    result = run("timing", "--min-events", "5", "--plot", str(tmp_path / "t.svg"))
    assert result.exit_code == 0 and f"plot: {tmp_path / 't.svg'}" in result.stdout
    assert (tmp_path / "t.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["co-likes", "x", "--window-days", "99999999999"], "--window-days must be at most 36,500"),
        (["co-likes", "x", "--window-days", "1000000"], "--window-days must be at most 36,500"),
        (["next", "a", "--window-days", "1000000"], "--window-days must be at most 36,500"),
        (["next", "a", "--session-minutes", "99999999999"], "--session-minutes must be at most"),
        (["timing", "--window-days", "99999999999"], "--window-days must be at most 36,500"),
        (["trends", "--days", "99999999999"], "--days must be at most 730"),
        (["trends", "--min-events", "-1"], "--min-events must be at least 1, got -1"),
        (["timing", "--min-events", "-5"], "--min-events must be at least 1, got -5"),
    ],
)
def test_numbers_out_of_bounds_are_clear_errors(
    stream: psycopg.Connection[Any], args: list[str], message: str
) -> None:
    result = run(*args)
    assert isinstance(result.exception, InvalidInput) and message in str(result.exception)


def test_a_window_before_year_one_is_a_clear_error(stream: psycopg.Connection[Any]) -> None:
    early = failing("co-likes", "x", "--now", "0001-01-02T00:00:00Z")
    assert isinstance(early, InvalidInput) and "before year 1" in str(early)


def test_a_known_key_with_nothing_to_show_is_an_empty_result_not_an_error(
    stream: psycopg.Connection[Any],
) -> None:
    lonely = patterns("co-likes", "x", "--min-support", "11")  # x has 10 fans
    assert lonely == {"seed": "x", "level": "item", "now": NOW.isoformat(), "co_likes": []}
    assert patterns("next", "a", "b", "c")["next"] == []  # sessions end at c
    for args, note in [
        (["co-likes", "x", "--min-support", "11"], "no co-likes of 'x': no item is liked by 11 or more"),
        (["next", "a", "b", "c"], "nothing follows a → b → c: no item outside the history comes next"),
    ]:
        table = run(*args)
        assert table.exit_code == 0 and table.stdout == ""
        assert note in table.stderr and len(table.stderr.strip().splitlines()) == 1
        as_json = run(*args, "--json")
        assert as_json.exit_code == 0 and note in as_json.stderr
    # an id the store does not hold is still an error
    assert isinstance(failing("next", "a", "zz", "--now", NOW.isoformat()), NotFound)


def test_unknown_seeds_and_history_are_named(stream: psycopg.Connection[Any]) -> None:
    unknown = failing("co-likes", "nosuchitem", "--now", NOW.isoformat())
    assert isinstance(unknown, NotFound) and str(unknown) == "unknown item 'nosuchitem'"
    tag = failing("co-likes", "jazz", "--now", NOW.isoformat())
    assert isinstance(tag, NotFound) and "it is a tag: pass --level tag" in str(tag)
    history = failing("next", "jazz", "polka", "--level", "tag", "--now", NOW.isoformat())
    assert isinstance(history, NotFound) and "unknown tag 'polka'" in str(history)


def test_tags_resolve_by_spelling_and_alias_as_the_tag_commands_do(stream: psycopg.Connection[Any]) -> None:
    # a stored alias (a merge keeps the names of the variants it folds into a tag there)
    stream.execute("update tags set aliases = '{shoegazing}' where name = 'shoegaze'")
    stream.commit()
    for seed in ("Shoegaze", "Shoe Gaze", "shoegazing"):  # o0-o4 play both shoegaze and folk
        data = patterns("co-likes", seed, "--level", "tag")
        assert data["seed"] == "shoegaze" and [c["key"] for c in data["co_likes"]] == ["folk"]
    assert patterns("next", "FOLK", "Shoe Gaze", "--level", "tag")["history"] == ["folk", "shoegaze"]
    (jazz,) = patterns("timing", "--tag", "Jazz", "--tag", "jazz", "--min-events", "5")["tags"]
    assert jazz["tag"] == "jazz" and jazz["events"] == 30
    unknown = failing("next", "Folk", "polka", "--level", "tag", "--now", NOW.isoformat())
    assert isinstance(unknown, NotFound) and str(unknown) == "unknown tag 'polka': see `tagloop tag vocab`"
    spelled = failing("co-likes", "Jazz", "--now", NOW.isoformat())  # a tag at item level: said so
    assert isinstance(spelled, NotFound) and "it is a tag: pass --level tag" in str(spelled)


def test_trends_print_unknown_lifetimes_as_null(stream: psycopg.Connection[Any]) -> None:
    rows = patterns("trends", "--min-events", "5", "--include-over")["trends"]
    flat = [r for r in rows if r["phase"] in ("steady", "over") and r["decay_per_day"] is None]
    assert flat and all(r["days_left"] in (None, 0.0) and r["lifetime_days"] is None for r in flat)
    result = run("trends", "--min-events", "5", "--include-over")
    assert result.exit_code == 0
    flat_lines = [line for line in result.stdout.splitlines() if any(f" {r['key']} " in line for r in flat)]
    assert flat_lines and all("unknown" in line and "(assumed)" not in line for line in flat_lines)


def test_timing_reports_progress_on_stderr_only(stream: psycopg.Connection[Any]) -> None:
    result = run("timing", "--min-events", "5", "--json")
    assert result.exit_code == 0 and "timing: " in result.stderr
    assert "timing:" not in result.stdout and json.loads(result.stdout)["tags"]


def test_item_trends_show_the_id_a_follow_up_needs_beside_the_title(stream: psycopg.Connection[Any]) -> None:
    result = run("trends", "--level", "item", "--min-events", "5")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if " key " in line)
    assert [c.strip() for c in header.split("┃")[1:3]] == ["key", "title"]
    rows = [line.split("│") for line in result.stdout.splitlines() if "Title s" in line]
    cells = sorted((row[1].strip(), row[2].strip()) for row in rows)
    assert cells and all(title == f"Title {key}" for key, title in cells)  # the id, then its title
    tags = run("trends", "--min-events", "5").stdout.splitlines()  # a tag is its own name: no title
    assert not any(" title " in line for line in tags) and any("│ shoegaze " in line for line in tags)
