"""Tag families: microgenre → genre → broad, so profiles and explanations can speak at any level.

`build_taxonomy(vocab, emb)` is deterministic:
- broad family, by keyword rules over a curated seed (`FAMILIES`: music genres plus non-genre
  families mood, era, place/language, vocals, opinion). English compounds put the head last, so
  the shortest matching *suffix* decides ("pop punk" → punk, "indie pop" → pop, "drum and bass"
  → electronic); otherwise any keyword in the tag, in `FAMILIES` order.
- tags no rule matches take the family of their nearest keyword-assigned neighbours by embedding
  cosine (similarity-weighted vote of the k nearest with cosine ≥ min_sim); else "other".
- genre: family names, seed keywords and decades are their own genre; any other tag's genre is
  its longest proper word suffix that is a more common vocabulary tag of the same family
  ("melodic death metal" → "death metal"), else its nearest more common same-family neighbour by
  embedding (cosine ≥ min_sim), else the family name.
`Taxonomy.level(tag, level)` and `Taxonomy.roll_up(weights, level)` lift tag weights to a level.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tagloop.tools.tagging.vocabulary import Vocabulary, clean_surface

Level = Literal["microgenre", "genre", "broad"]

FAMILIES: dict[str, tuple[str, ...]] = {
    "metal": ("metal", "metalcore", "grindcore", "deathcore", "doom", "thrash", "djent", "sludge", "black"),
    "punk": ("punk", "hardcore", "emo", "screamo", "post-punk", "oi"),
    "hip-hop": ("hip hop", "hip-hop", "hiphop", "rap", "trap", "grime", "gangsta", "turntablism"),
    "electronic": (
        "electronic",
        "electronica",
        "electro",
        "techno",
        "house",
        "trance",
        "dubstep",
        "drum and bass",
        "dnb",
        "idm",
        "ambient",
        "edm",
        "synth",
        "synthpop",
        "downtempo",
        "chillout",
        "breakbeat",
        "trip-hop",
        "trip hop",
        "glitch",
        "industrial",
        "dance",
        "disco",
        "eurodance",
        "jungle",
        "electropop",
        "minimal",
        "chiptune",
        "8-bit",
        "darkwave",
        "ebm",
    ),
    "classical": (
        "classical",
        "baroque",
        "opera",
        "orchestral",
        "symphony",
        "composer",
        "composers",
        "neoclassical",
        "chamber",
        "contemporary classical",
        "piano",
    ),
    "jazz": ("jazz", "bebop", "swing", "big band", "fusion", "nu jazz"),
    "blues": ("blues",),
    "r&b-soul": ("r&b", "rnb", "soul", "funk", "motown", "neo-soul", "gospel"),
    "reggae": ("reggae", "dub", "dancehall", "ska", "roots"),
    "latin": ("latin", "salsa", "reggaeton", "bossa nova", "samba", "tango", "mpb", "cumbia"),
    "country": ("country", "bluegrass", "americana", "honky tonk"),
    "folk": ("folk", "acoustic", "singer-songwriter", "celtic", "world", "flamenco", "chanson"),
    "soundtrack": ("soundtrack", "ost", "score", "video game", "anime", "musical", "film"),
    "pop": ("pop", "j-pop", "k-pop", "kpop", "jpop", "boy band", "teen", "idol", "schlager", "cantopop"),
    "rock": (
        "rock",
        "grunge",
        "shoegaze",
        "shoegazer",
        "psychedelic",
        "garage",
        "britpop",
        "krautrock",
        "indie",
        "alternative",
        "new wave",
        "post-rock",
        "math rock",
        "stoner",
        "progressive",
        "surf",
        "rockabilly",
        "noise",
    ),
    "vocals": (
        "female vocalists",
        "male vocalists",
        "female vocalist",
        "male vocalist",
        "vocal",
        "vocals",
        "female",
        "male",
        "instrumental",
        "female vocals",
        "male vocals",
        "singer",
    ),
    "era": ("oldies", "classic", "retro", "vintage"),
    "place-language": (
        "british",
        "american",
        "german",
        "french",
        "swedish",
        "japanese",
        "brazilian",
        "canadian",
        "polish",
        "russian",
        "korean",
        "spanish",
        "italian",
        "finnish",
        "norwegian",
        "irish",
        "australian",
        "uk",
        "usa",
        "english",
        "greek",
        "dutch",
        "icelandic",
        "danish",
        "turkish",
        "mexican",
        "argentina",
        "chinese",
        "scottish",
        "belgian",
        "portuguese",
        "austrian",
        "ukrainian",
        "czech",
        "israeli",
        "indian",
        "african",
        "german language",
    ),
    "mood": (
        "mellow",
        "chill",
        "beautiful",
        "sad",
        "happy",
        "melancholic",
        "melancholy",
        "romantic",
        "relaxing",
        "energetic",
        "dark",
        "calm",
        "atmospheric",
        "dreamy",
        "uplifting",
        "epic",
        "aggressive",
        "sexy",
        "party",
        "love",
        "emotional",
        "fun",
        "sleep",
        "summer",
        "night",
        "angry",
        "mood",
    ),
    "opinion": (
        "favorite",
        "favorites",
        "favourite",
        "favourites",
        "awesome",
        "seen live",
        "best",
        "cool",
        "good",
        "amazing",
        "great",
        "my",
        "loved",
        "genius",
        "under 2000 listeners",
        "spotify",
    ),
}
_ERA = re.compile(r"^(\d0s|\d0's|(19|20)\d0s|(19|20)\d\d)$")


def _words(tag: str) -> list[str]:
    return clean_surface(tag).replace("&", " and ").replace("-", " ").replace("/", " ").split()


_KEYWORDS: dict[str, str] = {}
for _family, _keys in FAMILIES.items():
    for _key in _keys:
        _KEYWORDS.setdefault(" ".join(_words(_key)), _family)


# the keyword phrases of each family, padded for whole-word matching, computed once
_PHRASES = [(family, [f" {' '.join(_words(k))} " for k in keys]) for family, keys in FAMILIES.items()]


def rule_family(tag: str) -> str | None:
    """The broad family keyword rules give a tag, or None."""
    words = _words(tag)
    if not words:
        return None
    if any(_ERA.match(w) for w in words):
        return "era"
    for start in range(len(words) - 1, -1, -1):  # suffixes, shortest first
        family = _KEYWORDS.get(" ".join(words[start:]))
        if family:
            return family
    joined = f" {' '.join(words)} "
    for family, phrases in _PHRASES:
        if any(phrase in joined for phrase in phrases):
            return family
    return None


@dataclass
class Taxonomy:
    broad: dict[str, str]
    genre: dict[str, str]

    def level(self, tag: str, level: Level) -> str:
        if level == "microgenre":
            return tag
        if level == "genre":
            return self.genre.get(tag, tag)
        return self.broad.get(tag, "other")

    def roll_up(self, weights: Mapping[str, float], level: Level) -> dict[str, float]:
        """Sum tag weights into their parents at `level`, heaviest first."""
        out: dict[str, float] = defaultdict(float)
        for tag, weight in weights.items():
            out[self.level(tag, level)] += weight
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def build_taxonomy(
    vocab: Vocabulary, emb: np.ndarray | None = None, k: int = 10, min_sim: float = 0.3
) -> Taxonomy:
    """Assign every vocabulary tag a broad family and a genre; `emb` rows follow `vocab.tags`."""
    tags = vocab.tags
    broad: dict[str, str] = {}
    for tag in tags:
        family = rule_family(tag)
        if family:
            broad[tag] = family
    sims = emb @ emb.T if emb is not None and len(tags) else None
    if sims is not None:
        for i, tag in enumerate(tags):
            if tag in broad or not np.any(emb[i]):  # type: ignore[index]
                continue
            order = np.argsort(-sims[i], kind="stable")
            votes: dict[str, float] = defaultdict(float)
            for j in order[: k + 1]:
                if j != i and sims[i, j] >= min_sim and tags[j] in broad and rule_family(tags[j]):
                    votes[broad[tags[j]]] += float(sims[i, j])
            if votes:
                broad[tag] = max(votes, key=lambda f: (votes[f], f))
    for tag in tags:
        broad.setdefault(tag, "other")
    genre: dict[str, str] = {}
    for i, tag in enumerate(tags):
        words = _words(tag)
        if tag in FAMILIES or " ".join(words) in _KEYWORDS or (len(words) == 1 and _ERA.match(words[0])):
            genre[tag] = tag  # family names, seed keywords and decades are genre-level already
            continue
        count = vocab.counts[tag]

        def fits(parent: str | None, count: float = count, family: str = broad[tag]) -> bool:
            return parent is not None and vocab.counts[parent] > count and broad.get(parent) == family

        parent = next(
            (p for s in range(1, len(words)) if fits(p := vocab.canonical(" ".join(words[s:])))), None
        )
        if parent is None and sims is not None and np.any(emb[i]):  # type: ignore[index]
            for j in np.argsort(-sims[i], kind="stable")[:k]:
                if j != i and sims[i, j] >= min_sim and fits(tags[j]):
                    parent = tags[j]
                    break
        genre[tag] = parent or broad[tag]
    return Taxonomy(broad=broad, genre=genre)
