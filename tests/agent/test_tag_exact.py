"""The exact tag search in the process (`TAGLOOP_TAG_SEARCH=exact`, tools/tag_exact.py): the same
candidates as an exact scan on the server, by the same rules (unseen, score above 0, equal scores in
item id order, nothing for a user without a profile), through the agent's tags source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from agent_support import load_demo
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.tools import tag_exact
from tagloop.tools.candidates import TagSource, sources_named
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.retrieval import load_history, tag_candidates

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_catalogue() -> None:
    tag_exact._SHARED.clear()  # per database, and the tests' database is emptied between tests


def test_exact_in_process_matches_an_exact_scan_on_the_server(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, 30, seed=4, providers=80, items=1500, days=10)
    history = load_history(db, users, NOW)
    k = 40
    with db.transaction():
        db.execute("set local enable_indexscan = off")  # no HNSW: the server scans every item
        on_server = tag_candidates(db, users, k)
    in_process = TagSource(exact=True).fetch_for(db, history, k, NOW)
    compared = 0
    for user in users:
        server, here = on_server[user], in_process[user]
        assert len(here) == len(server), user
        assert all(c.item_id not in history.seen[user] and c.score > 0 for c in here)
        for a, b in zip(server, here, strict=True):
            assert b.score == pytest.approx(a.score, rel=1e-5)  # pgvector sums in float32
            # (at the k-th place the server keeps any of the items tied there: its scan orders by
            # score alone; here the smallest ids)
            near = {c.item_id for c in server + here if abs(c.score - a.score) <= 1e-5 * a.score}
            if len(near) == 1:  # no near tie: the very same item at this place
                assert (b.item_id, b.title, b.provider) == (a.item_id, a.title, a.provider)
                compared += 1
        if server:  # every item clearly above the last place is in both (ties there aside)
            last = server[-1].score * (1 + 1e-5)
            assert {c.item_id for c in server if c.score > last} == {
                c.item_id for c in here if c.score > last
            }
    assert compared > 100  # the demo data has many items with the same tags: tied places aside


def test_ties_seen_items_scores_and_users_without_a_profile(db: psycopg.Connection[Any]) -> None:
    db.execute("insert into users (id, timezone) values ('u', 'UTC'), ('v', 'UTC'), ('w', 'UTC')")
    db.execute("insert into providers (id, name) select p, p from unnest(array['p1', 'p2', 'p3', 'p4']) p")
    db.execute(
        """insert into items (id, title, provider_id, tag_vec) values
           ('b', 'B', 'p1', '{1:0.5}/1000000'), ('a', 'A', 'p2', '{1:0.5}/1000000'),
           ('c', 'C', null, '{1:0.9,2:0.5}/1000000'), ('d', 'D', 'p3', '{2:1}/1000000'),
           ('e', 'E', 'p3', '{3:1}/1000000'), ('f', 'F', 'p4', null)"""
    )
    # u: tag 1 liked, tag 2 disliked (d scores below 0), tag 7 carried by no item; v: no profile row;
    # w: a profile of a tag nobody carries
    db.execute(
        """insert into user_profiles (user_id, tags) values
           ('u', '{1:1,2:-2,7:3}/1000000'), ('w', '{9:1}/1000000')"""
    )
    catalogue = tag_exact.catalogue(db, NOW)
    profiles = tag_exact.request_profiles(db, ["u", "v", "w"]).result()
    assert set(profiles) == {"u", "w"}
    top = catalogue.top(profiles, {"u": frozenset({"c"})}, 10)
    assert top["u"] == [("a", "A", "p2", 0.5), ("b", "B", "p1", 0.5)]  # c seen; d negative; ties by id
    assert top["w"] == []
    assert [c[0] for c in catalogue.top(profiles, {}, 10)["u"]] == ["a", "b"]  # c: 0.9 - 1.0 < 0

    source = sources_named(["tags"], tag_search="exact")[0]
    assert isinstance(source, TagSource) and source.exact
    history = load_history(db, ["u", "v", "w"], NOW)
    found = source.fetch_for(db, history, 1, NOW)
    assert [c.item_id for c in found["u"]] == ["a"] and found["v"] == [] and found["w"] == []
    assert found["u"][0].source == "tags"

    db.execute("update items set tag_vec = '{1:0.75}/1000000' where id = 'e'")  # retagged
    assert [c[0] for c in tag_exact.catalogue(db, NOW).top(profiles, {}, 10)["u"]] == ["a", "b"]  # held
    later = tag_exact.catalogue(db, NOW + timedelta(minutes=2))
    assert [c[0] for c in later.top(profiles, {}, 10)["u"]] == ["e", "a", "b"]  # read again


def test_no_tagged_items_and_users_without_profiles_get_nothing_not_an_error(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A fresh install (items imported without tags) and a batch of only new users: the reads come
    back empty, and the exact search proposes nothing instead of failing every decision."""
    db.execute("insert into users (id, timezone) values ('new1', 'UTC'), ('new2', 'UTC')")
    db.execute("insert into providers (id, name) values ('p', 'P')")
    db.execute("insert into items (id, title, provider_id) values ('x', 'X', 'p'), ('y', 'Y', 'p')")
    assert tag_exact.request_profiles(db, ["new1", "new2"]).result() == {}
    empty = tag_exact.catalogue(db, NOW)
    assert empty.ids == [] and empty.top({"u": (np.array([1], np.int32), np.array([1.0]))}, {}, 5) == {
        "u": []
    }
    history = load_history(db, ["new1", "new2"], NOW)
    assert TagSource(exact=True).fetch_for(db, history, 10, NOW) == {"new1": [], "new2": []}
    settings = Settings(home=tmp_path / "home", tag_search="exact")
    outcomes = run_users(
        db, settings, ["new1", "new2"], now=NOW, channels={"file": FileChannel(tmp_path / "o")}
    )
    assert {o.user_id for o in outcomes} == {"new1", "new2"}  # decided (nothing to send), no traceback
    assert all(o.outcome in ("nothing_to_send", "holdout", "message") for o in outcomes)


def _reference_top(
    items: dict[str, dict[int, float]], profile: dict[int, float], seen: set[str], k: int
) -> list[tuple[str, float]]:
    """The rules written out item by item: score = Σ over shared tags, unseen, above 0, best first,
    ties by id."""
    scored = [(i, sum(w * profile.get(t, 0.0) for t, w in sorted(tags.items()))) for i, tags in items.items()]
    return sorted(((i, s) for i, s in scored if s > 0 and i not in seen), key=lambda p: (-p[1], p[0]))[:k]


@st.composite
def _worlds(
    draw: st.DrawFn,
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]], dict[str, set[str]]]:
    # weights in eighths between -2 and 2, so every sum is exact in any order and ties are real
    weight = st.integers(-16, 16).filter(bool).map(lambda n: n / 8)
    tag_vec = st.dictionaries(st.integers(1, 12), weight, max_size=5)
    items = draw(st.dictionaries(st.text("abcdef", min_size=1, max_size=3), tag_vec, max_size=25))
    users = draw(st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4", "u5"]), tag_vec, min_size=1))
    ids = [*sorted(items), "unknown"]
    seen = {u: set(draw(st.lists(st.sampled_from(ids), max_size=6))) for u in users}
    return items, users, seen


@settings(max_examples=150, deadline=None)
@given(world=_worlds(), k=st.integers(1, 8), cells=st.sampled_from([1, 7, 1 << 22]))
def test_top_follows_the_rules_item_by_item_in_slices_of_any_size(
    world: tuple[dict[str, dict[int, float]], dict[str, dict[int, float]], dict[str, set[str]]],
    k: int,
    cells: int,
) -> None:
    """`top` (one sparse × dense product per slice of users, dense selection) against the rules
    computed item by item, with slices from one user each (`MAX_CELLS` 1) to all users at once."""
    items, users, seen = world
    ids = sorted(items)
    vecs = [sorted(items[i].items()) for i in ids]
    catalogue = tag_exact.TagCatalogue.build(
        [(i, i.upper(), f"p-{i}") for i in ids],
        np.array([len(v) for v in vecs], dtype=np.int64),
        np.array([t for v in vecs for t, _ in v], dtype=np.int32),
        np.array([w for v in vecs for _, w in v], dtype=np.float64),
    )
    profiles = {
        u: (np.array(sorted(p), dtype=np.int32), np.array([p[t] for t in sorted(p)], dtype=np.float64))
        for u, p in users.items()
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tag_exact, "MAX_CELLS", cells)
        found = catalogue.top(profiles, seen, k)
    assert set(found) == set(users)
    for u, p in users.items():
        expected = _reference_top(items, p, seen[u], k)
        assert [(c[0], c[3]) for c in found[u]] == expected, u
        assert all(c[1] == c[0].upper() and c[2] == f"p-{c[0]}" for c in found[u])
