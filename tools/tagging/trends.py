"""Emerging tag combinations ("a new microgenre") from collections in recent events.

A collection is whatever groups consumption: `context.playlist_id` of `add_to_playlist` events,
or a session id. `emerging_clusters(events, item_tags, now, window)`:
- follows every collection's items in event-time order; a tag pair is *completed* in a
  collection at the first event after which it holds an item carrying one tag without the other
  and an item carrying the other without the first: a pair one item carries by itself (every lofi
  track also tagged chill) is that item's description, not a combination people made;
- counts, per pair, collections completed in the recent window [now − window, now) and in the
  window before it; `first_seen` is the earliest completion ever;
- keeps pairs that are new (`first_seen` within `novelty` of now, default 2 windows), growing
  (`growth` = (recent + 1)/(previous + 1) ≥ `min_growth`) and big enough (`size` = recent
  collections ≥ `min_size`), best growth first, then size.
Every timestamp must be timezone-aware; a naive one is an `InvalidInput`. `progress`, when given,
gets a line per tenth of the events paired (the pairing is the slow part on a year of sessions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations

from tagloop.tools.errors import InvalidInput


@dataclass(frozen=True)
class CollectionEvent:
    collection_id: str
    item_id: str
    ts: datetime


@dataclass(frozen=True)
class Trend:
    tags: tuple[str, str]
    first_seen: datetime
    size: int  # collections completing the pair in the recent window
    previous: int  # … in the window before
    growth: float  # (size + 1) / (previous + 1)
    total: int  # collections ever holding the pair


def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware, got {ts.isoformat()}")
    return ts


def pair_completions(
    events: Iterable[CollectionEvent],
    item_tags: Mapping[str, Sequence[str]],
    progress: Callable[[str], None] | None = None,
) -> dict[tuple[str, str], dict[str, datetime]]:
    """Tag pair → collection → the time the collection first combined the two tags from different
    items (module docstring)."""
    ordered = sorted(events, key=lambda e: _aware(e.ts, f"event ts of {e.collection_id}/{e.item_id}"))
    seen: dict[str, set[str]] = {}  # collection → its items
    carriers: dict[str, Counter[str]] = {}  # collection → tag → items carrying it
    both: dict[str, Counter[tuple[str, str]]] = {}  # collection → pair → items carrying both
    paired: dict[str, dict[str, set[str]]] = {}  # collection → tag → tags already completed with it
    done: dict[tuple[str, str], dict[str, datetime]] = {}
    step = max(len(ordered) // 10, 1)
    for n, ev in enumerate(ordered, 1):
        if progress is not None and len(ordered) >= 10 and n % step == 0 and n // step <= 10:
            progress(f"trends: tag pairs of {n / len(ordered):.0%} of {len(ordered):,} events")
        items = seen.setdefault(ev.collection_id, set())
        tags = set(item_tags.get(ev.item_id, ()))
        if ev.item_id in items or not tags:
            continue
        items.add(ev.item_id)
        count = carriers.setdefault(ev.collection_id, Counter())
        pair_count = both.setdefault(ev.collection_id, Counter())
        count.update(tags)
        pair_count.update(combinations(sorted(tags), 2))
        partners = paired.setdefault(ev.collection_id, {})
        for a in tags:  # only pairs with one tag on this item (a without b) can change
            with_a = partners.setdefault(a, set())
            for b in count.keys() - tags - with_a:  # set arithmetic: a long session stays fast
                pair = (a, b) if a < b else (b, a)
                if count[b] > pair_count[pair]:  # an earlier item carries b without a
                    done.setdefault(pair, {}).setdefault(ev.collection_id, ev.ts)
                    with_a.add(b)
                    partners.setdefault(b, set()).add(a)
    return done


def emerging_clusters(
    events: Iterable[CollectionEvent],
    item_tags: Mapping[str, Sequence[str]],
    now: datetime,
    window: timedelta,
    *,
    min_size: int = 3,
    min_growth: float = 2.0,
    novelty: timedelta | None = None,
    limit: int = 50,
    progress: Callable[[str], None] | None = None,
) -> list[Trend]:
    """New, growing tag pairs; see the module docstring for the definitions."""
    _aware(now, "now")
    if window <= timedelta(0):
        raise InvalidInput(f"window must be positive, got {window}")
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    horizon = now - (novelty if novelty is not None else 2 * window)
    recent_start, previous_start = now - window, now - 2 * window
    trends: list[Trend] = []
    for pair, by_collection in pair_completions(events, item_tags, progress).items():
        times = [t for t in by_collection.values() if t < now]
        if not times:
            continue
        first = min(times)
        size = sum(recent_start <= t for t in times)
        previous = sum(previous_start <= t < recent_start for t in times)
        growth = (size + 1) / (previous + 1)
        if first >= horizon and size >= min_size and growth >= min_growth:
            trends.append(Trend(pair, first, size, previous, growth, len(times)))
    trends.sort(key=lambda t: (-t.growth, -t.size, t.tags))
    return trends[:limit]
