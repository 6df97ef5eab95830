"""Field-level parsing and checks shared by the record parsers (records.py): ids, strings,
numbers, RFC 3339 times, IANA time zones, tags, and JSON values PostgreSQL can store (no NUL, no
unpaired surrogate, finite numbers, at most `MAX_DEPTH` levels deep). Each raises `FieldError`
naming the field."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from tagloop.tools.ingest import jsontext
from tagloop.tools.tagging_names import normalize_tag

MAX_ID = 256
MAX_DEPTH = 32  # levels of nested objects/arrays in a field (deeper broke the events page's serializer)


class FieldError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def id_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise FieldError(name, "is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_ID:
        raise FieldError(name, f"is longer than {MAX_ID} characters")
    storable(name, text)
    return text


def str_field(
    data: dict[str, Any], name: str, *, default: str | None, max_len: int | None = None
) -> str | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and name.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise FieldError(name, f"is longer than {max_len} characters")
    storable(name, value)
    return value


def check_json(name: str, value: Any, depth: int = 1) -> None:
    """A JSON value PostgreSQL's jsonb (and the API's serializer) can hold: strings (keys too)
    storable, numbers finite, at most `MAX_DEPTH` levels of objects and arrays. `name` is the
    field's dotted path, as the error gives it."""
    if isinstance(value, str):
        storable(name, value)
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
                storable(f"{name} key {key[:40]!r}", key)
                check_json(f"{name}.{key[:40]}", item, depth + 1)
        else:
            for position, item in enumerate(value):
                check_json(f"{name}[{position}]", item, depth + 1)


def storable(name: str, text: str) -> None:
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


VALUE_CAP = 1e12  # an event's |value| at most: revenue, play counts… and sums of them stay finite


def float_field(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError(name, "must be a number, got a boolean")
    try:
        number = float(value)
    except OverflowError:  # an integer past 1.8e308: JSON allows it, a double cannot hold it
        raise FieldError(name, "must be a finite number") from None
    except (TypeError, ValueError):
        raise FieldError(name, f"must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FieldError(name, "must be a finite number")
    return number


def with_unknown(data: dict[str, Any], known: frozenset[str], name: str) -> dict[str, Any]:
    """The `name` object with the record's unknown fields added; a field that is also a key of
    the object with another value is an error (one of the two would be lost)."""
    bag = object_field(data, name)
    check_json(name, bag)
    for key, value in data.items():
        if key not in known:
            if not isinstance(key, str):
                raise FieldError(name, f"has a key that is not a string: {key!r}")
            storable(f"field name {key[:40]!r}", key)
            check_json(key[:40], value)
            if key in bag and bag[key] != value:
                raise FieldError(
                    key, f"is given both as a field and inside {name} with different values; give it once"
                )
            bag[key] = value
    return bag


def object_field(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if isinstance(value, str):  # CSV cell holding JSON (a JSON string that is none: not an object)
        if value.strip()[:1] != "{":
            raise FieldError(name, f"must be an object, got a string ({value[:40]!r})")
        value = json_cell(name, value)
    if not isinstance(value, dict):
        raise FieldError(name, f"must be an object, got {type(value).__name__}")
    return dict(value)


def json_cell(name: str, text: str) -> Any:
    try:
        return jsontext.loads(text)
    except json.JSONDecodeError as exc:
        raise FieldError(name, f"must be a JSON object ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise FieldError(name, f"is nested more than {MAX_DEPTH} levels deep") from None
    except jsontext.JsonFieldError as exc:  # a key given twice, an integer too long to read
        raise FieldError(jsontext.under(name, exc.path), exc.reason) from None


# a stored time must be shown in any user's zone (offsets up to ±26 h) without leaving datetime's range
MIN_TS = datetime(2, 1, 1, tzinfo=UTC)
MAX_TS = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


_LEAP_SECOND = re.compile(r"^(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:)60(?:\.\d+)?([+-]\d\d(?::?\d\d)?)$")
# RFC 3339 date-time (the T may be a space, as its section 5.6 allows), and offsets written ±hh or
# ±hhmm as PostgreSQL prints them (`2026-03-02 10:00:00+00`, copied from psql); Python's ISO 8601
# reader alone also takes week dates, basic format and times without seconds
# (ASCII digits only: `\d` also matches other scripts' digits; offset minutes 00-59)
_RFC3339_LOCAL = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_RFC3339 = re.compile(_RFC3339_LOCAL + r"(?:[Zz]|[+-][0-9]{2}(?::?[0-5][0-9])?)")
_NO_OFFSET = re.compile(_RFC3339_LOCAL)


def ts_field(data: dict[str, Any], name: str, *, required: bool) -> datetime | None:
    value = data.get(name)
    if value is None:
        if required:
            raise FieldError(name, "is required")
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"must be an RFC 3339 timestamp string, got {type(value).__name__}")
    if not _RFC3339.fullmatch(value):
        if _NO_OFFSET.fullmatch(value):
            raise FieldError(name, f"has no time zone offset: {value!r} (RFC 3339 needs Z or ±hh:mm)")
        raise FieldError(
            name, f"is not an RFC 3339 timestamp: {value!r} (expected e.g. 2024-05-01T10:00:00Z or …+02:00)"
        )
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    leap = _LEAP_SECOND.match(text)
    if leap:  # RFC 3339 allows second 60 (a leap second), which datetime cannot hold
        text = f"{leap[1]}59.999999{leap[2]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FieldError(
            name, f"is not an RFC 3339 timestamp: {value!r} (expected e.g. 2024-05-01T10:00:00Z or …+02:00)"
        ) from None
    if parsed.tzinfo is None:
        raise FieldError(name, f"has no time zone offset: {value!r} (RFC 3339 needs Z or ±hh:mm)")
    if leap and parsed.astimezone(UTC).strftime("%H:%M") != "23:59":
        raise FieldError(name, f"has second 60 outside a leap second (23:59:60 UTC): {value!r}")
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


# zone names PostgreSQL's `at time zone` reads as its fixed abbreviations (CET: +01:00 all year)
# while zoneinfo reads them as zones with summer time: stored as the zones they link to in IANA
# tzdata 2024b+ (the same offsets since 1996), so SQL hour-of-week histograms agree with the live
# fold and quiet hours (migration 0085 rewrites stored users alike)
PG_ABBREVIATIONS = {
    "CET": "Europe/Brussels",
    "EET": "Europe/Athens",
    "MET": "Europe/Brussels",
    "WET": "Europe/Lisbon",
}


def timezone_field(value: Any) -> str:
    if (
        not isinstance(value, str)
        or value not in _zones()
        or value in _NOT_A_PLACE
        or value.startswith(("posix/", "right/"))
    ):
        raise FieldError("timezone", f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    return PG_ABBREVIATIONS.get(value, value)


MAX_TAG = 200  # characters of a stored tag name (6,000 overflowed the tags' unique index: a traceback)


def tag_name(name: Any, field: str) -> str:
    """The stored name of one tag, or a FieldError naming `field`. The cap is on the stored name:
    NFKC expands some characters (U+FDFA is 18 characters, "&" is "-and-")."""
    if not isinstance(name, str) or not name.strip():
        raise FieldError(field, f"must be a non-empty string, got {name!r}")
    storable(field, name)  # "a|b" cells and strings reach here unchecked by check_json
    if len(name) > 20 * MAX_TAG:  # not worth normalising
        raise FieldError(field, f"is longer than {MAX_TAG} characters")
    stored = normalize_tag(name)
    if not stored:
        raise FieldError(field, f"has no letter or digit: {name!r}")
    if len(stored) > MAX_TAG:
        raise FieldError(field, f"is longer than {MAX_TAG} characters once normalised ({len(stored):,})")
    return stored


# a tag weight's floor: item_tags.weight is a real (float4), which underflows below ~1e-38 (an
# import aborted, no line) and whose products in SQL underflow sooner; 1e-6 leaves room for both
MIN_WEIGHT = 1e-6

MAX_TAGS = 1_000  # distinct tags of one item (pgvector's sparsevec holds at most 16,000 non-zeros)


def tags_field(value: Any) -> dict[str, float]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{":
            try:
                value = jsontext.loads(stripped)
            except (json.JSONDecodeError, RecursionError):
                raise FieldError("tags", "is neither valid JSON nor a |-separated list") from None
            except jsontext.JsonFieldError as exc:
                raise FieldError(jsontext.under("tags", exc.path), exc.reason) from None
            check_json("tags", value)
        else:
            value = [part for part in stripped.split("|") if part.strip()]
    if isinstance(value, list | dict) and len(value) > 20 * MAX_TAGS:  # not worth normalising
        raise FieldError("tags", f"has more than {MAX_TAGS:,} tags ({len(value):,})")
    tags: dict[str, float] = {}
    if isinstance(value, list):
        for position, name in enumerate(value):
            tags[tag_name(name, f"tags[{position}]")] = 1.0
    elif isinstance(value, dict):
        for name, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
                raise FieldError(f"tags.{name}", f"weight must be a number in (0, 1], got {weight!r}")
            if weight < MIN_WEIGHT:
                raise FieldError(
                    f"tags.{name}",
                    f"weight {weight!r} is below {MIN_WEIGHT:g}, the smallest stored (a 4-byte real)",
                )
            key = tag_name(name, f"tags.{name[:40]}" if normalize_tag(name) else "tags")
            tags[key] = max(tags.get(key, 0.0), float(weight))
    else:
        raise FieldError(
            "tags", f"must be a list of strings or an object tag → weight, got {type(value).__name__}"
        )
    if len(tags) > MAX_TAGS:
        raise FieldError("tags", f"has more than {MAX_TAGS:,} tags ({len(tags):,} once normalised)")
    return tags
