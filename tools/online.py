"""Online profile updates: a batch of committed events changes its users' profiles incrementally
(no rebuild), in the caller's transaction — called by the profile folder (`tools.profile_folder`).

For each user in the batch the stored tag vector is decayed from `decayed_to` to `now`
(half-life from settings) and each new event adds `event_weight × decay(now − ts) × item-tag
weight` to the item's confident tags — the same weights as `tools.profiles.rebuild_profiles`.
On top of those weights:
- replays: a play/complete of an item the user played within `replay_window` earns `replay_bonus`
  (a listen arriving after a later one of the same item: the pair's later listen earns it), while
  both listens are within `replay_window` of `now` (older ones are forgotten between folds, so
  older pairs earn nothing in any batch: a backfill folds the same in one batch or many);
- skips are calibrated with the user's running skip rate (counts kept in `stats.counts`);
- the local hour-of-week histogram is `user_profiles.hour_of_week` (int[]); `stats` keeps device,
  region, source counts, per-source tag preferences and engagement per channel with our messages;
- events carrying a `message_id` of a tagloop message sent to the event's own user are credited to
  its decision (`decision_feedback`); another user's message id credits nothing.
With `seqs` (event id → events.seq) an event at or below its user's `folded_seq` is skipped (it is
in the profile already), and `folded_upto` marks the users' events up to that seq as folded.

Concurrency is optimistic: profiles are read unlocked, folded, then written by one UPDATE that
locks the rows in user-id order and writes those whose `xmin` is still the one read (the others are
read again under the lock and folded again). Profiles travel as text parsed with orjson and one
JSON document (`json_to_recordset`); tag weights are keyed by sparsevec text index (tag id + 1)."""

from __future__ import annotations

import functools
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg

from tagloop.policies.guards import zone
from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.records import EventRecord
from tagloop.tools.profiles import decay, event_weight, skip_rate, sparsevec_parse, sparsevec_text
from tagloop.tools.store.users import json_param

POSITIVE = frozenset({"like", "save", "add_to_playlist", "share", "complete"})
NEGATIVE = frozenset({"dislike", "unsubscribe", "dismiss"})
LISTENS = frozenset({"play", "complete"})
REGION_KEYS = ("region", "location", "country")
log = logging.getLogger("tagloop.online")


@dataclass(frozen=True)
class OnlineConfig:
    half_life_days: float = 30.0
    replay_window_s: float = 3 * 86400.0
    replay_bonus: float = 2.0
    recent_cap: int = 200  # items remembered for replay detection
    new_tag_below: float = 0.5  # a tag whose profile weight is below this is "new" to the user
    burst_plays: int = 3  # plays of a new tag within burst_window_s that make a burst
    burst_window_s: float = 3600.0
    source_tag_cap: int = 20


@dataclass
class OnlineResult:
    users: int = 0
    credited_decisions: int = 0
    bursts: dict[str, int] = field(default_factory=dict)  # user → tag id of a new-tag play burst


_ENSURE = """
insert into user_profiles (user_id, decayed_to)
select u, %(now)s from unnest(%(users)s::text[]) as u
where not exists (select from user_profiles p where p.user_id = u) order by u
on conflict (user_id) do nothing
"""
_READ = """
select p.user_id, p.xmin::text as version, p.tags::text as tags, p.decayed_to, p.n_events,
       p.stats::text as stats, p.hour_of_week::text as hour_of_week, p.folded_seq, u.timezone
from user_profiles p join users u on u.id = p.user_id
where p.user_id = any(%(users)s)
"""
_LOCKED_READ = _READ + "order by p.user_id for update of p"
_ITEM_TAGS = """
select item_id, tag_id, weight from item_tags where item_id = any(%(items)s) and confidence >= 0.5
"""
_MESSAGES = """
select id::text as id, user_id, decision_id, channel from messages where id = any(%(ids)s::uuid[])
"""
_SAVE = """
update user_profiles p set tags = s.tags::sparsevec(1000000), decayed_to = %(now)s, n_events = s.n_events,
       stats = s.stats, hour_of_week = s.hour_of_week, updated_at = now(),
       folded_seq = greatest(p.folded_seq, coalesce(%(folded_upto)s::bigint, 0))
from (select s.*, q.xmin::text as current
      from json_to_recordset(%(rows)s::json)
           as s(user_id text, version text, tags text, n_events int, stats jsonb, hour_of_week int[])
      join user_profiles q on q.user_id = s.user_id
      order by s.user_id for update of q) as s
where p.user_id = s.user_id and (s.version is null or s.current = s.version)
returning p.user_id
"""
_CREDIT = """
insert into decision_feedback as f (decision_id, user_id, channel, opens, clicks, converts, negatives,
                                    other, reward, first_event_at, last_event_at)
values (%(decision_id)s, %(user_id)s, %(channel)s, %(opens)s, %(clicks)s, %(converts)s, %(negatives)s,
        %(other)s, %(reward)s, %(first)s, %(last)s)
on conflict (decision_id) do update set opens = f.opens + excluded.opens, clicks = f.clicks + excluded.clicks,
    converts = f.converts + excluded.converts, negatives = f.negatives + excluded.negatives,
    other = f.other + excluded.other, reward = f.reward + excluded.reward,
    first_event_at = least(f.first_event_at, excluded.first_event_at),
    last_event_at = greatest(f.last_event_at, excluded.last_event_at)
"""


Messages = dict[tuple[str, str], dict[str, Any]]  # (message id, its user) → id, decision, channel
# item → (tag id, sparsevec text index (tag id + 1), stats key (tag id), weight), as text once
ItemTags = dict[str, list[tuple[int, str, str, float]]]


def apply_events(
    conn: psycopg.Connection[Any],
    events: Sequence[EventRecord],
    *,
    now: datetime,
    config: OnlineConfig,
    seqs: Mapping[str, int] | None = None,
    folded_upto: int | None = None,
) -> OnlineResult:
    """Fold newly stored `events` into their users' profiles (users must exist). Never commits."""
    if not events:
        return OnlineResult()
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events if e.item_id})
    message_ids = sorted({e.message_id for e in events if e.message_id and _is_uuid(e.message_id)})
    with conn.pipeline():
        conn.execute(_ENSURE, {"users": users, "now": now})
        read = conn.execute(_READ, {"users": users})
        tag_rows = conn.execute(_ITEM_TAGS, {"items": items})
        message_rows = conn.execute(_MESSAGES, {"ids": message_ids})
    profiles = read.fetchall()
    item_tags: ItemTags = defaultdict(list)
    for r in tag_rows.fetchall():
        tag_id = int(r["tag_id"])
        item_tags[r["item_id"]].append((tag_id, str(tag_id + 1), str(tag_id), float(r["weight"])))
    messages = {(r["id"], r["user_id"]): r for r in message_rows.fetchall()}  # only its own user's
    by_user: dict[str, list[EventRecord]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e.ts):
        by_user[e.user_id].append(e)
    result = OnlineResult(users=len(by_user))
    fold = functools.partial(
        _fold_rows,
        by_user=by_user,
        item_tags=item_tags,
        messages=messages,
        now=now,
        config=config,
        bursts=result.bursts,
        seqs=seqs,
    )
    saves = fold(profiles)
    credits = _credits(events, messages)
    result.credited_decisions = len(credits)
    with conn.pipeline(), conn.cursor() as cur:
        saved = conn.execute(_SAVE, {"now": now, "rows": json_param(saves), "folded_upto": folded_upto})
        if credits:
            cur.executemany(_CREDIT, credits)
    changed = sorted(set(by_user) - {r["user_id"] for r in saved.fetchall()})
    if changed:  # committed by a concurrent batch since the read: fold again, now under the lock
        fresh = conn.execute(_LOCKED_READ, {"users": changed}).fetchall()
        conn.execute(
            _SAVE,
            {"now": now, "rows": json_param(fold(fresh, check_version=False)), "folded_upto": folded_upto},
        )
    return result


def _fold_rows(
    rows: list[dict[str, Any]],
    *,
    by_user: dict[str, list[EventRecord]],
    item_tags: ItemTags,
    messages: Messages,
    now: datetime,
    config: OnlineConfig,
    bursts: dict[str, int],
    seqs: Mapping[str, int] | None = None,
    check_version: bool = True,
) -> list[dict[str, Any]]:
    """The new profile rows of `rows` (as read) with their users' events folded in; bursts noted."""
    saves = []
    for row in rows:
        user_id = row["user_id"]
        user_events = by_user[user_id]
        if seqs is not None:  # events already in the profile (a read-your-writes fold, a rebuild)
            user_events = [e for e in user_events if seqs[e.id] > row["folded_seq"]]
        tags, stats, histogram, burst = _fold(row, user_events, item_tags, messages, now, config)
        bursts.pop(user_id, None)
        if burst is not None:
            bursts[user_id] = burst
        saves.append(
            {
                "user_id": user_id,
                "version": row["version"] if check_version else None,
                "tags": sparsevec_text(tags),
                "n_events": int(row["n_events"]) + len(user_events),
                "stats": stats,
                "hour_of_week": histogram,
            }
        )
    return saves


def _fold(
    row: dict[str, Any],
    events: list[EventRecord],
    item_tags: ItemTags,
    messages: Messages,
    now: datetime,
    config: OnlineConfig,
) -> tuple[dict[str, float], dict[str, Any], list[int], int | None]:
    """The user's decayed tag weights plus this batch, the new stats and hour-of-week histogram, and
    a burst tag (if any)."""
    shrink = decay((now - row["decayed_to"]).total_seconds(), config.half_life_days)
    before = sparsevec_parse(row["tags"])
    tags = {k: v * shrink for k, v in before.items()}
    stats = _init_stats(orjson.loads(row["stats"]) if row["stats"] else {}, int(row["n_events"]))
    counts: dict[str, int] = stats["counts"]
    for e in events:
        counts[e.type] = counts.get(e.type, 0) + 1
    listened = sum(counts.get(t, 0) for t in ("skip", "play", "complete"))
    rate = skip_rate(counts.get("skip", 0), listened)
    stats["skip_rate"] = round(rate, 4)
    zone = _zone(row["timezone"])
    recent: dict[str, float] = stats["recent"]
    fresh: dict[str, list[float]] = stats["fresh"]
    histogram = _histogram(row["hour_of_week"], stats.pop("hour_of_week", None))
    burst: int | None = None
    devices, sources, regions = stats["devices"], stats["sources"], stats["regions"]
    channels, source_tags = stats["channels"], stats["source_tags"]
    half_life_s = config.half_life_days * 86400.0  # decay() inlined: the loop runs for every event
    now_s = now.timestamp()
    for e in events:
        try:
            local = e.ts.astimezone(zone) if zone is not None else None
        except OverflowError:  # an event stored before ingest bounded `ts` (fields.MIN_TS/MAX_TS)
            local = None
        if local is not None:
            histogram[local.weekday() * 24 + local.hour] += 1
        context = e.context
        if context:
            _count(devices, context.get("device"))
            _count(sources, context.get("source"))
            for region_key in REGION_KEYS:
                if context.get(region_key):
                    _count(regions, context[region_key])
                    break
        if e.message_id:
            message = messages.get((e.message_id, e.user_id))
            if message is not None and message["channel"]:
                channel = channels.setdefault(message["channel"], {})
                channel[e.type] = channel.get(e.type, 0) + 1
        if not e.item_id:
            continue
        weight = event_weight(e.type, e.value, rate)
        epoch = e.ts.timestamp()
        listen = e.type in LISTENS
        decayed = weight * 0.5 ** (max((now - e.ts).total_seconds(), 0.0) / half_life_s)
        if listen:
            last = recent.get(e.item_id)
            # a pair counts only while both listens are within the window of `now`, as `_trim`
            # keeps them between folds: the same listens pair alike however they were batched
            if (
                last is not None
                and 0 < abs(epoch - last) <= config.replay_window_s
                and now_s - min(epoch, last) <= config.replay_window_s
            ):
                # the later listen of the pair is the replay: an earlier one arriving late earns
                # the bonus at the later one's age, as if they had come in order
                later = max(epoch, last)
                decayed += config.replay_bonus * decay(now.timestamp() - later, config.half_life_days)
                stats["replays"] = stats.get("replays", 0) + 1
            recent[e.item_id] = max(epoch, last or 0.0)
        source = context.get("source")
        by_source = isinstance(source, str) and source
        per_source: dict[str, float] | None = None
        for tag_id, key, stat_key, tag_weight in item_tags.get(e.item_id, ()):
            delta = decayed * tag_weight
            tags[key] = tags.get(key, 0.0) + delta
            if by_source and delta:
                if per_source is None:
                    per_source = source_tags.setdefault(source, {})
                per_source[stat_key] = round(per_source.get(stat_key, 0.0) + delta, 4)
            if not listen:
                continue
            seen = fresh.get(stat_key)
            if seen is not None or before.get(key, 0.0) * shrink < config.new_tag_below:
                if seen is None or epoch - seen[1] > config.burst_window_s:
                    seen = [0.0, epoch]
                seen[0] += 1
                fresh[stat_key] = seen
                if seen[0] >= config.burst_plays:
                    burst = tag_id
    _trim(stats, now_s, config)
    return tags, stats, histogram, burst


@functools.lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo | None:
    """A user's time zone; None for a name this machine's tz database lacks (stored by another
    tagloop's newer tzdata, or by hand): that user's events fold without their hour of week, where
    the error rolled back the whole batch and the folder retried it forever, updating no profile
    of anyone. Said once per process and zone."""
    try:
        return zone(name)
    except InvalidInput:
        log.warning("event=unknown_time_zone zone=%r: events fold without their hour of week", name)
        return None


def _init_stats(stats: dict[str, Any], n_events: int) -> dict[str, Any]:
    """Fill the keys the online update keeps (a profile from `rebuild_profiles` has only some)."""
    if "counts" not in stats:
        skips = round(float(stats.get("skip_rate", 0.0)) * n_events)
        stats["counts"] = {"skip": skips, "play": n_events - skips}
    for key in ("devices", "sources", "regions", "channels", "source_tags", "recent", "fresh"):
        stats[key] = dict(stats.get(key) or {})
    return stats


def _histogram(text: str | None, legacy: Any) -> list[int]:
    """The stored `{0,3,…}` array (or a pre-0016 stats list) as 168 counts."""
    parsed = orjson.loads("[" + text[1:-1] + "]") if text else legacy
    return list(parsed) if isinstance(parsed, list) and len(parsed) == 168 else [0] * 168


def _count(bucket: dict[str, int], value: Any) -> None:
    if isinstance(value, str) and value:
        bucket[value[:64]] = bucket.get(value[:64], 0) + 1


def _trim(stats: dict[str, Any], now: float, config: OnlineConfig) -> None:
    """Bound what the stats remember: recent items, fresh tags and per-source tags (sorted only
    when over their caps: jsonb keeps no key order)."""
    recent = {k: v for k, v in stats["recent"].items() if now - v <= config.replay_window_s}
    if len(recent) > config.recent_cap:
        recent = dict(sorted(recent.items(), key=lambda kv: -kv[1])[: config.recent_cap])
    stats["recent"] = recent
    stats["fresh"] = {k: v for k, v in stats["fresh"].items() if now - v[1] <= config.burst_window_s}
    for source, weights in stats["source_tags"].items():
        if len(weights) > config.source_tag_cap:
            best = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[: config.source_tag_cap]
            stats["source_tags"][source] = dict(best)


def _credits(events: Sequence[EventRecord], messages: Messages) -> list[dict[str, Any]]:
    """Per decision: the batch's engagement with the message it sent, summed."""
    totals: dict[str, dict[str, Any]] = {}
    for e in events:
        message = messages.get((e.message_id or "", e.user_id))
        if message is None:
            continue
        decision = str(message["decision_id"])
        t = totals.setdefault(
            decision,
            {
                "decision_id": decision,
                "user_id": e.user_id,
                "channel": message["channel"],
                "opens": 0,
                "clicks": 0,
                "converts": 0,
                "negatives": 0,
                "other": 0,
                "reward": 0.0,
                "first": e.ts,
                "last": e.ts,
            },
        )
        key = {"open": "opens", "click": "clicks", "convert": "converts"}.get(e.type)
        t[key or ("negatives" if e.type in NEGATIVE else "other")] += 1
        t["reward"] += event_weight(e.type, e.value)
        t["first"], t["last"] = min(t["first"], e.ts), max(t["last"], e.ts)
    return list(totals.values())


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
