"""The words a reason uses for what a user does with items of a kind, so a product catalogue is not
told "because you play a lot of running shoes": tracks, artists, podcasts… are played, videos
watched, articles and books read, and any other kind (products, events, courses) gets neutral
words. Every reason goes through here: recommendations (tag, similar-item, cold-item, new-release
and popular reasons) and the message copy. Item kinds are free text (SPEC §3); the families below
are matched case-insensitively, and an unknown kind is `OTHER`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Habit:
    often: str  # "you play a lot of" (a tag follows)
    item: str  # "because you played {}" (a history item's name fills it)
    what: str  # "what you play" (a cold item "tagged X, like what you play")
    provider: str  # "an artist you play" (after "new from P, ")
    popular: str  # the reason of a popular item


LISTEN = Habit(
    often="you play a lot of",
    item="because you played {}",
    what="what you play",
    provider="an artist you play",
    popular="popular with listeners",
)
WATCH = Habit(
    often="you watch a lot of",
    item="because you watched {}",
    what="what you watch",
    provider="a creator you watch",
    popular="popular with viewers",
)
READ = Habit(
    often="you read a lot of",
    item="because you read {}",
    what="what you read",
    provider="an author you read",
    popular="popular with readers",
)
OTHER = Habit(
    often="you're into",
    item="because of your interest in {}",
    what="what you like",
    provider="a brand you like",
    popular="popular with other users",
)

_FAMILIES = {
    LISTEN: "track song album single release artist band playlist mix radio podcast episode audiobook",
    WATCH: "video clip movie film show series trailer stream livestream",
    READ: "article post story book ebook news newsletter blog paper comic essay guide",
}
_BY_KIND = {kind: habit for habit, kinds in _FAMILIES.items() for kind in kinds.split()}


def habit(kind: str | None) -> Habit:
    """The words for items of `kind` (None: the stored default kind, `track`)."""
    if kind is None:
        return LISTEN
    return _BY_KIND.get(kind.strip().lower(), OTHER)


def habit_of(kinds: Iterable[str | None]) -> Habit:
    """The words for a set of items: the most common family among their kinds (ties: the first
    item's); no items: `LISTEN`, as for the default kind."""
    counts = Counter(habit(k) for k in kinds)
    return counts.most_common(1)[0][0] if counts else LISTEN
