"""The words of a reason by item kind (tools/wording.py) and the copy that uses them."""

from __future__ import annotations

import pytest

from tagloop.tools import wording
from tagloop.tools.messaging.compose import compose_discovery


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("track", wording.LISTEN),
        (" Artist ", wording.LISTEN),
        ("podcast", wording.LISTEN),
        ("MOVIE", wording.WATCH),
        ("article", wording.READ),
        ("book", wording.READ),
        ("product", wording.OTHER),
        ("concert-ticket", wording.OTHER),
        ("", wording.OTHER),
        (None, wording.LISTEN),  # the stored default kind is track
    ],
)
def test_each_kind_has_its_words(kind: str | None, words: wording.Habit) -> None:
    assert wording.habit(kind) == words


def test_a_set_of_items_takes_the_words_of_most_of_them() -> None:
    assert wording.habit_of(["article", "track", "post"]) == wording.READ
    assert wording.habit_of(["product", "track"]) == wording.OTHER  # a tie: the first item's
    assert wording.habit_of([]) == wording.LISTEN


def test_every_family_reads_as_a_sentence() -> None:
    for words in (wording.LISTEN, wording.WATCH, wording.READ, wording.OTHER):
        assert words.often.startswith("you") and words.item.count("{}") == 1
        body = compose_discovery(["A", "B"], ["jazz"], words=words).body
        assert body == f"Because {words.often} jazz: A and B.", body
    declared = compose_discovery(["A"], ["jazz"], declared=True, words=wording.READ).body
    assert declared == "Because you like jazz: A."
