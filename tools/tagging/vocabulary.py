"""Tag normalization and the tag vocabulary.

Owns how a raw tag string becomes a canonical tag:
- `clean_surface(s)` cleans a surface form (Unicode NFKC, lower case, `_` → space, collapsed
  whitespace, trimmed punctuation): "  Hip_Hop " → "hip hop". It is the first step of matching,
  not the stored name of a tag: that is `tools/tagging_names.normalize_tag`.
- `tag_key(s)` is the merge key of spelling variants: letters and digits of any script, casefolded,
  accents of Latin letters, spaces, hyphens, apostrophes and dots dropped, "&" read as "and", plus
  a small table of synonyms, so "hip hop", "hip-hop" and
  "hiphop" share the key "hiphop" and "80's", "1980s" and "eighties" share "80s".
- `Vocabulary` is the set of canonical tags with counts and aliases; each key's canonical name is
  its most frequent surface form (ties: shorter, then alphabetical), so the result is
  deterministic. `build_vocabulary(counts)` makes one from raw tag → count pairs.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tagloop.tools.errors import InvalidInput

_SPACES = re.compile(r"\s+")

# merge keys that mean the same tag (key → key)
SYNONYM_KEYS: dict[str, str] = {
    "rnb": "randb",
    "rhythmandblues": "randb",
    "eighties": "80s",
    "seventies": "70s",
    "sixties": "60s",
    "nineties": "90s",
    "fifties": "50s",
    "2000s": "00s",
    "noughties": "00s",
    "electronical": "electronic",
    "femalevocalist": "femalevocalists",
    "femalevocals": "femalevocalists",
    "malevocalist": "malevocalists",
    "malevocals": "malevocalists",
    "rocknroll": "rockandroll",
    "rocknrol": "rockandroll",
    "drumnbass": "drumandbass",
    "dnb": "drumandbass",
    "singersongwriters": "singersongwriter",
}
_DECADE = re.compile(r"^(19)(\d0)s$")


def clean_surface(raw: str) -> str:
    """Clean one surface form; the empty string means "no tag"."""
    text = unicodedata.normalize("NFKC", raw).lower().replace("_", " ")
    text = _SPACES.sub(" ", text).strip(" \t.,;:!?\"'()[]{}")
    return text


def tag_key(raw: str) -> str:
    """The merge key of a tag's spelling variants: its letters and digits of any script, casefolded
    ("Straße" is "strasse"), with the accents of Latin letters dropped ("Café" is "cafe"; the marks
    of other scripts are kept: ビ and ヒ are different letters). A key of two or fewer of those keeps
    `+` and `#` too ("c++" is not "c#"). "" for a tag with none of those (emoji alone). Every word
    is part of the key: "日本 rock" is not "rock"."""
    text = clean_surface(raw).casefold().replace("&", " and ").replace("'", "").replace("’", "")
    kept: list[str] = []
    latin = False  # the last base character was a Latin letter: its combining marks are accents
    for ch in text:
        if unicodedata.combining(ch):
            if not latin:
                kept.append(ch)
            continue
        latin = unicodedata.name(ch, "").startswith("LATIN")
        if latin:
            kept.extend(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        else:
            kept.append(ch)
    key = "".join(ch for ch in kept if _in_key(ch))
    if len(key) <= 2 and not key.isdigit():  # "c++" and "c#" are not both "c"
        key = "".join(ch for ch in kept if _in_key(ch) or ch in "+#")
    decade = _DECADE.match(key)
    if decade and decade.group(1) == "19":
        key = decade.group(2) + "s"
    return SYNONYM_KEYS.get(key, key)


def _in_key(ch: str) -> bool:
    """Letters, digits and the marks that belong to them (Devanagari vowel signs are marks)."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


@dataclass
class Vocabulary:
    """Canonical tags (most frequent first) with their counts and every alias seen."""

    tags: list[str]
    counts: dict[str, float]
    aliases: dict[str, str] = field(default_factory=dict)  # tag_key → canonical tag
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {tag: i for i, tag in enumerate(self.tags)}

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, raw: object) -> bool:
        return isinstance(raw, str) and self.canonical(raw) is not None

    def canonical(self, raw: str) -> str | None:
        """The canonical tag for any spelling variant, or None when it is not in the vocabulary."""
        return self.aliases.get(tag_key(raw))

    def require_nonempty(self) -> None:
        if not self.tags:
            raise InvalidInput("the tag vocabulary is empty: import items with tags first")


def build_vocabulary(
    counts: Mapping[str, float] | Iterable[tuple[str, float]], min_count: float = 1.0
) -> Vocabulary:
    """Merge raw tag counts into a vocabulary; keys whose merged count is below min_count are left out."""
    pairs = counts.items() if isinstance(counts, Mapping) else counts
    by_key: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for raw, count in pairs:
        key = tag_key(raw)
        surface = clean_surface(raw)
        if key and surface:
            by_key[key][surface] += float(count)
    canon: dict[str, str] = {}
    totals: dict[str, float] = {}
    for key, forms in by_key.items():
        total = sum(forms.values())
        if total < min_count:
            continue
        name = min(forms, key=lambda s: (-forms[s], len(s), s))
        canon[key] = name
        totals[name] = totals.get(name, 0.0) + total
    tags = sorted(totals, key=lambda t: (-totals[t], t))
    return Vocabulary(tags=tags, counts=totals, aliases=canon)
