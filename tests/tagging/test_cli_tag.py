"""`tagloop tag vocab|items|confirm|embed|related|trends` end to end on the test database, with a
local fake OpenAI-compatible server for the LLM cases (slow, invalid JSON, invented tags)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tagloop.agent.cli_tag import tag_app
from tagloop.tools.errors import InvalidInput, NotFound
from tagloop.tools.ingest.loader import import_file
from tests.fake_openai import fake_openai

NOW = datetime(2025, 6, 1, tzinfo=UTC)
TAGLOOP = Path(sys.executable).with_name("tagloop")


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tag(*args: str) -> Any:
    result = CliRunner().invoke(tag_app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture
def catalogue(tagloop_env: Path, db: psycopg.Connection[Any], tmp_path: Path) -> psycopg.Connection[Any]:
    """Two styles of tagged tracks, untagged tracks, listening sessions and new playlists."""
    items: list[dict[str, Any]] = [
        {"id": f"h{i}", "title": f"Beat {i}", "provider": "crew", "tags": ["Hip Hop", "boom bap", "90s"]}
        for i in range(6)
    ]
    items += [
        {"id": f"s{i}", "title": f"Neon {i}", "provider": "retro", "tags": ["synthwave", "Synth Wave", "80s"]}
        for i in range(6)
    ]
    items += [
        {"id": "new-a", "title": "Hyperpop anthem", "tags": ["hyperpop"]},
        {"id": "new-b", "title": "Glitch", "tags": ["glitchcore"]},
        {"id": "u-syn", "title": "A synthwave night drive"},
        {"id": "u-empty", "title": ""},
    ]
    import_file(db, "items", jsonl(tmp_path / "items.jsonl", items))
    import_file(db, "users", jsonl(tmp_path / "users.jsonl", [{"id": f"u{u}"} for u in range(6)]))
    events: list[dict[str, Any]] = []
    for u in range(6):
        style = "h" if u < 3 else "s"
        for i in range(6):
            ts = NOW - timedelta(days=20, minutes=5 * i)
            events.append(
                {"user_id": f"u{u}", "type": "play", "item_id": f"{style}{i}", "ts": ts.isoformat()}
            )
        for item in ("new-a", "new-b"):  # everyone builds a new playlist pairing the two new styles
            ts = NOW - timedelta(days=1, hours=u)
            events.append(
                {
                    "user_id": f"u{u}",
                    "type": "add_to_playlist",
                    "item_id": item,
                    "ts": ts.isoformat(),
                    "context": {"playlist_id": f"pl-{u}"},
                }
            )
    import_file(db, "events", jsonl(tmp_path / "events.jsonl", events), now=NOW)
    return db


def test_vocab_merges_variants_and_speaks_at_every_level(catalogue: psycopg.Connection[Any]) -> None:
    data = tag("vocab")
    names = {t["name"]: t for t in data["tags"]}
    assert {"hip-hop", "synthwave", "80s", "90s", "boom-bap"} <= set(names)
    assert data["problems"] == [] and data["vocabulary"] == len(names) == 7
    assert names["hip-hop"]["item_count"] == 6 and names["hip-hop"]["family"] == "hip-hop"
    broad = {t["name"]: t for t in tag("vocab", "--level", "broad")["tags"]}
    assert broad["era"]["item_count"] == 12 and broad["era"]["tags"] == 2


def test_items_proposes_stores_and_reports(catalogue: psycopg.Connection[Any]) -> None:
    first = tag("items", "--no-llm")
    assert first["items"] == 16 and first["stored"] == first["proposals"] > 0 and first["llm"] is False
    assert first["without_text"] == 1 and first["by_source"]["keyword"] >= 1
    row = catalogue.execute(
        """select it.source, it.confidence from item_tags it join tags t on t.id = it.tag_id
           where it.item_id = 'u-syn' and t.name = 'synthwave'"""
    ).fetchone()
    assert row is not None and row["source"] == "keyword" and row["confidence"] == pytest.approx(0.44)
    again = tag("items", "--only-untagged", "--no-llm")
    assert again["skipped_already_tagged"] == 14 and again["items"] == 16
    imports = catalogue.execute("select count(*) as n from item_tags where source = 'import'").fetchone()
    assert imports is not None and imports["n"] == 6 * 3 + 6 * 2 + 2


def test_empty_store_is_reported_by_every_command(tagloop_env: Path) -> None:
    assert tag("vocab")["problems"] == ["the tag vocabulary is empty: import items with tags first"]
    assert tag("items")["problems"][0].startswith("empty vocabulary")
    assert tag("embed")["embedded"] == 0
    assert tag("trends")["trends"] == []


def test_embed_then_related_answers_from_pgvector(catalogue: psycopg.Connection[Any]) -> None:
    report = tag("embed")
    assert report["tags"] == 7 and report["embedded"] >= 4 and report["dim"] == 64
    related = tag("related", "Hip Hop")
    assert related["tag"] == "hip-hop"
    assert {r["tag"] for r in related["related"][:2]} == {"90s", "boom-bap"}


def test_trends_lists_the_new_playlist_pair(catalogue: psycopg.Connection[Any]) -> None:
    data = tag("trends", "--now", "2025-06-01T00:00:00")
    assert data["collections"] == "playlist+session"
    assert [(t["name"], t["size"], t["growth"]) for t in data["trends"]] == [
        ("glitchcore + hyperpop", 6, 7.0)
    ]
    assert data["trends"][0]["first_seen"].startswith("2025-05-30T19:00")
    sessions = tag("trends", "--now", "2025-06-01T00:00:00", "--by", "session", "--window-days", "30")
    assert sessions["collections"] == "session" and sessions["events"] == 48


def _llm_reply(mode: str, body: dict[str, Any]) -> str:
    """/slow sleeps past the timeout, /badjson answers text that is not JSON, /invent answers one
    vocabulary tag and one invented tag per item."""
    if mode == "badjson":
        return "{items: [oops"
    items = json.loads(body["messages"][1]["content"])["items"]
    tags = [{"tag": "Boom Bap", "confidence": 0.7}, {"tag": "made-up-core", "confidence": 0.9}]
    return json.dumps({"items": [{"item_id": it["item_id"], "tags": tags} for it in items]})


@pytest.fixture
def llm_url() -> Iterator[str]:
    with fake_openai(_llm_reply, slow_seconds=2.5) as server:
        yield server.url


@pytest.mark.parametrize(
    ("mode", "failed", "invented"), [("slow", 1, 0), ("badjson", 1, 0), ("invent", 0, 15)]
)
def test_llm_failures_are_reported_and_the_batch_goes_on(
    catalogue: psycopg.Connection[Any], llm_url: str, monkeypatch: pytest.MonkeyPatch,
    mode: str, failed: int, invented: int,
) -> None:  # fmt: skip
    monkeypatch.setenv("TAGLOOP_LLM_BASE_URL", f"{llm_url}/{mode}/v1")
    monkeypatch.setenv("TAGLOOP_LLM_MODEL", "fake")
    monkeypatch.setenv("TAGLOOP_LLM_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("TAGLOOP_LLM_MAX_RETRIES", "0")
    data = tag("items")
    assert data["llm"] is True and data["llm_batches"] == 1
    assert data["llm_failed_batches"] == failed and data["llm_out_of_vocabulary"] == invented
    assert data["stored"] > 0
    names = {r["name"] for r in catalogue.execute("select name from tags")}
    assert "made-up-core" not in names
    if failed:
        assert any(p.startswith("LLM batch failed") for p in data["problems"])
        assert "llm" not in data["by_source"]
    else:
        assert data["by_source"]["llm"] > 0


def test_the_tagloop_entrypoint_mounts_tag_and_names_unknown_tags(catalogue: psycopg.Connection[Any]) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    bad = subprocess.run(
        [str(TAGLOOP), "tag", "related", "no such tag"], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode == 2 and "unknown tag 'no such tag'" in bad.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["items", "--k", "-1"], "--k must be at least 1"),
        (["items", "--k", "0"], "--k must be at least 1"),
        (["items", "--k", "100000"], "--k must be at most 1,000"),
        (["related", "hip-hop", "--k", "-3"], "--k must be at least 1"),
        (["related", "hip-hop", "--k", "0"], "--k must be at least 1"),
        (["vocab", "--limit", "-1"], "--limit must be at least 1"),
        (["vocab", "--limit", "0"], "--limit must be at least 1"),
        (["trends", "--limit", "-1"], "--limit must be at least 1"),
        (["trends", "--min-size", "0"], "--min-size must be at least 1"),
        (["trends", "--min-growth", "nan"], "--min-growth must be a number in (0, 1e+09], got nan"),
        (["trends", "--history-days", "1e308"], "--history-days must be a number in (0, 36500], got 1e+308"),
        (["trends", "--history-days", "-5"], "--history-days must be a number in (0, 36500], got -5"),
        (["trends", "--window-days", "0"], "--window-days must be a number in (0, 182.5]"),
        (["trends", "--window-days", "inf"], "--window-days must be a number in (0, 182.5]"),
        (["confirm", "--min-share", "5"], "--min-share must be a number in (0, 1], got 5"),
        (["confirm", "--min-share", "0"], "--min-share must be a number in (0, 1], got 0"),
        (["confirm", "--min-users", "0"], "--min-users must be at least 1"),
        (["embed", "--user-weight", "-1"], "--user-weight must be a number in [0, 100], got -1"),
    ],
)
def test_out_of_range_options_are_clear_errors(
    catalogue: psycopg.Connection[Any], args: list[str], message: str
) -> None:
    """`--k -1` wrote 61,556 proposals (Python's [:-1]), `related --k -3` was a psycopg traceback,
    `--limit -1` showed all rows but one, `--history-days 1e308` an OverflowError."""
    before = catalogue.execute("select count(*) as n from item_tags").fetchone()
    result = CliRunner().invoke(tag_app, [*args, "--json"])
    assert isinstance(result.exception, InvalidInput), (result.output, result.exception)
    assert str(result.exception).startswith(message)
    assert catalogue.execute("select count(*) as n from item_tags").fetchone() == before


def test_an_out_of_range_option_is_one_error_line_and_exit_2(tagloop_env: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(TAGLOOP), "tag", "items", "--k", "-1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert (run.returncode, run.stdout, run.stderr) == (2, "", "error: --k must be at least 1, got -1\n")


def test_items_and_trends_report_progress_on_stderr_and_keep_json_on_stdout(
    catalogue: psycopg.Connection[Any],
) -> None:
    for args, first, last in [
        (["items", "--no-llm"], "tag items: syncing", "tag items: confirming provisional tags"),
        (
            ["trends", "--by", "session", "--now", "2025-06-01"],
            "trends: reading sessions",
            "trends: tag pairs",
        ),
    ]:
        result = CliRunner().invoke(tag_app, [*args, "--json"])
        assert result.exit_code == 0, (result.output, result.exception)
        assert isinstance(json.loads(result.stdout), dict)  # stdout is the one JSON object
        lines = result.stderr.splitlines()
        assert lines[0].startswith(first) and any(line.startswith(last) for line in lines), lines
    untagged = CliRunner().invoke(tag_app, ["items", "--no-llm", "--only-untagged"]).stderr
    assert "tag items: proposing tags for 2 of 16 item(s)" in untagged
    assert "tag items: 2 of 2 item(s) done" in untagged


def _head(src: Path, dst: Path, keep: Any) -> Path:
    with src.open(encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        fout.writelines(line for line in fin if keep(json.loads(line)))
    return dst


@pytest.mark.realdata
def test_lastfm_variants_merge_untagged_artists_get_tags_and_rap_is_near_hip_hop(
    lastfm_dir: Path, tagloop_env: Path, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The first 1,500 Last.fm artists and the events of users 2–499 with them (kept quick)."""
    from tagloop.tools.ingest import lastfm
    from tagloop.tools.tagging.vocabulary import tag_key

    paths = lastfm.convert(lastfm_dir, tmp_path / "lastfm", until=NOW)
    artists = {json.loads(line)["id"] for line in paths["items"].open(encoding="utf-8").readlines()[:1500]}
    import_file(db, "items", _head(paths["items"], tmp_path / "items.jsonl", lambda r: r["id"] in artists))
    import_file(db, "users", paths["users"])
    subset = _head(
        paths["events"],
        tmp_path / "events.jsonl",
        lambda r: r.get("item_id") in artists and int(r["user_id"]) < 500,
    )
    import_file(db, "events", subset, now=NOW)
    vocab = tag("vocab", "--limit", "100")
    assert vocab["vocabulary"] > 1000 and vocab["merged"]
    assert all(tag_key(a) == tag_key(c) for c, aliases in vocab["merged"].items() for a in aliases)
    families = {t["name"]: t["family"] for t in vocab["tags"]}
    assert families["hip-hop"] == "hip-hop" and families["indie-rock"] == "rock"
    items = tag("items", "--only-untagged", "--no-llm")
    assert items["items"] == 1500 and items["tagged"] > 0.8 * (1500 - items["skipped_already_tagged"])
    assert items["stored"] > 0 and items["by_source"].get("colisten", 0) > 0
    keyword = {
        r["name"]: r["n"]
        for r in db.execute(
            """select t.name, count(*) as n from item_tags it join tags t on t.id = it.tag_id
               where it.source = 'keyword' group by t.name"""
        )
    }  # the URL attribute made every untagged artist "lastfm" and "music"; titles "the", "david", …
    assert not {"lastfm", "music", "the", "and", "david", "peter", "michael", "john"} & set(keyword)
    assert keyword and items["by_source"]["keyword"] < items["items"] - items["skipped_already_tagged"]
    top = [t["name"] for t in tag("vocab", "--limit", "5")["tags"]]
    assert "lastfm" not in top and "music" not in top and "rock" in top
    assert tag("embed")["embedded"] > 200
    assert "rap" in [r["tag"] for r in tag("related", "Hip Hop", "--k", "5")["related"]]


def _tags_of(db: psycopg.Connection[Any], item: str, min_confidence: float = 0.5) -> dict[str, str]:
    rows = db.execute(
        """select t.name, it.source from item_tags it join tags t on t.id = it.tag_id
           where it.item_id = %(i)s and it.confidence >= %(c)s""",
        {"i": item, "c": min_confidence},
    ).fetchall()
    db.commit()
    return {r["name"]: r["source"] for r in rows}


def test_remove_takes_a_wrong_auto_tag_off_an_item_for_good(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """An import's `tags` replace the catalogue's own tags, not the ones tagloop proposed or
    confirmed (a nightly catalogue export would wipe them); there was no way to take those off."""
    tag("items", "--no-llm")  # named in its title: a keyword tag (provisional: no evidence yet)
    assert _tags_of(catalogue, "u-syn", 0.0)["synthwave"] == "keyword"
    retag = tmp_path / "retag.csv"
    retag.write_text("id,tags\nu-syn,jazz\n", encoding="utf-8")
    import_file(catalogue, "items", retag)
    retagged = _tags_of(catalogue, "u-syn", 0.0)  # the import's tags replaced none of tagloop's
    assert retagged["jazz"] == "import" and retagged["synthwave"] == "keyword"
    assert tag("remove", "u-syn", "Synth Wave") == {
        "item": "u-syn",
        "tag": "synthwave",
        "removed": "keyword",
        "rejected": True,
    }
    assert "synthwave" not in _tags_of(catalogue, "u-syn", 0.0)
    vec = catalogue.execute("select tag_vec from items where id = 'u-syn'").fetchone()
    jazz = catalogue.execute("select id from tags where name = 'jazz'").fetchone()
    assert vec is not None and jazz is not None and set(vec["tag_vec"].indices()) == {jazz["id"]}
    tag("items", "--no-llm")  # proposed again by its title, but the owner took it off: not stored
    assert "synthwave" not in _tags_of(catalogue, "u-syn", 0.0)
    count = "select item_count from tags where name = 'jazz'"
    before = catalogue.execute(count).fetchone()
    removed_import = tag("remove", "u-syn", "jazz")
    assert removed_import["removed"] == "import" and "jazz" not in _tags_of(catalogue, "u-syn", 0.0)
    after = catalogue.execute(count).fetchone()
    assert before is not None and after == {"item_count": before["item_count"] - 1}


def test_a_removed_tag_stays_off_when_an_import_gives_it_again_until_restored(
    catalogue: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """ "For good" holds against the catalogue's own imports too: a nightly export that still carries a
    wrong tag would otherwise undo the owner's fix; `tag restore` lets the next import give it."""
    retag = tmp_path / "retag.csv"
    retag.write_text("id,tags\nh0,Hip Hop|boom bap|jazz\n", encoding="utf-8")
    import_file(catalogue, "items", retag)
    assert _tags_of(catalogue, "h0", 0.0)["jazz"] == "import"
    assert tag("remove", "h0", "Jazz")["removed"] == "import"
    import_file(catalogue, "items", retag)  # the export still gives it
    assert "jazz" not in _tags_of(catalogue, "h0", 0.0) and "boom-bap" in _tags_of(catalogue, "h0", 0.0)
    vec = catalogue.execute("select tag_vec from items where id = 'h0'").fetchone()
    jazz = catalogue.execute("select id from tags where name = 'jazz'").fetchone()
    assert vec is not None and jazz is not None and jazz["id"] not in set(vec["tag_vec"].indices())

    assert tag("restore", "h0", "jazz") == {"item": "h0", "tag": "jazz", "restored": True}
    assert "jazz" not in _tags_of(catalogue, "h0", 0.0)  # restoring writes nothing by itself
    import_file(catalogue, "items", retag)
    assert _tags_of(catalogue, "h0", 0.0)["jazz"] == "import"
    assert tag("restore", "h0", "jazz")["restored"] is False  # nothing left to lift
    missing = CliRunner().invoke(tag_app, ["restore", "nobody", "jazz"])
    assert isinstance(missing.exception, NotFound) and "unknown item 'nobody'" in str(missing.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["u-syn", "no such tag"], "unknown tag 'no such tag'"), (["nobody", "jazz"], "unknown item 'nobody'")],
)
def test_remove_names_an_unknown_item_or_tag(
    catalogue: psycopg.Connection[Any], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(tag_app, ["remove", *args])
    assert isinstance(result.exception, NotFound) and message in str(result.exception)
