"""Tag families: keyword rules, data-driven assignment, genre parents, roll-ups."""

from __future__ import annotations

import numpy as np
import pytest

from tagloop.tools.tagging.taxonomy import build_taxonomy, rule_family
from tagloop.tools.tagging.vocabulary import build_vocabulary


@pytest.mark.parametrize(
    ("tag", "family"),
    [
        ("pop punk", "punk"),
        ("indie pop", "pop"),
        ("melodic death metal", "metal"),
        ("drum and bass", "electronic"),
        ("Hip-Hop", "hip-hop"),
        ("80s", "era"),
        ("1982", "era"),
        ("female vocalists", "vocals"),
        ("seen live", "opinion"),
        ("british", "place-language"),
        ("melancholic", "mood"),
        ("vfsix", None),
        ("r-and-b", "r&b-soul"),  # the stored name of "R&B" (411 Last.fm artists) was "other"
        ("R&B", "r&b-soul"),
    ],
)
def test_keyword_rules_use_the_head_word_first(tag: str, family: str | None) -> None:
    assert rule_family(tag) == family


def test_unmatched_tag_takes_its_neighbours_family_and_genres_nest() -> None:
    vocab = build_vocabulary(
        {"metal": 50, "death metal": 20, "melodic death metal": 5, "gothenburg": 4, "jazz": 30, "bebop": 8}
    )
    emb = np.zeros((len(vocab), 2))
    for tag in ("metal", "death metal", "melodic death metal", "gothenburg"):
        emb[vocab.index[tag]] = [1.0, 0.0]
    for tag in ("jazz", "bebop"):
        emb[vocab.index[tag]] = [0.0, 1.0]
    tax = build_taxonomy(vocab, emb)
    assert tax.level("gothenburg", "broad") == "metal"
    assert tax.level("melodic death metal", "genre") == "death metal"
    assert tax.level("melodic death metal", "broad") == "metal"
    assert tax.level("gothenburg", "genre") in {"metal", "death metal", "melodic death metal"}
    assert tax.level("bebop", "broad") == "jazz"
    assert tax.level("unheard-of", "broad") == "other"


def test_roll_up_sums_weights_at_the_requested_level() -> None:
    vocab = build_vocabulary({"metal": 5, "death metal": 3, "jazz": 4})
    tax = build_taxonomy(vocab)
    rolled = tax.roll_up({"death metal": 0.5, "metal": 0.25, "jazz": 0.5}, "broad")
    assert rolled == {"metal": 0.75, "jazz": 0.5}
    assert tax.roll_up({"death metal": 1.0}, "microgenre") == {"death metal": 1.0}
