"""Validation of imported and posted records (items, users, events) against SPEC §3.

Hand-written checks rather than a model per row: an import of a million events must stay well
under a minute, and every failure names its field. Unknown fields go to `attributes` (items,
users) or `context` (events), never dropped. CSV cells arrive as strings: numbers, JSON objects
and tag lists ("a|b|c" or JSON) are parsed from them. Every value must be storable: no NUL, no
unpaired surrogate, no NaN or infinite number, objects at most `MAX_DEPTH` levels deep.

Items and users are upserts that merge: `given` names the fields the record carries, and only
those replace what is stored (loader.store_items/store_users). A field given as null clears it
where a stored value can be empty (provider, text, locale, tags, channels, consent, attributes);
title, kind, timezone and created_at given as null keep the stored value (new records get the
defaults: '', 'track', 'UTC', the time of the import).
"""

from __future__ import annotations

import difflib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tagloop.policies.config import near_miss_channel
from tagloop.tools.ingest.fields import (
    MAX_ID,
    VALUE_CAP,
    FieldError,
    check_json,
    float_field,
    id_field,
    object_field,
    str_field,
    tags_field,
    timezone_field,
    ts_field,
    with_unknown,
)
from tagloop.tools.messaging.channels import email_address

EVENT_TYPES = frozenset(
    [
        "impression",
        "play",
        "complete",
        "skip",
        "like",
        "dislike",
        "save",
        "add_to_playlist",
        "share",
        "open",
        "click",
        "convert",
        "dismiss",
        "unsubscribe",
    ]
)
MAX_AHEAD = timedelta(days=1)  # how far an event's ts may lie past the clock (skewed senders)
EVENT_NAMESPACE = uuid.UUID("6f1b8a52-3c1e-5d0a-9a57-7461676c6f6f")


ITEM_FIELDS = frozenset({"id", "title", "kind", "provider", "tags", "text", "created_at", "attributes"})
USER_FIELDS = frozenset({"id", "timezone", "locale", "channels", "consent", "attributes"})
EVENT_FIELDS = frozenset({"id", "user_id", "type", "item_id", "ts", "value", "message_id", "context"})


@dataclass
class ItemRecord:
    """An item upsert. None in `title`, `kind`, `created_at` means "keep" (defaults for a new
    item); `provider`, `text`, `tags` replace the stored value only when named in `given`;
    `attributes` replace the stored object when "attributes" is in `given`, else they are merged
    into it key by key (the record's unknown fields)."""

    id: str
    title: str | None
    kind: str | None
    provider: str | None
    tags: dict[str, float]
    text: str | None
    created_at: datetime | None
    attributes: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset(ITEM_FIELDS)


@dataclass
class UserRecord:
    """A user upsert: None in `timezone` keeps the stored zone (UTC for a new user); `locale`,
    `channels`, `consent` replace the stored value only when named in `given`; `attributes` as for
    items."""

    id: str
    timezone: str | None
    locale: str | None
    channels: dict[str, str]
    consent: dict[str, bool]
    attributes: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset(USER_FIELDS)


@dataclass
class EventRecord:
    id: str
    user_id: str
    type: str
    item_id: str | None
    ts: datetime
    value: float | None
    message_id: str | None
    context: dict[str, Any] = field(default_factory=dict)


MAX_TITLE = 1_000  # characters of an item's title
# UTF-8 bytes of an item's title and id together: both are in the btree entry of
# items_provider_created_idx (with created_at and a provider id of up to 1 KB), which PostgreSQL
# caps at 2,704 bytes; more was a ProgramLimitExceeded traceback (HTTP: a 503 retried for ever)
MAX_TITLE_ID_BYTES = 1_500


def parse_item(data: dict[str, Any], *, now: datetime | None = None) -> ItemRecord:
    """An item record; `created_at` may lie at most `MAX_AHEAD` past `now` (the clock when None)."""
    attributes = with_unknown(data, ITEM_FIELDS, "attributes")
    tags = data.get("tags")
    if isinstance(tags, list | dict):
        check_json("tags", tags)
    item_id = id_field(data, "id")
    return ItemRecord(
        id=item_id,
        title=_title(data, item_id),
        kind=str_field(data, "kind", default=None) or None,
        provider=str_field(data, "provider", default=None, max_len=MAX_ID) or None,
        tags=tags_field(tags),
        text=str_field(data, "text", default=None),
        created_at=_not_ahead(
            data, "created_at", now or datetime.now(UTC), "an item exists before it is sent"
        ),
        attributes=attributes,
        given=_given(data, ITEM_FIELDS),
    )


def _title(data: dict[str, Any], item_id: str) -> str | None:
    """The item's title, stripped; None when blank (not given)."""
    title = (str_field(data, "title", default=None) or "").strip()
    if len(title) > MAX_TITLE:
        raise FieldError("title", f"is longer than {MAX_TITLE:,} characters ({len(title):,})")
    size = len(title.encode()) + len(item_id.encode())
    if size > MAX_TITLE_ID_BYTES:
        raise FieldError(
            "title",
            f"is longer than {MAX_TITLE_ID_BYTES:,} bytes of UTF-8 together with the item id ({size:,});"
            " the catalogue's index holds no more",
        )
    return title or None


def parse_user(data: dict[str, Any]) -> UserRecord:
    attributes = with_unknown(data, USER_FIELDS, "attributes")
    channels = object_field(data, "channels")
    check_json("channels", channels)
    channels = _folded_channels("channels", channels)
    for name, address in channels.items():
        _known_channel("channels", name)
        if not isinstance(address, str):
            raise FieldError(f"channels.{name}", f"must be a string address, got {type(address).__name__}")
        _check_address(name, address)
    consent = object_field(data, "consent")
    check_json("consent", consent)
    for name, given in consent.items():
        if isinstance(given, str) and given.lower() in {"true", "false"}:
            consent[name] = given.lower() == "true"
        elif not isinstance(given, bool):
            raise FieldError(f"consent.{name}", f"must be true or false, got {given!r}")
    consent = _folded_channels("consent", consent)
    for name in consent:
        _known_channel("consent", name)
    zone = data.get("timezone")
    return UserRecord(
        id=id_field(data, "id"),
        timezone=None if zone is None else timezone_field(zone),
        locale=str_field(data, "locale", default=None),
        channels=channels,
        consent=consent,
        attributes=attributes,
        given=_given(data, USER_FIELDS),
    )


def _given(data: dict[str, Any], known: frozenset[str]) -> frozenset[str]:
    """The known fields the record names (for a merge); "attributes" only when given as such."""
    return frozenset(key for key in data if key in known)


def merged_item(old: ItemRecord, new: ItemRecord) -> ItemRecord:
    """Two lines for the same item as one upsert: the later line's given fields win."""
    return ItemRecord(
        id=new.id,
        title=old.title if new.title is None else new.title,
        kind=new.kind or old.kind,
        provider=new.provider if "provider" in new.given else old.provider,
        tags=new.tags if "tags" in new.given else old.tags,
        text=new.text if "text" in new.given else old.text,
        created_at=new.created_at or old.created_at,
        attributes=new.attributes if "attributes" in new.given else old.attributes | new.attributes,
        given=old.given | new.given,
    )


def merged_user(old: UserRecord, new: UserRecord) -> UserRecord:
    """Two lines for the same user as one upsert: the later line's given fields win."""
    return UserRecord(
        id=new.id,
        timezone=new.timezone or old.timezone,
        locale=new.locale if "locale" in new.given else old.locale,
        channels=new.channels if "channels" in new.given else old.channels,
        consent=new.consent if "consent" in new.given else old.consent,
        attributes=new.attributes if "attributes" in new.given else old.attributes | new.attributes,
        given=old.given | new.given,
    )


# common misnamings of item fields: kept in attributes as SPEC §3 asks, but worth a warning
_ITEM_ALIASES = {"artist": "provider", "creator": "provider", "brand": "provider", "author": "provider"}


def item_warnings(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, reason) for what a valid item line probably got wrong: unknown top-level fields that
    are near misses of known ones (`titel`, `tag`) or common names of one (`artist`). They are kept
    in `attributes`, so the item would silently lack the field the line meant to give."""
    out = []
    for key in data:
        if key in ITEM_FIELDS or not isinstance(key, str):
            continue
        meant = _ITEM_ALIASES.get(key.lower())
        if meant is None:
            close = difflib.get_close_matches(key.lower(), sorted(ITEM_FIELDS), n=1, cutoff=0.75)
            meant = close[0] if close else None
        if meant is not None and meant not in data:
            out.append((key, f"unknown field, kept in attributes; did you mean {meant!r}?"))
    tags = data.get("tags")
    if isinstance(tags, str) and tags.strip()[:1] not in ("[", "{") and "|" not in tags:
        separator = next((c for c in ",;" if c in tags), None)
        if separator:
            out.append(("tags", f"one tag {tags.strip()[:60]!r} holds {separator!r}; separate tags with '|'"))
    return out


def _folded_channels(field: str, given: dict[str, Any]) -> dict[str, Any]:
    """`given` with its channel names as sends compare them (stripped, lower-case, like an
    unsubscribe's): stored as given, `EMAIL` was a custom channel, so the user had no email consent
    and the address escaped its check. Two names that fold alike with different values are an error."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = key.strip().lower()
        if not name:
            raise FieldError(field, f"has an empty channel name {key!r}")
        if name in out and out[name] != value:
            raise FieldError(
                f"{field}.{name}", "is given twice with different values (channel names ignore case)"
            )
        out[name] = value
    return out


def _known_channel(field: str, name: str) -> None:
    """A channel name that is a near miss of a built-in one (`emial`) is a typo that would leave the
    user without that channel's consent or address; other names are custom channels."""
    meant = near_miss_channel(name)
    if meant:
        raise FieldError(f"{field}.{name}", f"no such channel; did you mean {meant!r}?")


def _unsubscribe_channel(value: Any, field: str) -> str:
    """The channel an unsubscribe names, as sends compare it: lower-case, '*' (every channel) when
    empty; one that cannot match a channel (not a string, a near miss of a built-in one) is an
    error — stored as given, 'File' or 'fiel' matched nothing and the sends went on."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "*"
    if not isinstance(value, str):
        raise FieldError(field, f"must be a channel name or '*', got {type(value).__name__}")
    name = value.strip().lower()
    meant = near_miss_channel(name) if name != "*" else None
    if meant:
        raise FieldError(field, f"no such channel {value!r}; did you mean {meant!r}?")
    return name


def _check_address(channel: str, address: str) -> None:
    """An `email` address must be exactly one plain address (it becomes the mail's To). Other
    channels' addresses are free-form (the webhook channel posts to the configured URL; a user's
    address only marks them reachable there) but hold no control characters."""
    if channel == "email":
        try:
            email_address(address)
        except ValueError as exc:
            raise FieldError("channels.email", f"{exc}: {_shown(address)}") from None
    elif any(ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029" for ch in address):
        raise FieldError(f"channels.{channel}", f"contains a control character: {_shown(address)}")


def _shown(value: str, limit: int = 120) -> str:
    """`value` for an error message: repr (so CR/LF show as escapes), cut at `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _not_ahead(data: dict[str, Any], name: str, now: datetime, why: str) -> datetime | None:
    """The time in field `name`, if given; more than `MAX_AHEAD` past `now` is an error."""
    ts = ts_field(data, name, required=False)
    if ts is not None and ts - now > MAX_AHEAD:
        raise FieldError(
            name,
            f"{data[name]!r} is more than a day ahead of this server's clock ({now:%Y-%m-%dT%H:%M:%SZ}); "
            f"{why} (a sender's clock or time zone is off?)",
        )
    return ts


def parse_event(
    data: dict[str, Any],
    *,
    now: datetime,
    extra_types: frozenset[str] = frozenset(),
    position: int | None = None,
) -> EventRecord:
    """An event record. Without `id`, its id is derived from user, type, item, ts, value and
    message_id; without `ts` as well, also from `position` (its line in the file, its index in a
    request), since `ts` is then `now`: identical events without ts in one file or batch are
    distinct plays, not one (the key cannot match across imports anyway, `now` differs)."""
    context = with_unknown(data, EVENT_FIELDS, "context")
    type_ = str_field(data, "type", default=None)
    if not type_:
        raise FieldError("type", "is required")
    if type_ not in EVENT_TYPES and type_ not in extra_types:
        known = ", ".join(sorted(EVENT_TYPES))
        if extra_types:
            known += f"; custom: {', '.join(sorted(extra_types))}"
        raise FieldError("type", f"unknown event type {type_!r} (known: {known})")
    if type_ == "unsubscribe" and "channel" in context:
        given = data.get("context")  # where the event gave it: in `context`, or at the top level
        field = "context.channel" if isinstance(given, dict) and "channel" in given else "channel"
        context["channel"] = _unsubscribe_channel(context["channel"], field)
    user_id = id_field(data, "user_id")
    item_id = str_field(data, "item_id", default=None, max_len=MAX_ID)
    given_ts = _not_ahead(data, "ts", now, "an event happens before it is sent")
    ts = given_ts or now
    value = float_field(data, "value")
    if value is not None and abs(value) > VALUE_CAP:
        raise FieldError("value", f"must lie within ±{VALUE_CAP:.0e}, got {value:g}")
    message_id = str_field(data, "message_id", default=None, max_len=MAX_ID)
    event_id = str_field(data, "id", default=None, max_len=MAX_ID)
    if not event_id:
        parts: list[Any] = [user_id, type_, item_id, ts.isoformat(), value, message_id]
        if given_ts is None and position is not None:
            parts.append(position)
        key = json.dumps(parts, separators=(",", ":"))
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, key))
    return EventRecord(event_id, user_id, type_, item_id, ts, value, message_id, context)
