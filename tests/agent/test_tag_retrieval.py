"""The tags source for a user with a narrow taste: the HNSW search over sparse tag vectors can stop
on the plateau of items sharing no tag with the profile and miss the few that do. Those users get
the matches from an exact search, and no item without a shared tag is offered as a tag match."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tagloop.tools.ingest import demo
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.retrieval import load_history, tag_candidates
from tagloop.tools.store.catalogue import refresh_item_vectors

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_user_with_one_niche_tag_gets_the_items_carrying_it(  # a tag the demo data lacks
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    paths = demo.generate(
        tmp_path / "demo", seed=3, sizes=demo.DemoSizes(users=40, providers=300, items=6000, days=10), now=NOW
    )
    for kind in ("users", "items", "events"):
        import_file(db, kind, paths[kind])
    users = [r["id"] for r in db.execute("select id from users order by id")]
    niche = [
        {"id": f"orbit-{i}", "title": f"Orbit {i}", "provider": f"orbit-p{i}", "tags": ["orbitcore"]}
        for i in range(6)
    ]
    import_file(db, "items", _jsonl(tmp_path / "items.jsonl", niche))
    import_file(db, "users", _jsonl(tmp_path / "users.jsonl", [{"id": "narrow", "timezone": "UTC"}]))
    like = {
        "id": "n-like",
        "user_id": "narrow",
        "type": "like",
        "item_id": "orbit-0",
        "ts": (NOW - timedelta(hours=2)).isoformat(),
    }
    import_file(db, "events", _jsonl(tmp_path / "events.jsonl", [like]))
    refresh_item_vectors(db)
    rebuild_profiles(db, now=NOW, half_life_days=30)
    n_items = db.execute("select count(*) as n from items where tag_vec is not null").fetchone()["n"]
    assert n_items > 3000  # enough for the graph search to miss a cluster of six

    history = load_history(db, ["narrow", *users[:5]], NOW)
    for found in (tag_candidates(db, ["narrow"], 20, history.seen), tag_candidates(db, ["narrow"], 20)):
        ids = [c.item_id for c in found["narrow"]]
        assert ids == ["orbit-1", "orbit-2", "orbit-3", "orbit-4", "orbit-5"]
        assert all(c.score > 0 for c in found["narrow"])
    broad = tag_candidates(db, users[:5], 20, history.seen)
    for u in users[:5]:  # broad profiles keep their full top k, every one a tag match
        assert len(broad[u]) == 20 and all(c.score > 0 for c in broad[u])
