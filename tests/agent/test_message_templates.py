"""Message templates (items of kind `message`) are tagged like content but are copy: no candidate
source may propose them, with either tag search, and recommendations leave them out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from agent_support import load_demo

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.tools import tag_exact
from tagloop.tools.candidates import TagSource
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.retrieval import load_history
from tagloop.tools.store.catalogue import refresh_item_vectors

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


@pytest.mark.parametrize("search", ["hnsw", "exact"])
def test_a_template_matching_everyones_taste_is_never_a_candidate(
    db: psycopg.Connection[Any], tmp_path: Path, search: str
) -> None:
    tag_exact._SHARED.clear()
    users = load_demo(db, tmp_path / "demo", NOW, users=12)
    # the template carries every tag of the catalogue: it is the best tag match of every user
    tags = [
        r["name"]
        for r in db.execute("select distinct t.name from item_tags it join tags t on t.id = it.tag_id")
    ]
    template = {"id": "tpl-weekly", "title": "Template: your weekly mix", "kind": "message", "tags": tags}
    path = tmp_path / "tpl.jsonl"
    path.write_text(json.dumps(template) + "\n", encoding="utf-8")
    import_file(db, "items", path)
    refresh_item_vectors(db)
    db.commit()
    history = load_history(db, users, NOW)
    raw = TagSource().fetch_for(db, history, 50, NOW)
    assert all(cs for cs in raw.values())  # the source itself leaves it out (it proposed it to
    assert not any("tpl-weekly" in {c.item_id for c in cs} for cs in raw.values())  # most users)

    settings = Settings(home=tmp_path / "home", tag_search=search)
    outcomes = run_users(db, settings, users, now=NOW, channels={"file": FileChannel(tmp_path / "o")})
    assert any(o.outcome == "message" for o in outcomes)
    for o in outcomes:
        assert "tpl-weekly" not in {c["item_id"] for c in o.chosen}
    logged = db.execute(
        "select count(*) as n from decisions where 'tpl-weekly' = any(candidate_ids)"
    ).fetchone()
    assert logged["n"] == 0  # not even among the logged candidates
