"""Tag-name normalisation used wherever a tag enters tagloop (imports, API, auto-tagging).

Lower case, Unicode NFKC, `&` → `and`, and the separators space, hyphen, underscore and slash
folded so "Hip Hop", "hip-hop" and "hip_hop" are one tag; "hiphop"-style run-together synonyms are
merged by the tagging vocabulary, which owns the alias table.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\s_\-/]+")


def normalize_tag(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).strip().lower().replace("&", " and ")
    return _SEPARATORS.sub("-", text).strip("-")
