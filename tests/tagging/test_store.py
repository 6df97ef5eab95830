"""Tags in the store: canonical names on import, variant merging, families, auto-tag storage,
confirmation by behaviour, embeddings with related tags, and emerging clusters from events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pydantic import BaseModel

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.llm import LLMUnavailable
from tagloop.tools.store.catalogue import ensure_tags, replace_item_tags
from tagloop.tools.tagging.embeddings import related_tags, tag_embeddings
from tagloop.tools.tagging.matrices import cooccurrence, item_tag_matrix
from tagloop.tools.tagging.sources import LLMItemTags, LLMTag, LLMTagReply
from tagloop.tools.tagging.store import find_tag, sync_vocabulary, vocabulary_rows
from tagloop.tools.tagging.store_autotag import confirm_by_behaviour
from tagloop.tools.tagging.store_embeddings import related, train_and_store
from tagloop.tools.tagging.store_service import tag_items
from tagloop.tools.tagging.store_trends import find_trends

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tags_of(conn: psycopg.Connection[Any], item: str) -> dict[str, tuple[str, float]]:
    rows = conn.execute(
        """select t.name, it.source, it.confidence from item_tags it join tags t on t.id = it.tag_id
           where it.item_id = %(i)s""",
        {"i": item},
    ).fetchall()
    return {r["name"]: (r["source"], round(float(r["confidence"]), 3)) for r in rows}


@pytest.fixture
def shop(db: psycopg.Connection[Any], tmp_path: Path) -> psycopg.Connection[Any]:
    """A small catalogue: tagged tracks in two styles, untagged ones with telling titles, a message."""
    items: list[dict[str, Any]] = [
        {"id": "a1", "title": "Night Drive", "provider": "p1", "tags": ["Hip Hop", "boom bap"]},
        {"id": "a2", "title": "Corner Store", "provider": "p1", "tags": ["hiphop", "boom bap"]},
        {"id": "a3", "title": "Laser Grid", "provider": "p2", "tags": ["synthwave", "80s"]},
        {"id": "a4", "title": "Neon Coast", "provider": "p2", "tags": ["Synth Wave", "eighties"]},
        {"id": "a5", "title": "Outrun", "provider": "p2", "tags": ["synthwave", "80's"]},
        {"id": "a6", "title": "Block Party", "provider": "p1", "tags": ["hip-hop"]},
        {"id": "n1", "title": "Late night synthwave mix", "provider": "p3"},
        {"id": "n2", "title": "Untitled", "provider": "p1"},
        {"id": "n3", "title": ""},
        {"id": "m1", "title": "Fresh boom bap picks for you", "kind": "message"},
    ]
    import_file(db, "items", jsonl(tmp_path / "items.jsonl", items))
    users = [{"id": f"u{i}", "timezone": "UTC"} for i in range(6)]
    import_file(db, "users", jsonl(tmp_path / "users.jsonl", users))
    events: list[dict[str, Any]] = []
    for u in range(6):  # hip-hop fans play a1, a2, a6 and n2; synthwave fans a3–a5 and n1
        plays = ["a1", "a2", "a6", "n2"] if u < 3 else ["a3", "a4", "a5", "n1"]
        for j, item in enumerate(plays):
            ts = NOW - timedelta(days=3, minutes=j)
            events.append({"user_id": f"u{u}", "type": "play", "item_id": item, "ts": ts.isoformat()})
    import_file(db, "events", jsonl(tmp_path / "events.jsonl", events), now=NOW)
    return db


def test_import_stores_one_tag_for_every_hip_hop_spelling(shop: psycopg.Connection[Any]) -> None:
    names = {r["name"] for r in shop.execute("select name from tags")}
    assert "hip-hop" in names and not {"hip hop", "hiphop", "hip_hop"} & names
    assert "80s" in names and not {"eighties", "80's"} & names
    assert set(tags_of(shop, "a2")) == {"hip-hop", "boom-bap"}


def test_sync_merges_spelling_variants_into_the_most_used_and_keeps_aliases(
    shop: psycopg.Connection[Any],
) -> None:
    sync = sync_vocabulary(shop)
    assert sync.merged == {"synthwave": ["synth-wave"]}
    assert set(tags_of(shop, "a4")) == {"synthwave", "80s"}
    row = shop.execute("select aliases, item_count from tags where name = 'synthwave'").fetchone()
    assert row is not None and row["aliases"] == ["synth-wave"]
    assert shop.execute("select 1 from tags where name = 'synth-wave'").fetchone() is None
    assert find_tag(shop, "Synth Wave") == find_tag(shop, "synthwave") != None  # noqa: E711
    assert sync_vocabulary(shop).merged == {}  # a second run changes nothing


def test_sync_writes_broad_families_and_rolls_counts_up(shop: psycopg.Connection[Any]) -> None:
    sync_vocabulary(shop)
    shop.execute("select 1")
    family = {r["name"]: r["family"] for r in shop.execute("select name, family from tags")}
    assert family["hip-hop"] == "hip-hop" and family["80s"] == "era"
    broad = {r.name: r for r in vocabulary_rows(shop, "broad")}
    assert broad["era"].item_count == 3 and broad["hip-hop"].item_count >= 3
    micro = vocabulary_rows(shop, "microgenre")
    assert micro[0].item_count >= micro[-1].item_count and all(r.tags == 1 for r in micro)


def test_tag_items_stores_proposals_and_never_touches_import_rows(shop: psycopg.Connection[Any]) -> None:
    before = tags_of(shop, "a1")
    report = tag_items(shop, rng=np.random.default_rng(0))
    assert tags_of(shop, "a1").items() >= before.items()
    assert tags_of(shop, "n1")["synthwave"][0] == "keyword"  # named in its title
    assert tags_of(shop, "m1")["boom-bap"] == ("keyword", 0.44)  # message templates are tagged too
    assert "hip-hop" in tags_of(shop, "n2")  # from co-consumed items and the same provider
    assert report.summary.without_text == 1 and report.stored == report.summary.proposals > 0
    assert any("no title, text or attributes" in p for p in report.summary.problems)
    n_rows = shop.execute("select count(*) as n from item_tags").fetchone()
    again = tag_items(shop, rng=np.random.default_rng(0))
    assert shop.execute("select count(*) as n from item_tags").fetchone() == n_rows
    assert again.stored == report.stored and tags_of(shop, "a1").items() >= before.items()


def test_only_untagged_leaves_tagged_items_alone(shop: psycopg.Connection[Any]) -> None:
    report = tag_items(shop, rng=np.random.default_rng(0), only_untagged=True)
    assert report.summary.skipped_already_tagged == 6
    assert all(src == "import" for item in ("a1", "a3") for src, _ in tags_of(shop, item).values())


def test_provisional_tags_stay_out_of_vectors_and_counts(shop: psycopg.Connection[Any]) -> None:
    tag_items(shop, rng=np.random.default_rng(0))
    rows = shop.execute(
        """select it.item_id, it.tag_id, it.confidence, i.tag_vec
           from item_tags it join items i on i.id = it.item_id where it.source <> 'import'"""
    ).fetchall()
    provisional = [r for r in rows if r["confidence"] < 0.5]
    confident = [r for r in rows if r["confidence"] >= 0.5]
    assert provisional and confident
    for r in provisional:
        assert r["tag_vec"] is None or r["tag_id"] not in r["tag_vec"].indices()
    for r in confident:
        assert r["tag_id"] in r["tag_vec"].indices()


def test_behaviour_confirms_a_provisional_tag_that_fans_like(shop: psycopg.Connection[Any]) -> None:
    replace_item_tags(shop, {"n2": {"boom-bap": 0.3}}, source="keyword")
    shop.execute("update item_tags set confidence = 0.3 where item_id = 'n2'")
    assert confirm_by_behaviour(shop) == 0  # nobody has liked n2 yet
    likes = [(u, item) for u in ("u0", "u1") for item in ("a1", "n2")]  # boom-bap fans (a1) like n2
    likes += [("u3", "a3"), ("u4", "a3")]  # synthwave fans like synthwave: boom-bap is not everyone's
    for u, item in likes:
        shop.execute(
            """insert into events (id, user_id, type, item_id, ts)
               values (%(id)s, %(u)s, 'like', %(i)s, %(ts)s)""",
            {"id": f"like-{u}-{item}", "u": u, "i": item, "ts": NOW},
        )
    music = ensure_tags(shop, {"music"})["music"]  # a broad tag: every liker has it in their taste
    shop.execute(
        """insert into item_tags (item_id, tag_id, weight, source, confidence)
           values ('a1', %(t)s, 1, 'import', 1), ('a3', %(t)s, 1, 'import', 1),
                  ('n2', %(t)s, 0.3, 'keyword', 0.3)""",
        {"t": music},
    )
    # all of n2's likers have boom-bap in their taste, against half of all likers: lift 2
    assert confirm_by_behaviour(shop, min_lift=2.5) == 0
    assert confirm_by_behaviour(shop) == 1
    assert tags_of(shop, "n2")["music"][0] == "keyword"  # lift 1: says nothing about n2
    source, confidence = tags_of(shop, "n2")["boom-bap"]
    assert source == "confirmed" and confidence == 1.0  # both of n2's likers are boom-bap fans
    tag_items(shop, rng=np.random.default_rng(0))
    assert tags_of(shop, "n2")["boom-bap"][0] == "confirmed"  # later runs keep it


def test_confirmed_tags_count_against_an_items_budget_of_auto_tags(shop: psycopg.Connection[Any]) -> None:
    """Every run proposed k more tags beyond the confirmed ones, so confirmed tags grew without bound
    (21,981, then 27,697, then 31,925 more on Last.fm); now an item holds at most k auto tags."""
    tag_items(shop, rng=np.random.default_rng(0), k=2, confirm=False)
    auto = tags_of(shop, "n2")
    assert 0 < len(auto) <= 2
    first = next(iter(auto))
    shop.execute(
        "update item_tags set source = 'confirmed', confidence = 0.9 where item_id = 'n2' and tag_id = "
        "(select id from tags where name = %(t)s)",
        {"t": first},
    )
    tag_items(shop, rng=np.random.default_rng(0), k=2, confirm=False)
    after = tags_of(shop, "n2")
    assert after[first][0] == "confirmed" and len(after) <= 2
    tag_items(shop, rng=np.random.default_rng(0), k=1, confirm=False)
    assert list(tags_of(shop, "n2")) == [first]  # its budget is spent: nothing new is proposed


class FlakyLLM:
    """Fails the first batch, then answers with one vocabulary tag and one invented tag per item."""

    def __init__(self) -> None:
        self.calls = 0

    def structured(self, system: str, user: str, schema: type[BaseModel]) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise LLMUnavailable("the LLM did not answer within 1.0 s")
        items = json.loads(user)["items"]
        tags = [LLMTag(tag="Synth Wave", confidence=0.9), LLMTag(tag="vaporwave-core", confidence=0.9)]
        return LLMTagReply(items=[LLMItemTags(item_id=it["item_id"], tags=tags) for it in items])


def test_llm_timeouts_and_invented_tags_are_counted_not_raised(shop: psycopg.Connection[Any]) -> None:
    shop.execute("insert into items (id, title) select 'x' || g, 'Track ' || g from generate_series(1, 25) g")
    report = tag_items(shop, rng=np.random.default_rng(0), llm=FlakyLLM())
    s = report.summary
    assert report.llm and s.llm_batches == 2 and s.llm_failed_batches == 1
    assert s.llm_out_of_vocabulary > 0 and any("did not answer" in p for p in s.problems)
    assert "vaporwave-core" not in {r["name"] for r in shop.execute("select name from tags")}
    assert tags_of(shop, "x25")["synthwave"] == ("llm", 0.9)


def test_empty_vocabulary_is_reported_not_raised(db: psycopg.Connection[Any]) -> None:
    db.execute("insert into items (id, title) values ('lonely', 'Nothing tagged here')")
    report = tag_items(db, rng=np.random.default_rng(0))
    assert report.stored == 0 and report.vocabulary == 0
    assert any("empty vocabulary" in p for p in report.summary.problems)


def test_embeddings_are_stored_and_related_tags_come_from_the_index(db: psycopg.Connection[Any]) -> None:
    rng = np.random.default_rng(3)
    groups = [[f"g{g}-tag{t}" for t in range(5)] for g in range(3)]
    db.execute("insert into items (id) select 'i' || g from generate_series(0, 89) g")
    chosen = {f"i{i}": {str(t): 1.0 for t in rng.choice(groups[i % 3], 3, replace=False)} for i in range(90)}
    replace_item_tags(db, chosen, source="import")
    report = train_and_store(db, np.random.default_rng(0))
    assert report.tags == report.embedded == 15 and report.dim == 64
    found = find_tag(db, "g1-tag0")
    assert found is not None
    near = related(db, found[0], k=4)
    assert near is not None and len(near) == 4
    assert all(name.startswith("g1-") for name, _ in near)
    assert near == sorted(near, key=lambda p: -p[1])


def test_related_returns_as_many_tags_as_asked_beyond_the_index_default(db: psycopg.Connection[Any]) -> None:
    """`tag related rock --k 100` gave 39: the HNSW scan stopped at its default 40 candidates."""
    rng = np.random.default_rng(5)
    groups = [[f"g{g}-tag{t}" for t in range(4)] for g in range(20)]
    db.execute("insert into items (id) select 'i' || g from generate_series(0, 399) g")
    chosen = {
        f"i{i}": {str(t): 1.0 for t in rng.choice(groups[i % 20], 3, replace=False)} for i in range(400)
    }
    replace_item_tags(db, chosen, source="import")
    report = train_and_store(db, np.random.default_rng(0))
    assert report.embedded > 60
    found = find_tag(db, "g0-tag0")
    assert found is not None
    near = related(db, found[0], k=60)
    assert near is not None and len(near) == 60 and near == sorted(near, key=lambda p: -p[1])


def _playlist_events(db: psycopg.Connection[Any]) -> None:
    db.execute("insert into users (id) values ('u')")
    db.execute("insert into items (id) values ('old1'), ('old2'), ('new1'), ('new2')")
    replace_item_tags(
        db, {"old1": {"rock": 1}, "old2": {"pop": 1}, "new1": {"hyperpop": 1}, "new2": {"glitchcore": 1}},
        source="import",
    )  # fmt: skip
    rows = []
    for p in range(8):  # an old pair, steady for weeks
        for item in ("old1", "old2"):
            rows.append((f"old-{p}", item, NOW - timedelta(days=5 + 7 * p)))
    for p in range(5):  # a new pair, only in the last window
        for item in ("new1", "new2"):
            rows.append((f"new-{p}", item, NOW - timedelta(days=1 + p / 2)))
    for n, (playlist, item, ts) in enumerate(rows):
        db.execute(
            """insert into events (id, user_id, type, item_id, ts, context)
               values (%(id)s, 'u', 'add_to_playlist', %(item)s, %(ts)s, %(ctx)s)""",
            {"id": f"e{n}", "item": item, "ts": ts, "ctx": json.dumps({"playlist_id": playlist})},
        )


def test_trends_find_the_new_growing_pair_in_playlists(db: psycopg.Connection[Any]) -> None:
    _playlist_events(db)
    report = find_trends(db, NOW, window=timedelta(days=7))
    assert report.collections == "playlist" and report.events == 26
    assert [t.name for t in report.trends] == ["glitchcore + hyperpop"]
    trend = report.trends[0].as_dict()
    assert trend["size"] == 5 and trend["growth"] == 6.0 and trend["first_seen"].startswith("2025-05-29")


def test_trends_from_sessions_split_on_half_hour_gaps(db: psycopg.Connection[Any]) -> None:
    db.execute("insert into items (id) values ('new1'), ('new2')")
    replace_item_tags(db, {"new1": {"hyperpop": 1}, "new2": {"glitchcore": 1}}, source="import")
    for u in range(4):
        db.execute("insert into users (id) values (%(u)s)", {"u": f"u{u}"})
        for n, (item, minutes) in enumerate([("new1", 0), ("new2", 10), ("new1", 200)]):
            db.execute(
                """insert into events (id, user_id, type, item_id, ts)
                   values (%(id)s, %(u)s, 'play', %(i)s, %(ts)s)""",
                {
                    "id": f"s{u}-{n}",
                    "u": f"u{u}",
                    "i": item,
                    "ts": NOW - timedelta(days=1 + u, minutes=-minutes),
                },
            )
    report = find_trends(db, NOW, window=timedelta(days=7), collections="auto")
    assert report.collections == "session"
    assert [(t.name, t.trend.size) for t in report.trends] == [("glitchcore + hyperpop", 4)]
    # a few playlist adds join the sessions under `auto`; they used to replace them all
    db.execute("insert into items (id) values ('odd')")
    replace_item_tags(db, {"odd": {"polka": 1}}, source="import")
    for n, item in enumerate(["odd", "new1"]):
        db.execute(
            """insert into events (id, user_id, type, item_id, ts, context)
               values (%(id)s, 'u0', 'add_to_playlist', %(i)s, %(ts)s, '{"playlist_id": "u0:1"}')""",
            {"id": f"pl{n}", "i": item, "ts": NOW - timedelta(hours=2, minutes=n)},
        )
    both = find_trends(db, NOW, window=timedelta(days=7), collections="auto")
    assert both.collections == "playlist+session"
    assert [t.name for t in both.trends] == ["glitchcore + hyperpop"]
    alone = find_trends(db, NOW, window=timedelta(days=7), collections="playlist")
    assert alone.collections == "playlist" and alone.trends == []


def test_an_import_takes_over_an_auto_tag_of_the_same_pair(db: psycopg.Connection[Any]) -> None:
    """Re-importing an item whose tag was also proposed by `tagloop tag items` (one row per pair)."""
    db.execute("insert into items (id) values ('a1')")
    replace_item_tags(db, {"a1": {"shoegaze": 1}}, source="import")
    replace_item_tags(db, {"a1": {"dream pop": 0.4, "noise pop": 0.3}}, source="keyword")
    replace_item_tags(db, {"a1": {"dream pop": 0.9, "shoegaze": 1}}, source="import")
    rows = db.execute(
        """select t.name, it.source, it.weight from item_tags it join tags t on t.id = it.tag_id
           where it.item_id = 'a1' order by t.name"""
    ).fetchall()
    assert [(r["name"], r["source"], round(r["weight"], 3)) for r in rows] == [
        ("dream pop", "import", 0.9),
        ("noise pop", "keyword", 0.3),
        ("shoegaze", "import", 1.0),
    ]


def test_services_reject_k_below_one_and_a_history_before_the_year_one(shop: psycopg.Connection[Any]) -> None:
    """`tag items --k -1` wrote every proposal but the last ([:-1]); `trends --history-days 1e308`
    was an OverflowError."""
    for k in (0, -1):
        with pytest.raises(InvalidInput, match="k must be at least 1"):
            tag_items(shop, rng=np.random.default_rng(0), k=k)
    assert shop.execute("select count(*) as n from item_tags where source <> 'import'").fetchone() == {"n": 0}
    with pytest.raises(InvalidInput, match="before the year 1"):
        find_trends(shop, NOW, history=timedelta(days=999_999_999))
    with pytest.raises(InvalidInput, match="limit must be at least 1"):
        find_trends(shop, NOW, limit=0)


def test_a_catalogue_too_small_to_learn_from_is_reported_not_raised(db: psycopg.Connection[Any]) -> None:
    """Two items with one tag each: `tag items` exited with an error instead of counting it."""
    db.execute("insert into items (id, title) values ('c1', 'One'), ('c2', 'Two'), ('c3', 'Three')")
    replace_item_tags(db, {"c1": {"rock": 1.0}, "c2": {"jazz": 1.0}}, source="import")
    report = tag_items(db, rng=np.random.default_rng(0))
    assert report.stored == 0 and any("too few tags" in p for p in report.summary.problems)


def test_proposals_use_the_stored_spelling_of_a_tag(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """ "(hed) p.e." is stored `(hed)-p.e.`; proposals wrote the vocabulary's cleaned `hed)-p.e` as a
    second tag, and the next `tag vocab` renamed the user's own tag to that."""
    items = [
        {"id": "b1", "title": "B1", "tags": ["(hed) p.e.", "rap-metal"]},
        {"id": "b2", "title": "B2", "tags": ["(hed) p.e.", "rap-metal"]},
        {"id": "b3", "title": "B3"},
    ]
    import_file(db, "items", jsonl(tmp_path / "items.jsonl", items))
    import_file(
        db, "users", jsonl(tmp_path / "users.jsonl", [{"id": f"u{i}", "timezone": "UTC"} for i in range(3)])
    )
    plays = [{"user_id": f"u{i}", "type": "play", "item_id": b} for i in range(3) for b in ("b1", "b2", "b3")]
    import_file(db, "events", jsonl(tmp_path / "events.jsonl", plays), now=NOW)
    tag_items(db, rng=np.random.default_rng(0))
    sync_vocabulary(db)
    names = {r["name"] for r in db.execute("select name from tags")}
    assert "(hed)-p.e." in names and "hed)-p.e" not in names
    assert "(hed)-p.e." in tags_of(db, "b1") and "(hed)-p.e." in tags_of(db, "b3")


def test_counts_report_what_the_budget_lets_through(shop: psycopg.Connection[Any]) -> None:
    """`tag items --k 3` after runs at --k 10 reported 9,077 proposals but stored 8,134: the summary
    counted proposals before each item's budget (confirmed tags included) cut them."""
    tag_items(shop, rng=np.random.default_rng(0), k=3, confirm=False)
    shop.execute("delete from item_tags where item_id = 'n2'")
    shop.execute(
        "insert into item_tags (item_id, tag_id, weight, source, confidence) select 'n2', id, 0.9,"
        " 'confirmed', 0.9 from tags where name in ('synthwave', '80s', 'boom-bap')"
    )  # confirmed by earlier runs at a larger --k
    report = tag_items(shop, rng=np.random.default_rng(0), k=3, confirm=False)
    s = report.summary
    stored = shop.execute(
        "select count(*) as n, count(*) filter (where confidence < 0.5) as p, count(distinct item_id) as i"
        " from item_tags where source <> all(%(keep)s)",
        {"keep": ["import", "confirmed"]},
    ).fetchone()
    assert stored is not None
    assert s.proposals == report.stored == stored["n"] == sum(report.by_source.values())
    assert s.provisional == stored["p"] and s.tagged == stored["i"]
    assert s.over_budget == 1  # n2: its confirmed tags fill the budget, nothing new is proposed
    assert len(tags_of(shop, "n2")) == 3


def test_embed_leaves_tags_on_a_few_items_out_as_the_readme_table_does(db: psycopg.Connection[Any]) -> None:
    """`tag related shoegaze` on Last.fm listed sfx, unicef41, reversed-guitar (2–4 items each): the
    command embedded tags on 2 items and mixed in users' histories, the README's table (bench/tagging.py)
    tags on ≥ 5 items from item tag sets."""
    rng = np.random.default_rng(3)
    groups = [[f"g{g}-tag{t}" for t in range(5)] for g in range(3)]
    db.execute("insert into items (id) select 'i' || g from generate_series(0, 89) g")
    chosen = {f"i{i}": {str(t): 1.0 for t in rng.choice(groups[i % 3], 3, replace=False)} for i in range(90)}
    for n, item in enumerate(["i1", "i4", "i7", "i10"]):  # one-off labels on a few group-1 items
        chosen[item][f"odd{n // 2}"] = 1.0
    replace_item_tags(db, chosen, source="import")
    report = train_and_store(db, np.random.default_rng(0))
    assert report.embedded == 15  # odd0 and odd1 (2 items each) have no vector
    found = find_tag(db, "g1-tag0")
    assert found is not None
    near = related(db, found[0], k=6)
    assert near is not None and not any(name.startswith("odd") for name, _ in near)
    rows = [(item, tag, w) for item, tags in chosen.items() for tag, w in tags.items()]
    full = item_tag_matrix(rows)  # what bench/tagging.py computes for the README
    emb = tag_embeddings(cooccurrence(full.binary()), 64, np.random.default_rng(0), min_count=5)
    bench = related_tags(emb, full.tags, "g1-tag0", 4)
    assert dict(near[:4]) == pytest.approx(dict(bench), abs=1e-3)  # the group's tags, near-tied
