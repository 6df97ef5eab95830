"""Message templates (items of kind `message`) are copy, not content: no candidate source proposes
one, even when a run's facts (which list the templates, cached for minutes by `serve` and the
worker) were read before the template was stored. A template PUT while `serve` ran was proposed by
the tags and cf sources and queued to a user ("…: Jazz Song 7, Jazz template, …")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tagloop.tools import candidates as sources
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import parse_event, parse_item, parse_user
from tagloop.tools.neighbors import refresh_neighbors
from tagloop.tools.profiles import rebuild_profiles
from tagloop.tools.recommender.model import RecParams
from tagloop.tools.recommender.train import train
from tagloop.tools.retrieval import tag_candidates
from tagloop.tools.store.catalogue import refresh_item_vectors

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _world(db: psycopg.Connection[Any]) -> None:
    """Fans of orbitcore who, in order, liked orbit-0 then the template (as if it had been an item),
    and a template from their artist, tagged as they like, released yesterday."""
    recent = (NOW - timedelta(days=1)).isoformat()
    items = [
        {"id": f"orbit-{i}", "title": f"Orbit {i}", "provider": "orbit-p", "tags": ["orbitcore", "space"]}
        for i in range(6)
    ]
    items += [
        {"id": f"other-{i}", "title": f"Other {i}", "provider": f"p{i}", "tags": ["folk"]} for i in range(6)
    ]
    items.append({"id": "orbit-new", "provider": "orbit-p", "tags": ["orbitcore"], "created_at": recent})
    items += [
        {"id": f"tpl-{i}", "title": f"Template {i}", "kind": "message", "provider": "orbit-p"}
        | {"tags": ["orbitcore", "space"], "created_at": recent}
        for i in range(2)
    ]
    loader.store_items(db, [parse_item(i) for i in items])
    loader.store_users(db, [parse_user({"id": f"u{u}", "timezone": "UTC"}) for u in range(12)])
    events = []
    for u in range(1, 12):
        for n, item in enumerate(("orbit-0", "tpl-0", f"orbit-{1 + u % 5}", f"other-{u % 6}")):
            at = NOW - timedelta(hours=30 - n)
            events.append({"id": f"e{u}-{n}", "user_id": f"u{u}", "type": "like", "item_id": item, "ts": at})
    events.append(
        {"id": "fan", "user_id": "u0", "type": "like", "item_id": "orbit-0", "ts": NOW - timedelta(hours=2)}
    )
    loader.store_events(db, [parse_event({**e, "ts": e["ts"].isoformat()}, now=NOW) for e in events])
    db.commit()
    refresh_item_vectors(db)
    rebuild_profiles(db, now=NOW, half_life_days=30)
    refresh_neighbors(db, NOW)
    train(db, params=RecParams(ease_lambda=5.0, cf_dim=4, tag_dim=2), seed=0)
    db.commit()


def test_no_source_proposes_a_message_template(db: psycopg.Connection[Any]) -> None:
    _world(db)
    made = sources.sources_named(list(sources.SOURCES))
    exact = sources.sources_named(["tags"], tag_search="exact")
    found = sources.gather(db, made, ["u0"], 20, NOW)
    proposed = {name: [c.item_id for c in per_user["u0"]] for name, per_user in found.items()}
    # something from each source (`sequence` proposes what followed orbit-0: the template alone)
    assert not [n for n, v in proposed.items() if not v and n != "sequence"]
    assert not [i for ids in proposed.values() for i in ids if i.startswith("tpl")], proposed
    # the HTTP endpoint's untrained path and the in-process exact tag search too
    assert not [c for c in tag_candidates(db, ["u0"], 20)["u0"] if c.item_id.startswith("tpl")]
    in_process = sources.gather(db, exact, ["u0"], 20, NOW)["tags"]["u0"]
    assert in_process and not [c for c in in_process if c.item_id.startswith("tpl")]
