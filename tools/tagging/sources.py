"""Tag proposals from an item's own words: vocabulary phrase matching and the LLM.

- `keyword_tags(item, vocab, stats)`: vocabulary tags named by a 1–4-word phrase of the item's
  title or text ("Hip Hop" finds "hip-hop"). Attributes are not read: they hold URLs, ids and
  other machine text ("http://www.last.fm/music/..." named "lastfm" and "music" for every artist).
  Never proposed: single words shorter than 3 letters and phrases made only of stopwords ("the",
  "and", "of the"). The base confidence is 0.8 for a phrase in the title and 0.6 in the text.
  With `KeywordStats` (what the catalogue teaches; `keyword_stats(items, known, vocab)` over every
  item and its known tags) three more rules apply, as a product would want before writing a tag
  from a word:
  * support — the tag must already be carried by at least `MIN_KEYWORD_ITEMS` items (a tag one
    item carries is one user's label, like "david" or "brown", not an established tag);
  * names — a single word that behaves like a given name in the catalogue's titles (it opens
    many multi-word titles, followed by many different words: "David Bowie", "David Guetta", …;
    `name_like_words`) names no tag;
  * precision — among the tagged items whose own words name the tag, the share that carry it,
    shrunk with `PRIOR_ITEMS` pseudo-items towards an untested match's confidence,
    prior = `UNTESTED_SHARE` · base (0.44 in a title, 0.33 in a text: provisional):
    confidence = (carry + PRIOR_ITEMS · prior) / (named + PRIOR_ITEMS). A word that names many
    items without predicting the tag ("Peter …", "black", "band", "love", "music") falls under
    `MIN_KEYWORD_CONFIDENCE` and is dropped; a word no tagged item's words use stays provisional
    until behaviour confirms it (Last.fm's "Giant Sand" → sand, "Rare Bird" → rare got 0.8 and
    went straight into profiles); "… Blues Band" (5 of 6 tagged items naming blues carry it) is
    confident (0.735).
- `llm_tags(llm, items, vocab, batch_size)`: asks the LLM, a batch at a time, for tags chosen
  from the vocabulary with confidences (schema `LLMTagReply`). Tags outside the vocabulary are
  dropped and counted; a batch whose call fails (timeout, invalid JSON, …) is counted and skipped,
  so the deterministic path carries on. The LLM does see attributes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from tagloop.tools.llm import LLM, LLMUnavailable
from tagloop.tools.tagging.vocabulary import Vocabulary, clean_surface, tag_key

_WORD = re.compile(r"[\w'&+-]+", re.UNICODE)
MAX_PHRASE = 4
TITLE_CONFIDENCE = 0.8
TEXT_CONFIDENCE = 0.6
MIN_KEYWORD_ITEMS = 2  # items that must already carry a tag before a word may propose it
PRIOR_ITEMS = 2.0  # pseudo-items at the untested confidence in the precision estimate
UNTESTED_SHARE = 0.55  # an untested match's confidence, as a share of the base (provisional)
MIN_KEYWORD_CONFIDENCE = 0.3  # below this a keyword match is noise, not a proposal
NAME_MIN_FOLLOWERS = 5  # a name-like word opens titles followed by this many different words…
NAME_LEADING_SHARE = 0.75  # …and opens this share of the titles holding it
# function words (English, plus the articles and prepositions of common catalogue languages):
# never a keyword tag on their own, nor a phrase made only of them
_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves us feat ft featuring vs versus
    el la los las le les un une des du de del da di il lo gli der die das den dem ein eine und y e et
    con per por para en het een van"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
STOP_KEYS = frozenset(tag_key(word) for word in STOPWORDS)
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


def _is_stop(phrase: str) -> bool:
    """A phrase made only of stopwords (and symbols such as "&")."""
    return all(not w or w in STOPWORDS for w in (word.strip("'&+-") for word in phrase.split(" ")))


def named_tags(item: ItemText, vocab: Vocabulary, skip: AbstractSet[str] = frozenset()) -> dict[str, float]:
    """Vocabulary tags the item's title and text name, tag → base confidence; single words in
    `skip` (name-like words) name nothing."""
    found: dict[str, float] = {}
    for text, confidence in ((item.title, TITLE_CONFIDENCE), (item.text, TEXT_CONFIDENCE)):
        for phrase in _phrases(text):
            if " " not in phrase and (len(phrase) < 3 or phrase in skip):
                continue
            if _is_stop(phrase):
                continue
            tag = vocab.canonical(phrase)
            if tag is not None and tag_key(tag) not in STOP_KEYS and found.get(tag, 0.0) < confidence:
                found[tag] = confidence
    return found


@dataclass(frozen=True)
class KeywordStats:
    """What the tagged items teach about keyword matching (module docstring)."""

    support: Mapping[str, int]  # tag → items carrying it (known tags)
    named: Mapping[str, int]  # tag → tagged items whose title or text names it
    carried: Mapping[str, int]  # … of which carry it
    name_like: frozenset[str] = frozenset()  # words that lead titles like a given name

    def confidence(self, tag: str, base: float) -> float:
        if self.support.get(tag, 0) < MIN_KEYWORD_ITEMS:
            return 0.0
        named = self.named.get(tag, 0)
        prior = UNTESTED_SHARE * base
        return (self.carried.get(tag, 0) + PRIOR_ITEMS * prior) / (named + PRIOR_ITEMS)


def keyword_stats(
    items: Iterable[ItemText], known: Iterable[tuple[str, str, float]], vocab: Vocabulary
) -> KeywordStats:
    """Support and precision of keyword matches, from known (item, tag, weight) rows and the
    words of those of `items` that carry known tags; name-like words from every title."""
    items = list(items)
    name_like = name_like_words(it.title for it in items)
    have: dict[str, set[str]] = {}
    for item_id, raw, _ in known:
        tag = vocab.canonical(raw)
        if tag is not None:
            have.setdefault(item_id, set()).add(tag)
    support = Counter(tag for tags in have.values() for tag in tags)
    named: Counter[str] = Counter()
    carried: Counter[str] = Counter()
    for it in items:
        tags = have.get(it.item_id)
        if not tags:
            continue
        for tag in named_tags(it, vocab, name_like):
            named[tag] += 1
            carried[tag] += tag in tags
    return KeywordStats(dict(support), dict(named), dict(carried), name_like)


def name_like_words(titles: Iterable[str]) -> frozenset[str]:
    """Words that behave like given names in a catalogue's titles: they open at least
    `NAME_MIN_FOLLOWERS` multi-word titles, each time followed by another word ("David Bowie",
    "David Guetta", …), and at least `NAME_LEADING_SHARE` of the titles holding them open with
    them. Genre words rarely do both ("Blues Traveler" but "… Blues Band", "Chicago Blues")."""
    holding: Counter[str] = Counter()
    leading: Counter[str] = Counter()
    followers: dict[str, set[str]] = {}
    for title in titles:
        words = _WORD.findall(clean_surface(title))
        holding.update(set(words))
        if len(words) >= 2:
            leading[words[0]] += 1
            followers.setdefault(words[0], set()).add(words[1])
    return frozenset(
        word
        for word, n in leading.items()
        if len(followers[word]) >= NAME_MIN_FOLLOWERS and n >= NAME_LEADING_SHARE * holding[word]
    )


def keyword_tags(item: ItemText, vocab: Vocabulary, stats: KeywordStats | None = None) -> dict[str, float]:
    """Vocabulary tags named in the item's title and text, tag → confidence (module docstring);
    without `stats` only the phrase rules apply."""
    found = named_tags(item, vocab, stats.name_like if stats is not None else frozenset())
    if stats is None:
        return found
    out: dict[str, float] = {}
    for tag, base in found.items():
        confidence = stats.confidence(tag, base)
        if confidence >= MIN_KEYWORD_CONFIDENCE:
            out[tag] = round(confidence, 6)
    return out


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
