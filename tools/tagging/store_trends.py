"""Emerging tag clusters from the stored event stream (input to `emerging_clusters`).

Collections group what people put together:
- `playlist`: `add_to_playlist` events with `context.playlist_id` (collection = that id);
- `session`: a user's consumption events (play, complete, like, save, add_to_playlist, share)
  split where two events are more than `SESSION_GAP` (30 minutes) apart (collection =
  user:session number, computed in SQL with window functions);
- `auto`: both, each collection a playlist or a session (ids prefixed `p:` / `s:`; an add to a
  playlist counts in its playlist only). It used to
  take playlists alone as soon as one playlist event existed, so ten playlist adds replaced
  16,543 session events.
Events from `now − history` to `now` are read so `first_seen` can tell a new pair from an old one;
item tags are each item's `per_item` (5) heaviest confident ones (confidence ≥ 0.5), which keeps
the pair count of a long session bounded. `find_trends` returns the `Trend`s with a
readable name ("a + b") and which collection kind was used; `progress`, when given, gets a line
per step and per tenth of the events paired. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from tagloop.tools.errors import InvalidInput
from tagloop.tools.tagging.store_autotag import CONSUMED
from tagloop.tools.tagging.trends import CollectionEvent, Trend, emerging_clusters

Collections = Literal["auto", "playlist", "session"]
SESSION_GAP = timedelta(minutes=30)

PLAYLIST_EVENTS = """
    select context->>'playlist_id' as collection_id, item_id, ts from events
    where type = 'add_to_playlist' and item_id is not null and context ? 'playlist_id'
      and ts >= %(since)s and ts < %(now)s
"""
SESSION_EVENTS = """
    with e as (
        select user_id, item_id, ts, lag(ts) over (partition by user_id order by ts, seq) as prev
        from events where item_id is not null and type = any(%(types)s) and ts >= %(since)s and ts < %(now)s
          and not (%(in_playlists)s and type = 'add_to_playlist' and context ? 'playlist_id')),
    s as (
        select user_id, item_id, ts,
               sum(case when prev is null or ts - prev > %(gap)s then 1 else 0 end)
                   over (partition by user_id order by ts rows unbounded preceding) as session
        from e)
    select user_id || ':' || session as collection_id, item_id, ts from s
"""
ITEM_TAGS = """
    select item_id, name from (
        select it.item_id, t.name,
               row_number() over (partition by it.item_id
                                  order by it.weight desc, t.item_count desc, t.name) as r
        from item_tags it join tags t on t.id = it.tag_id
        where it.confidence >= 0.5 and it.item_id = any(%(items)s)) ranked
    where r <= %(per_item)s
"""


@dataclass(frozen=True)
class NamedTrend:
    name: str
    trend: Trend

    def as_dict(self) -> dict[str, Any]:
        t = self.trend
        return {
            "name": self.name,
            "tags": list(t.tags),
            "first_seen": t.first_seen.isoformat(),
            "growth": round(t.growth, 3),
            "size": t.size,
            "previous": t.previous,
            "total": t.total,
        }


@dataclass
class TrendReport:
    collections: str  # playlist | session | playlist+session
    events: int
    trends: list[NamedTrend]


def collection_events(
    conn: psycopg.Connection[Any], now: datetime, since: datetime, collections: Collections = "auto"
) -> tuple[str, list[CollectionEvent]]:
    """The collection kinds used ("playlist", "session" or "playlist+session") and their events in
    [since, now)."""
    span = {"now": now, "since": since}
    kinds = ("playlist", "session") if collections == "auto" else (collections,)
    used, events = [], []
    for kind in kinds:
        if kind == "playlist":
            rows = conn.execute(PLAYLIST_EVENTS, span).fetchall()
        else:
            # under auto, an add to a playlist counts in its playlist, not in a session too
            params = {**span, "types": list(CONSUMED), "gap": SESSION_GAP, "in_playlists": len(kinds) > 1}
            rows = conn.execute(SESSION_EVENTS, params).fetchall()
        prefix = f"{kind[0]}:" if len(kinds) > 1 else ""  # a playlist id may look like a session's
        events += [CollectionEvent(prefix + r["collection_id"], r["item_id"], r["ts"]) for r in rows]
        if rows:
            used.append(kind)
    return "+".join(used) or kinds[-1], events


def find_trends(
    conn: psycopg.Connection[Any],
    now: datetime,
    *,
    window: timedelta = timedelta(days=7),
    history: timedelta = timedelta(days=365),
    collections: Collections = "auto",
    min_size: int = 3,
    min_growth: float = 2.0,
    limit: int = 20,
    per_item: int = 5,
    progress: Callable[[str], None] | None = None,
) -> TrendReport:
    """Emerging tag pairs as of `now` (see `emerging_clusters` for new, growing and size)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput(f"now must be timezone-aware, got {now.isoformat()}")
    if history < 2 * window:
        raise InvalidInput(f"history ({history}) must cover at least two windows ({2 * window})")
    for name, value in (("limit", limit), ("per_item", per_item), ("min_size", min_size)):
        if value < 1:
            raise InvalidInput(f"{name} must be at least 1, got {value}")
    try:
        since = now - history
    except OverflowError:
        raise InvalidInput(f"history ({history}) reaches before the year 1") from None

    def say(line: str) -> None:
        if progress is not None:
            progress(line)

    what = "playlists or sessions" if collections == "auto" else f"{collections}s"
    say(f"trends: reading {what} since {since.date()}")
    kind, events = collection_events(conn, now, since, collections)
    say(f"trends: {len(events):,} events in {kind}s; reading item tags")
    item_tags: dict[str, list[str]] = {}
    for r in conn.execute(ITEM_TAGS, {"items": list({e.item_id for e in events}), "per_item": per_item}):
        item_tags.setdefault(r["item_id"], []).append(r["name"])
    found = emerging_clusters(
        events, item_tags, now, window, min_size=min_size, min_growth=min_growth, limit=limit,
        progress=progress,
    )  # fmt: skip
    return TrendReport(kind, len(events), [NamedTrend(" + ".join(t.tags), t) for t in found])
