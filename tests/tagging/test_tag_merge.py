"""Merging a stored spelling variant into its canonical tag moves everything keyed by the variant's
id (item rows and vectors, users' profile vectors and per-tag stats, the tag embedding) and counts
again; later writes of the variant's spelling reach the canonical tag through its aliases."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgvector import Vector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tagloop.tools.ingest.loader import import_file
from tagloop.tools.profile_folder import FOLD_LOCK, FoldOptions, fold_pending
from tagloop.tools.profiles import load_profiles
from tagloop.tools.store.catalogue import ensure_tags, replace_item_tags
from tagloop.tools.tagging.store import sync_vocabulary
from tagloop.tools.tagging.store_merge import SAVE_PROFILE
from tagloop.tools.tagging.store_rejections import remove_item_tag

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tag_id(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("select id from tags where name = %(n)s", {"n": name}).fetchone()
    return None if row is None else int(row["id"])


def vector_ids(conn: psycopg.Connection[Any]) -> dict[str, set[int]]:
    rows = conn.execute("select id, tag_vec from items where tag_vec is not null").fetchall()
    return {r["id"]: set(r["tag_vec"].indices()) for r in rows}


@pytest.fixture
def lofi(db: psycopg.Connection[Any], tmp_path: Path) -> tuple[psycopg.Connection[Any], int]:
    """Two `lo-fi` items with listeners (folded online, with a context source), then three items
    tagged `lofi` imported: `lofi` is now the most used spelling of the key. Returns the store and
    the id `lo-fi` had."""
    old = [{"id": f"o{i}", "title": f"Old {i}", "tags": ["lo-fi", "chill"]} for i in range(2)]
    import_file(db, "items", jsonl(tmp_path / "old.jsonl", old))
    users = [{"id": f"u{i}", "timezone": "UTC"} for i in range(2)]
    import_file(db, "users", jsonl(tmp_path / "users.jsonl", users))
    events = [
        {"user_id": "u0", "type": "play", "item_id": "o0", "context": {"source": "radio"}},
        {"user_id": "u0", "type": "like", "item_id": "o1", "context": {"source": "radio"}},
        {"user_id": "u1", "type": "save", "item_id": "o1"},
    ]
    for n, e in enumerate(events):
        e["ts"] = (NOW - timedelta(minutes=10 - n)).isoformat()
    import_file(db, "events", jsonl(tmp_path / "events.jsonl", events), now=NOW)
    fold_pending(db, FoldOptions(), now=NOW)
    variant = tag_id(db, "lo-fi")
    assert variant is not None
    db.execute(  # a learned embedding for the variant only (`tagloop tag embed`)
        "insert into tag_embeddings (tag_id, embedding) values (%(t)s, %(e)s)",
        {"t": variant, "e": Vector([1.0] + [0.0] * 63)},
    )
    profile = load_profiles(db, ["u0"])["u0"]
    assert variant in profile.tags and str(variant) in profile.stats["source_tags"]["radio"]
    new = [{"id": f"n{i}", "title": f"New {i}", "tags": ["lofi"]} for i in range(3)]
    import_file(db, "items", jsonl(tmp_path / "new.jsonl", new))
    return db, variant


def test_a_merge_moves_vectors_profiles_stats_and_counts_to_the_canonical_tag(
    lofi: tuple[psycopg.Connection[Any], int],
) -> None:
    db, variant = lofi
    sync = sync_vocabulary(db)
    assert sync.merged == {"lofi": ["lo-fi"]}
    canonical = tag_id(db, "lofi")
    assert canonical is not None and tag_id(db, "lo-fi") is None
    row = db.execute("select aliases, item_count from tags where id = %(t)s", {"t": canonical}).fetchone()
    assert row == {"aliases": ["lo-fi"], "item_count": 5}
    # every item's vector is over its confident tags, by the ids the tags have now
    confident: dict[str, set[int]] = {}
    for r in db.execute("select item_id, tag_id from item_tags where confidence >= 0.5"):
        confident.setdefault(r["item_id"], set()).add(int(r["tag_id"]))
    assert vector_ids(db) == confident
    assert canonical in confident["o0"] and canonical in confident["n0"]
    # profiles: the weight on the variant is the canonical tag's now, and shows in the top tags
    known = {int(r["id"]) for r in db.execute("select id from tags")}
    profiles = load_profiles(db, ["u0", "u1"])
    for p in profiles.values():
        assert set(p.tags) <= known and variant not in p.tags
        assert canonical in p.tags and p.tags[canonical] > 0
        assert "lofi" in [name for name, _ in p.top_tags]
    radio = profiles["u0"].stats["source_tags"]["radio"]
    assert str(canonical) in radio and str(variant) not in radio
    assert {int(k) for k in radio} <= known
    # the variant's learned embedding is the canonical tag's (it had none)
    emb = db.execute("select tag_id from tag_embeddings").fetchall()
    assert emb == [{"tag_id": canonical}]


def test_a_merged_spelling_written_again_is_the_canonical_tag(
    lofi: tuple[psycopg.Connection[Any], int],
) -> None:
    db = lofi[0]
    sync_vocabulary(db)
    canonical = tag_id(db, "lofi")
    assert ensure_tags(db, ["lo-fi", "chill"])["lo-fi"] == canonical
    replace_item_tags(db, {"n0": {"lo-fi": 1.0}}, source="import")  # what PUT /v1/items does
    assert tag_id(db, "lo-fi") is None
    names = [
        r["name"]
        for r in db.execute(
            "select t.name from item_tags it join tags t on t.id = it.tag_id where it.item_id = 'n0'"
        )
    ]
    assert names == ["lofi"]
    assert sync_vocabulary(db).merged == {}


def test_a_spelling_and_its_merged_alias_on_one_item_are_one_row(
    lofi: tuple[psycopg.Connection[Any], int],
) -> None:
    db = lofi[0]
    sync_vocabulary(db)
    replace_item_tags(db, {"n1": {"lofi": 0.5, "lo-fi": 0.8}}, source="import")
    rows = db.execute(
        "select t.name, it.weight from item_tags it join tags t on t.id = it.tag_id where it.item_id = 'n1'"
    ).fetchall()
    assert [(r["name"], round(r["weight"], 3)) for r in rows] == [("lofi", 0.8)]


def test_tags_in_other_scripts_stay_specific_on_import(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """ "日本 rock" was stored as the seed tag rock, "русский рок 80s" as 80s, "Straße" keyed "strae"."""
    line = {
        "id": "u-1",
        "title": "Script One",
        "tags": ["日本 rock", "한국 hip hop", "ελληνικό rock", "русский рок 80s", "Straße", "rock"],
    }
    import_file(db, "items", jsonl(tmp_path / "script.jsonl", [line]))
    sync_vocabulary(db)
    names = {
        r["name"]
        for r in db.execute(
            "select t.name from item_tags it join tags t on t.id = it.tag_id where it.item_id = 'u-1'"
        )
    }
    assert names == {"日本-rock", "한국-hip-hop", "ελληνικό-rock", "русский-рок-80s", "straße", "rock"}


def test_stored_tags_are_rekeyed_by_the_next_sync(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """A store written under the old keys: "straße" and "strasse" were two tags ("strae" and
    "strasse"), and "日本-zeuhl" was merged into "zeuhl" as an alias (both keyed "zeuhl")."""
    db.execute("insert into items (id) values ('a'), ('b'), ('c')")
    replace_item_tags(db, {"a": {"straße": 1.0, "zeuhl": 1.0}, "b": {"strasse": 1.0}}, source="import")
    replace_item_tags(db, {"c": {"strasse": 1.0}}, source="import")
    db.execute("update tags set aliases = '{日本-zeuhl}' where name = 'zeuhl'")
    sync = sync_vocabulary(db)
    assert sync.merged == {"strasse": ["straße"]}
    assert db.execute("select aliases from tags where name = 'zeuhl'").fetchone() == {"aliases": []}
    replace_item_tags(db, {"b": {"日本-zeuhl": 1.0}}, source="import")
    assert tag_id(db, "日本-zeuhl") is not None  # its own tag, no longer zeuhl through the old alias


def test_a_tag_taken_off_an_item_stays_off_under_the_canonical_tag(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    old = [{"id": f"o{i}", "title": f"Old {i}", "tags": ["lo-fi"]} for i in range(2)]
    import_file(db, "items", jsonl(tmp_path / "old.jsonl", old))
    assert remove_item_tag(db, "o1", "Lo Fi").removed == "import"
    new = [{"id": f"n{i}", "title": f"New {i}", "tags": ["lofi"]} for i in range(3)]
    import_file(db, "items", jsonl(tmp_path / "new.jsonl", new))
    sync_vocabulary(db)
    rejected = db.execute("select item_id, tag_id from item_tag_rejections").fetchall()
    assert rejected == [{"item_id": "o1", "tag_id": tag_id(db, "lofi")}]


def test_a_removed_tag_given_again_in_another_spelling_stays_off_after_the_merge(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The import filter blocks the removed (item, tag) pair, but a spelling never stored before is a
    new tag id: its row was written, and the merge then moved it onto the removed tag."""
    old = [{"id": f"o{i}", "title": f"Old {i}", "tags": ["lo-fi", "chill"]} for i in range(2)]
    import_file(db, "items", jsonl(tmp_path / "old.jsonl", old))
    assert remove_item_tag(db, "o1", "lo-fi").removed == "import"
    again = [{"id": "o1", "tags": ["lofi", "chill"]}]  # the export, in a new spelling
    again += [{"id": f"n{i}", "title": f"New {i}", "tags": ["lofi"]} for i in range(3)]
    import_file(db, "items", jsonl(tmp_path / "again.jsonl", again))
    sync_vocabulary(db)  # lofi is now the most used spelling: the canonical tag
    lofi, chill = tag_id(db, "lofi"), tag_id(db, "chill")
    assert lofi is not None and chill is not None and tag_id(db, "lo-fi") is None
    carried = db.execute("select tag_id from item_tags where item_id = 'o1'").fetchall()
    assert [r["tag_id"] for r in carried] == [chill]
    assert vector_ids(db)["o1"] == {chill} and lofi in vector_ids(db)["o0"]


def test_a_merge_waits_for_a_fold_in_flight_so_the_fold_cannot_write_the_variant_back(
    lofi: tuple[psycopg.Connection[Any], int], db_url: str
) -> None:
    """A fold read u0's profile (with the variant's id) and is about to write it back when a merge
    starts: the merge waits for the fold (the folder's lock) and then moves the id it wrote."""
    db, variant = lofi
    db.commit()
    fold = psycopg.connect(db_url, row_factory=dict_row)
    try:
        fold.execute("select pg_advisory_xact_lock(%(ns)s, %(key)s)", FOLD_LOCK)
        read = "select tags::text as tags, stats from user_profiles where user_id = 'u0'"
        row = fold.execute(read).fetchone()
        assert row is not None and f"{variant + 1}:" in row["tags"]

        def merge() -> None:
            sync_vocabulary(db)
            db.commit()

        merging = threading.Thread(target=merge)
        merging.start()
        merging.join(timeout=1.0)  # without the wait the merge is done long before this
        fold.execute(SAVE_PROFILE, {"tags": row["tags"], "stats": Jsonb(row["stats"]), "user_id": "u0"})
        fold.commit()
        merging.join(timeout=30)
        assert not merging.is_alive()
    finally:
        fold.close()
    canonical = tag_id(db, "lofi")
    profile = load_profiles(db, ["u0"])["u0"]
    assert canonical in profile.tags and variant not in profile.tags
