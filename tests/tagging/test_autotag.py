"""Auto-tagging: keyword, LLM (in-process fake LLMs), model propagation, and the summary."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pytest
from pydantic import BaseModel

from tagloop.tools.llm import LLMUnavailable
from tagloop.tools.tagging.autotag import CONFIRM_AT, PROVIDER_PRIOR_ITEMS, autotag
from tagloop.tools.tagging.sources import ItemText, LLMTagReply, keyword_tags
from tagloop.tools.tagging.vocabulary import build_vocabulary

KNOWN = [
    ("a", "shoegaze", 3.0), ("a", "dream pop", 2.0), ("b", "shoegaze", 1.0), ("b", "dream pop", 1.0),
    ("c", "hip-hop", 4.0), ("c", "rap", 2.0), ("d", "hip hop", 1.0), ("d", "rap", 1.0), ("e", "rap", 1.0),
]  # fmt: skip
T = TypeVar("T", bound=BaseModel)
VOCAB = build_vocabulary([(t, w) for _, t, w in KNOWN])


class ScriptedLLM:
    """An in-process LLM returning a fixed JSON text, parsed exactly as the real seam parses it."""

    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.calls = 0

    def structured(self, system: str, user: str, schema: type[T]) -> T:
        self.calls += 1
        if self.reply is None:
            raise LLMUnavailable("the LLM did not answer within 0.1 s")
        try:
            return schema.model_validate_json(self.reply)
        except ValueError as err:
            raise LLMUnavailable("the LLM reply does not fit") from err


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_keyword_matching_finds_spelling_variants_in_title_and_text() -> None:
    found = keyword_tags(ItemText("x", title="A Hip Hop classic", text="pure shoegaze noise"), VOCAB)
    assert found == {"hip-hop": 0.8, "shoegaze": 0.6}


def test_cooccurrence_proposes_companion_tags_of_keyword_tags() -> None:
    result = autotag([ItemText("n1", title="A Hip Hop classic")], VOCAB, KNOWN, rng=rng())
    by_tag = {p.tag: p for p in result.proposals}
    assert by_tag["hip-hop"].source == "keyword"  # provisional: no tagged item's title tests the word
    assert by_tag["rap"].source == "cooccurrence" and by_tag["rap"].provisional


def test_colistening_propagates_tags_to_an_item_without_text() -> None:
    interactions = [("u1", "a", 1.0), ("u1", "n2", 1.0), ("u2", "b", 1.0), ("u2", "n2", 1.0)]
    result = autotag([ItemText("n2")], VOCAB, KNOWN, interactions, rng=rng())
    assert {p.tag for p in result.proposals} == {"shoegaze", "dream pop"}
    assert {p.source for p in result.proposals} == {"colisten"}
    assert result.summary.without_text == 1 and result.summary.tagged == 1


def test_same_provider_propagates_tags() -> None:
    result = autotag(
        [ItemText("n3", provider="label-x")], VOCAB, KNOWN, rng=rng(), providers={"c": "label-x"}
    )
    assert {p.tag for p in result.proposals} >= {"hip-hop", "rap"}
    assert {p.source for p in result.proposals} == {"provider"}


def test_known_tags_are_never_proposed_and_only_untagged_skips_tagged_items() -> None:
    items = [ItemText("a", title="shoegaze dream pop"), ItemText("z", title="shoegaze")]
    result = autotag(items, VOCAB, KNOWN, rng=rng(), only_untagged=True)
    assert result.summary.skipped_already_tagged == 1
    assert all(p.item_id == "z" for p in result.proposals)
    full = autotag(items, VOCAB, KNOWN, rng=rng())
    assert not {p.tag for p in full.proposals if p.item_id == "a"} & {"shoegaze", "dream pop"}


def test_llm_tags_are_used_and_invented_tags_dropped_and_counted() -> None:
    reply = LLMTagReply.model_validate(
        {"items": [{"item_id": "m1", "tags": [{"tag": "Dream-Pop", "confidence": 0.9},
                                              {"tag": "vaporwave", "confidence": 0.8}]}]}
    )  # fmt: skip
    llm = ScriptedLLM(reply.model_dump_json())
    result = autotag(
        [ItemText("m1", title="Weekly digest", text="hazy guitars")], VOCAB, KNOWN, rng=rng(), llm=llm
    )
    tags = {p.tag: p for p in result.proposals}
    assert tags["dream pop"].source == "llm" and tags["dream pop"].confidence >= 0.9
    assert "vaporwave" not in tags
    assert result.summary.llm_out_of_vocabulary == 1 and result.summary.llm_failed_batches == 0


def test_llm_timeout_or_invalid_json_falls_back_without_failing_the_batch() -> None:
    items = [ItemText(f"m{i}", title="hip hop night") for i in range(45)]
    for llm in (ScriptedLLM(None), ScriptedLLM("{not json")):
        result = autotag(items, VOCAB, KNOWN, rng=rng(), llm=llm)
        assert llm.calls == 3  # batches of 20
        assert result.summary.llm_failed_batches == 3
        assert result.summary.problems and "LLM batch failed" in result.summary.problems[0]
        assert {p.tag for p in result.proposals if p.item_id == "m0"} >= {"hip-hop"}


def test_empty_vocabulary_is_reported_not_raised() -> None:
    result = autotag([ItemText("x", title="anything")], build_vocabulary({}), rng=rng())
    assert result.proposals == []
    assert "empty vocabulary" in result.summary.problems[0]


def test_item_with_no_text_and_no_links_is_counted_without_signal() -> None:
    result = autotag([ItemText("lonely")], VOCAB, KNOWN, rng=rng())
    assert result.proposals == []
    assert result.summary.without_signal == 1 and result.summary.without_text == 1


def test_confidences_are_probabilities_and_provisional_below_threshold() -> None:
    result = autotag([ItemText("n1", title="hip hop")], VOCAB, KNOWN, rng=rng())
    assert all(0 < p.confidence <= 1 for p in result.proposals)
    assert all(p.provisional == (p.confidence < CONFIRM_AT) for p in result.proposals)


def test_a_new_release_gets_its_providers_tags_with_the_share_that_carries_them() -> None:
    """A provider's tags almost never reached its untagged items: provider evidence was worth its
    blend weight (0.05, also the minimum confidence), so only tags on every other item survived."""
    known = [(f"l{i}", "lofi", 1.0) for i in range(20)] + [("l20", "jazz", 1.0)]
    known += [(f"l{i}", "chill", 1.0) for i in range(0, 21, 2)]  # 11 of 21
    known += [("o1", "metal", 1.0), ("o2", "metal", 1.0), ("o1", "doom", 1.0)]
    providers = {f"l{i}": "p-lofi" for i in range(21)} | {"o1": "p-metal", "o2": "p-metal"}
    vocab = build_vocabulary([(t, w) for _, t, w in known])
    result = autotag(
        [ItemText("new", title="Brand New Single", provider="p-lofi")], vocab, known,
        rng=rng(), providers=providers, only_untagged=True,
    )  # fmt: skip
    by_tag = {p.tag: p for p in result.proposals}
    assert by_tag["lofi"].source == "provider" and not by_tag["lofi"].provisional
    assert by_tag["lofi"].confidence == pytest.approx(20 / (21 + PROVIDER_PRIOR_ITEMS))
    assert by_tag["chill"].confidence == pytest.approx(11 / (21 + PROVIDER_PRIOR_ITEMS))
    assert "jazz" not in by_tag  # 1 of 21: under the minimum confidence
    assert "metal" not in by_tag  # another provider's tags
    small = autotag(
        [ItemText("new2", provider="p-metal")], vocab, known, rng=rng(), providers=providers
    )  # two items carry metal: a guess, not yet a fact
    metal = {p.tag: p for p in small.proposals}["metal"]
    assert metal.source == "provider" and metal.provisional
