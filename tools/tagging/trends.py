"""Emerging tag combinations ("a new microgenre") from collections in recent events.

A collection is whatever groups consumption: `context.playlist_id` of `add_to_playlist` events,
or a session id. `emerging_clusters(events, item_tags, now, window)`:
- gives every collection the union of its items' tags, in event-time order; a tag pair is
  *completed* in a collection at the first event after which the collection holds both tags;
- counts, per pair, collections completed in the recent window [now − window, now) and in the
  window before it; `first_seen` is the earliest completion ever;
- keeps pairs that are new (`first_seen` within `novelty` of now, default 2 windows), growing
  (`growth` = (recent + 1)/(previous + 1) ≥ `min_growth`) and big enough (`size` = recent
  collections ≥ `min_size`), best growth first, then size.
Every timestamp must be timezone-aware; a naive one is an `InvalidInput`. `progress`, when given,
gets a line per tenth of the events paired (the pairing is the slow part on a year of sessions).
"""

from __future__ import annotations

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
    """Tag pair → collection → the time the collection first held both tags."""
    ordered = sorted(events, key=lambda e: _aware(e.ts, f"event ts of {e.collection_id}/{e.item_id}"))
    held: dict[str, set[str]] = {}
    done: dict[tuple[str, str], dict[str, datetime]] = {}
    step = max(len(ordered) // 10, 1)
    for n, ev in enumerate(ordered, 1):
        if progress is not None and len(ordered) >= 10 and n % step == 0 and n // step <= 10:
            progress(f"trends: tag pairs of {n / len(ordered):.0%} of {len(ordered):,} events")
        tags = set(item_tags.get(ev.item_id, ()))
        have = held.setdefault(ev.collection_id, set())
        new = tags - have
        if not new:
            continue
        pairs = {tuple(sorted(p)) for p in combinations(sorted(have | tags), 2) if set(p) & new}
        for a, b in pairs:
            done.setdefault((a, b), {}).setdefault(ev.collection_id, ev.ts)
        have |= tags
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
