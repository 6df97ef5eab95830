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
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from tagloop.policies.config import BUILTIN_CHANNELS
from tagloop.tools.messaging.channels import email_address
from tagloop.tools.tagging_names import normalize_tag

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
EVENT_NAMESPACE = uuid.UUID("6f1b8a52-3c1e-5d0a-9a57-7461676c6f6f")
MAX_ID = 256


ITEM_FIELDS = frozenset({"id", "title", "kind", "provider", "tags", "text", "created_at", "attributes"})
USER_FIELDS = frozenset({"id", "timezone", "locale", "channels", "consent", "attributes"})
EVENT_FIELDS = frozenset({"id", "user_id", "type", "item_id", "ts", "value", "message_id", "context"})
MAX_DEPTH = 32  # levels of nested objects/arrays in a field (deeper broke the events page's serializer)


class FieldError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


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


def parse_item(data: dict[str, Any]) -> ItemRecord:
    attributes = _with_unknown(data, ITEM_FIELDS, "attributes")
    tags = data.get("tags")
    if isinstance(tags, list | dict):
        _check_json("tags", tags)
    return ItemRecord(
        id=_id(data, "id"),
        title=_str(data, "title", default=None),
        kind=_str(data, "kind", default=None) or None,
        provider=_str(data, "provider", default=None, max_len=MAX_ID) or None,
        tags=_tags(tags),
        text=_str(data, "text", default=None),
        created_at=_ts(data, "created_at", required=False),
        attributes=attributes,
        given=_given(data, ITEM_FIELDS),
    )


def parse_user(data: dict[str, Any]) -> UserRecord:
    attributes = _with_unknown(data, USER_FIELDS, "attributes")
    channels = _object(data, "channels")
    _check_json("channels", channels)
    for name, address in channels.items():
        _known_channel("channels", name)
        if not isinstance(address, str):
            raise FieldError(f"channels.{name}", f"must be a string address, got {type(address).__name__}")
        _check_address(name, address)
    consent = _object(data, "consent")
    _check_json("consent", consent)
    for name, given in consent.items():
        _known_channel("consent", name)
        if isinstance(given, str) and given.lower() in {"true", "false"}:
            consent[name] = given.lower() == "true"
        elif not isinstance(given, bool):
            raise FieldError(f"consent.{name}", f"must be true or false, got {given!r}")
    zone = data.get("timezone")
    return UserRecord(
        id=_id(data, "id"),
        timezone=None if zone is None else _timezone(zone),
        locale=_str(data, "locale", default=None),
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
    return out


def _known_channel(field: str, name: str) -> None:
    """A channel name that is a near miss of a built-in one (`emial`) is a typo that would leave the
    user without that channel's consent or address; other names are custom channels."""
    if name in BUILTIN_CHANNELS:
        return
    close = difflib.get_close_matches(name, sorted(BUILTIN_CHANNELS), n=1, cutoff=0.75)
    if close:
        raise FieldError(f"{field}.{name}", f"no such channel; did you mean {close[0]!r}?")


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


def parse_event(
    data: dict[str, Any], *, now: datetime, extra_types: frozenset[str] = frozenset()
) -> EventRecord:
    context = _with_unknown(data, EVENT_FIELDS, "context")
    type_ = _str(data, "type", default=None)
    if not type_:
        raise FieldError("type", "is required")
    if type_ not in EVENT_TYPES and type_ not in extra_types:
        raise FieldError("type", f"unknown event type {type_!r} (known: {', '.join(sorted(EVENT_TYPES))})")
    user_id = _id(data, "user_id")
    item_id = _str(data, "item_id", default=None, max_len=MAX_ID)
    ts = _ts(data, "ts", required=False) or now
    value = _float(data, "value")
    message_id = _str(data, "message_id", default=None, max_len=MAX_ID)
    event_id = _str(data, "id", default=None, max_len=MAX_ID)
    if not event_id:
        key = json.dumps([user_id, type_, item_id, ts.isoformat(), value, message_id], separators=(",", ":"))
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, key))
    return EventRecord(event_id, user_id, type_, item_id, ts, value, message_id, context)


def _id(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise FieldError(name, "is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_ID:
        raise FieldError(name, f"is longer than {MAX_ID} characters")
    _storable(name, text)
    return text


def _str(data: dict[str, Any], name: str, *, default: str | None, max_len: int | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and name.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise FieldError(name, f"is longer than {max_len} characters")
    _storable(name, value)
    return value


def _check_json(name: str, value: Any, depth: int = 1) -> None:
    """A JSON value PostgreSQL's jsonb (and the API's serializer) can hold: strings (keys too)
    storable, numbers finite, at most `MAX_DEPTH` levels of objects and arrays. `name` is the
    field's dotted path, as the error gives it."""
    if isinstance(value, str):
        _storable(name, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(name, "must be a finite number (NaN and infinities cannot be stored)")
    elif isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise FieldError(name, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise FieldError(name, f"has a key that is not a string: {key!r}")
                _storable(f"{name} key {key[:40]!r}", key)
                _check_json(f"{name}.{key[:40]}", item, depth + 1)
        else:
            for position, item in enumerate(value):
                _check_json(f"{name}[{position}]", item, depth + 1)


def _storable(name: str, text: str) -> None:
    """Text PostgreSQL can store: no NUL, valid UTF-8 (no unpaired surrogate from a \\ud800 escape)."""
    if "\x00" in text:
        raise FieldError(name, "contains a NUL character (\\u0000), which cannot be stored")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FieldError(
            name, f"contains an unpaired surrogate ({text[exc.start]!a}), which cannot be stored"
        ) from None


def _float(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError(name, "must be a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FieldError(name, f"must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FieldError(name, "must be a finite number")
    return number


def _with_unknown(data: dict[str, Any], known: frozenset[str], name: str) -> dict[str, Any]:
    """The `name` object with the record's unknown fields added; a field that is also a key of
    the object with another value is an error (one of the two would be lost)."""
    bag = _object(data, name)
    _check_json(name, bag)
    for key, value in data.items():
        if key not in known:
            if not isinstance(key, str):
                raise FieldError(name, f"has a key that is not a string: {key!r}")
            _storable(f"field name {key[:40]!r}", key)
            _check_json(key[:40], value)
            if key in bag and bag[key] != value:
                raise FieldError(
                    key, f"is given both as a field and inside {name} with different values; give it once"
                )
            bag[key] = value
    return bag


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if isinstance(value, str):  # CSV cell holding JSON
        value = _json_cell(name, value)
    if not isinstance(value, dict):
        raise FieldError(name, f"must be an object, got {type(value).__name__}")
    return dict(value)


def _json_cell(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FieldError(name, f"must be a JSON object ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise FieldError(name, f"is nested more than {MAX_DEPTH} levels deep") from None


# a stored time must be shown in any user's zone (offsets up to ±26 h) without leaving datetime's range
MIN_TS = datetime(2, 1, 1, tzinfo=UTC)
MAX_TS = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _ts(data: dict[str, Any], name: str, *, required: bool) -> datetime | None:
    value = data.get(name)
    if value is None:
        if required:
            raise FieldError(name, "is required")
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"must be an RFC 3339 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FieldError(name, f"is not an RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise FieldError(name, f"has no time zone offset: {value!r} (RFC 3339 needs Z or ±hh:mm)")
    try:
        utc: datetime | None = parsed.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not MIN_TS <= utc <= MAX_TS:
        raise FieldError(name, f"is out of the supported date range (years 0002-9998): {value!r}")
    return utc


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


# zone files that name no place: the host's own zone (differs per worker machine), a placeholder
_NOT_A_PLACE = frozenset({"localtime", "Factory", "posixrules"})


def _timezone(value: Any) -> str:
    if (
        not isinstance(value, str)
        or value not in _zones()
        or value in _NOT_A_PLACE
        or value.startswith(("posix/", "right/"))
    ):
        raise FieldError("timezone", f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    return value


MAX_TAG = 200  # characters of a tag name (6,000 overflowed the tags' unique index: a traceback)


def _tag_name(name: Any, field: str) -> str:
    """The stored name of one tag, or a FieldError naming `field`."""
    if not isinstance(name, str) or not normalize_tag(name):
        raise FieldError(field, f"must be a non-empty string, got {name!r}")
    if len(name) > MAX_TAG:
        raise FieldError(field, f"is longer than {MAX_TAG} characters")
    return normalize_tag(name)


def _tags(value: Any) -> dict[str, float]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{":
            try:
                value = json.loads(stripped)
            except (json.JSONDecodeError, RecursionError):
                raise FieldError("tags", "is neither valid JSON nor a |-separated list") from None
            _check_json("tags", value)
        else:
            value = [part for part in stripped.split("|") if part.strip()]
    tags: dict[str, float] = {}
    if isinstance(value, list):
        for position, name in enumerate(value):
            tags[_tag_name(name, f"tags[{position}]")] = 1.0
    elif isinstance(value, dict):
        for name, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
                raise FieldError(f"tags.{name}", f"weight must be a number in (0, 1], got {weight!r}")
            key = _tag_name(name, f"tags.{name[:40]}") if normalize_tag(name) else None
            if not key:
                raise FieldError("tags", f"empty tag name {name!r}")
            tags[key] = max(tags.get(key, 0.0), float(weight))
    else:
        raise FieldError(
            "tags", f"must be a list of strings or an object tag → weight, got {type(value).__name__}"
        )
    return tags
