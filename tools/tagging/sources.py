"""Tag proposals from an item's own words: vocabulary phrase matching and the LLM.

- `keyword_tags(item, vocab)`: every 1–4-word phrase of the title, text and attribute values whose
  spelling variant is a vocabulary tag ("Hip Hop" finds "hip-hop"). Confidence: 0.8 for a phrase
  in the title or attributes, 0.6 in the body text; single words shorter than 3 letters are ignored.
- `llm_tags(llm, items, vocab, batch_size)`: asks the LLM, a batch at a time, for tags chosen
  from the vocabulary with confidences (schema `LLMTagReply`). Tags outside the vocabulary are
  dropped and counted; a batch whose call fails (timeout, invalid JSON, …) is counted and skipped,
  so the deterministic path carries on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from tagloop.tools.llm import LLM, LLMUnavailable
from tagloop.tools.tagging.vocabulary import Vocabulary, clean_surface

_WORD = re.compile(r"[\w'&+-]+", re.UNICODE)
MAX_PHRASE = 4
PROMPT_VOCAB = 400  # most frequent tags shown to the LLM


@dataclass(frozen=True)
class ItemText:
    """What auto-tagging may read about an item (a message template is an item too)."""

    item_id: str
    title: str = ""
    text: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    provider: str | None = None

    def has_text(self) -> bool:
        return bool(
            self.title.strip() or self.text.strip() or any(str(v).strip() for v in self.attributes.values())
        )


def _phrases(text: str) -> set[str]:
    words = _WORD.findall(clean_surface(text))
    out: set[str] = set()
    for n in range(1, MAX_PHRASE + 1):
        for i in range(len(words) - n + 1):
            out.add(" ".join(words[i : i + n]))
    return out


def keyword_tags(item: ItemText, vocab: Vocabulary) -> dict[str, float]:
    """Vocabulary tags named in the item's words, tag → confidence."""
    found: dict[str, float] = {}
    sources = [
        (item.title, 0.8),
        (" . ".join(str(v) for v in item.attributes.values()), 0.8),
        (item.text, 0.6),
    ]
    for text, confidence in sources:
        for phrase in _phrases(text):
            if " " not in phrase and len(phrase) < 3:
                continue
            tag = vocab.canonical(phrase)
            if tag is not None and found.get(tag, 0.0) < confidence:
                found[tag] = confidence
    return found


class LLMTag(BaseModel):
    tag: str
    confidence: float = Field(ge=0.0, le=1.0)


class LLMItemTags(BaseModel):
    item_id: str
    tags: list[LLMTag]


class LLMTagReply(BaseModel):
    items: list[LLMItemTags]


@dataclass
class LLMOutcome:
    tags: dict[str, dict[str, float]] = field(default_factory=dict)  # item → tag → confidence
    batches: int = 0
    failed_batches: int = 0
    out_of_vocabulary: int = 0
    errors: list[str] = field(default_factory=list)


SYSTEM = (
    "You tag catalogue items with fine, specific tags. Choose tags ONLY from the vocabulary given. "
    'Answer with JSON: {"items": [{"item_id": ..., "tags": [{"tag": ..., "confidence": 0..1}]}]}.'
)


def llm_tags(llm: LLM, items: Sequence[ItemText], vocab: Vocabulary, batch_size: int = 20) -> LLMOutcome:
    """Vocabulary-constrained tags from the LLM; failures and invented tags are counted, not raised."""
    outcome = LLMOutcome()
    shown = vocab.tags[:PROMPT_VOCAB]
    wanted = {item.item_id for item in items}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        payload = {
            "vocabulary": shown,
            "items": [
                {
                    "item_id": it.item_id,
                    "title": it.title,
                    "text": it.text[:1000],
                    "attributes": dict(it.attributes),
                }
                for it in batch
            ],
        }
        outcome.batches += 1
        try:
            reply = llm.structured(SYSTEM, json.dumps(payload, ensure_ascii=False), LLMTagReply)
        except LLMUnavailable as err:
            outcome.failed_batches += 1
            outcome.errors.append(str(err))
            continue
        for entry in reply.items:
            if entry.item_id not in wanted:
                continue
            for suggestion in entry.tags:
                tag = vocab.canonical(suggestion.tag)
                if tag is None:
                    outcome.out_of_vocabulary += 1
                    continue
                slot = outcome.tags.setdefault(entry.item_id, {})
                slot[tag] = max(slot.get(tag, 0.0), suggestion.confidence)
    return outcome
