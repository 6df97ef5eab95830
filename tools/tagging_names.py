"""Tag-name normalisation used wherever a tag enters tagloop (imports, API, auto-tagging).

Lower case, Unicode NFKC, invisible format characters dropped, `&` → `and`, and the separators
space, hyphen, underscore and slash folded so "Hip Hop", "hip-hop" and "hip_hop" are one tag.
Spelling variants are then merged by the tagging vocabulary's `tag_key` where one stored name can
be chosen from the key alone: decades ("80's", "1980s", "eighties" → "80s") and the seed tags of
the taxonomy ("hiphop" → "hip-hop", "rnb" → "r-and-b", "female vocalist" → "female-vocalists").
Any other variants that share a key are merged in the store by `tagloop tag vocab` (the most used
spelling wins, the rest become aliases).
A name without a letter or digit is no tag.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from tagloop.tools.tagging.taxonomy import FAMILIES
from tagloop.tools.tagging.vocabulary import tag_key

_SEPARATORS = re.compile(r"[\s_\-/]+")
_DECADE_KEY = re.compile(r"^\d0s$")


# joiners shape words (emoji sequences, Persian, Indic scripts); every other format character is
# invisible (zero-width space, word joiner, soft hyphen, direction marks, byte order mark)
_KEEP_FORMAT = frozenset("\u200c\u200d")


def _folded(name: str) -> str:
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if ch in _KEEP_FORMAT or unicodedata.category(ch) != "Cf")
    text = text.strip().lower().replace("&", " and ")
    return _SEPARATORS.sub("-", text).strip("-\u200c\u200d")


@cache
def _preferred() -> dict[str, str]:
    """tag_key → stored name for the taxonomy's seed tags (the first spelling listed wins)."""
    out: dict[str, str] = {}
    for keys in FAMILIES.values():
        for name in keys:
            out.setdefault(tag_key(name), _folded(name))
    return out


def normalize_tag(name: str) -> str:
    """The stored name of a tag ("" when the name has no letter or digit: "...", a zero-width space,
    an emoji alone)."""
    text = _folded(name)
    if not any(ch.isalnum() for ch in text):
        return ""
    key = tag_key(name)
    if _DECADE_KEY.match(key):
        return key
    return _preferred().get(key, text)


def display_tag(name: str) -> str:
    """A stored tag name as people write it, for explanations and message copy: "r-and-b" is
    "r & b", "female-vocalists" is "female vocalists" (names stay as stored everywhere else)."""
    return name.replace("-and-", " & ").replace("-", " ")
