"""Keyword tags: the item's own title and text only, no stopwords, no given names, and only tags the
catalogue has established and that the words predict on already-tagged items (the Last.fm audit:
every artist got "lastfm" and "music" from its URL, and "the", "and", "david", "peter", …)."""

from __future__ import annotations

import numpy as np

from tagloop.tools.tagging.autotag import CONFIRM_AT, autotag
from tagloop.tools.tagging.sources import ItemText, keyword_stats, keyword_tags, name_like_words
from tagloop.tools.tagging.vocabulary import build_vocabulary

DAVIDS = ["David Bowie", "David Guetta", "David Gilmour", "David Byrne", "David Lynch"]


def keyword_proposals(
    items: list[ItemText], known: list[tuple[str, str, float]]
) -> dict[str, dict[str, float]]:
    vocab = build_vocabulary([(t, 1.0) for _, t, _ in known])
    result = autotag(items, vocab, known, rng=np.random.default_rng(0))
    out: dict[str, dict[str, float]] = {}
    for p in result.proposals:
        if p.source == "keyword":
            out.setdefault(p.item_id, {})[p.tag] = p.confidence
    return out


def test_keywords_come_from_title_and_text_never_from_urls_or_other_attributes() -> None:
    vocab = build_vocabulary({"lastfm": 27, "music": 17, "rock": 100, "www": 3})
    url = {"url": "http://www.last.fm/music/Some+Band", "label": "Rock Records"}
    assert keyword_tags(ItemText("a", title="Some Band", attributes=url), vocab) == {}
    assert keyword_tags(ItemText("b", title="Some Band", text="loud rock", attributes=url), vocab) == {
        "rock": 0.6
    }


def test_stopwords_and_stopword_phrases_are_never_keyword_tags() -> None:
    vocab = build_vocabulary({"the": 2, "and": 1, "of the": 1, "die": 1, "rock and roll": 50})
    found = keyword_tags(ItemText("x", title="The Sound of the Rock and Roll", text="die Musik"), vocab)
    assert found == {"rock and roll": 0.8}


def test_name_like_words_are_the_ones_that_open_many_titles() -> None:
    words = name_like_words([*DAVIDS, "Chicago Blues Band", "Blues Traveler", "Muddy Waters Blues"])
    assert "david" in words and "blues" not in words and "chicago" not in words


def test_a_given_name_is_not_a_keyword_even_when_the_tag_is_established() -> None:
    items = [ItemText(f"d{i}", title=title) for i, title in enumerate(DAVIDS)]
    items += [ItemText("s1", title="Old Song"), ItemText("s2", title="New Song")]
    known = [("s1", "david", 1.0), ("s2", "david", 1.0), ("s1", "pop", 1.0), ("s2", "pop", 1.0)]
    assert keyword_proposals(items, known) == {}


def test_keywords_need_an_established_tag_that_the_words_predict_on_tagged_items() -> None:
    cities = ["Vienna", "Berlin", "Prague", "London", "Boston", "Dresden"]
    singers = ["Muddy", "Howlin", "Lightnin", "Magic", "Otis", "Buddy"]
    items = [ItemText(f"o{i}", title=f"{c} Orchestra") for i, c in enumerate(cities)]  # none tagged orchestra
    items += [ItemText(f"b{i}", title=f"{s} Blues Band") for i, s in enumerate(singers)]  # 5 of 6 blues
    items += [ItemText("x1", title="Late Night"), ItemText("x2", title="Early Morning")]
    known = [(f"o{i}", "classical", 1.0) for i in range(6)]
    known += [(f"b{i}", "blues", 1.0) for i in range(5)] + [("b5", "soul", 1.0)]
    known += [("x1", "orchestra", 1.0), ("x2", "orchestra", 1.0), ("x1", "synthwave", 1.0)]
    known += [("x2", "synthwave", 1.0), ("x1", "peter", 1.0)]
    targets = [
        ItemText("n1", title="Leipzig Orchestra"),  # "orchestra" named 6 times, carried 0 times
        ItemText("n2", title="Chicago Blues Band"),  # "blues" named 6 times, carried 5 times
        ItemText("n3", title="Synthwave Nights"),  # no tagged item's words name synthwave
        ItemText("n4", title="Peter and the Wolf"),  # "peter" is one item's label; "the", "and"
    ]
    found = keyword_proposals(items + targets, known)
    assert "n1" not in found and "n4" not in found
    assert found["n2"] == {"blues": 0.735}  # (5 + 2 · 0.44) / (6 + 2)
    assert found["n3"] == {"synthwave": 0.44}  # untested: provisional
    stats = keyword_stats(items, known, build_vocabulary([(t, 1.0) for _, t, _ in known]))
    assert stats.named["orchestra"] == 6 and stats.carried.get("orchestra", 0) == 0
    assert stats.support["peter"] == 1


def test_a_word_no_tagged_item_uses_is_a_provisional_keyword_not_a_confident_one() -> None:
    """On Last.fm "Giant Sand" → sand, "Rare Bird" → rare, "Voice Memo" → voice got 0.8 each and
    went straight into vectors and profiles: a word no tagged item's title uses kept the base 0.8."""
    items = [
        ItemText("s1", title="Desert Songs"),
        ItemText("s2", title="Dune"),
        ItemText("r1", title="Rare Bird"),
    ]
    items += [ItemText("g1", title="Sand Blues"), ItemText("g2", title="Sand Storm")]
    known = [("s1", "sand", 1.0), ("s2", "sand", 1.0), ("g1", "sand", 1.0), ("g2", "sand", 1.0)]
    found = keyword_proposals([*items, ItemText("n", title="Giant Sand"), ItemText("m", text="sand")], known)
    assert found["n"]["sand"] >= CONFIRM_AT  # two tagged titles name sand and carry it
    assert found["m"]["sand"] >= CONFIRM_AT
    found = keyword_proposals(
        [*items[:3], ItemText("n", title="Giant Sand"), ItemText("m", text="sand")], known[:2]
    )
    assert 0 < found["n"]["sand"] < CONFIRM_AT  # no tagged item's words name it: a guess
    assert 0 < found["m"]["sand"] < found["n"]["sand"]
    one_miss = keyword_proposals(
        [*items[:3], ItemText("n", title="Giant Sand"), ItemText("x", title="Sand Castle")],
        [*known[:2], ("x", "pop", 1.0)],
    )
    assert "n" not in one_miss  # the one tagged title naming sand does not carry it
