"""Reading JSON text strictly, the same way for JSON Lines imports, JSON cells of CSV files and HTTP
request bodies: a key given twice in one object (the sender meant one of the values; which one is
not ours to guess) and an integer with more digits than Python converts (`sys.get_int_max_str_digits`,
4,300 by default; the stdlib parser raised a bare ValueError) are `JsonFieldError`s naming their
place, e.g. `consent.email` or `[3].value`.

`loads` is the stdlib parser (it keeps integers exact and accepts NaN, which the record checks then
name); `loads_fast` tries orjson first and takes its result when no key can be repeated: every key
of an object is a string followed by `:`, so when the text holds no more `"` `:` pairs than the
parsed value has keys, no key was given twice. Both raise `json.JSONDecodeError` and
`RecursionError` as the stdlib parser does (too deep for it: the callers' nesting error)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson

REPEATED = "is given more than once in one object; give it once"


class JsonFieldError(ValueError):
    """JSON the parser read but that cannot be taken as given: `path` names the place ("" is the
    value itself), `reason` says what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class _Repeated(Exception):
    """A key given twice in one object (raised from the parser's object_pairs_hook)."""


class _LongInt:
    """Stands in for an integer too long to convert, so its place can be named."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _Repeated
    return value


class _Pairs(list[tuple[str, Any]]):
    """An object as parsed, every pair kept (json's object_pairs_hook)."""


def _int_parser(found: list[_LongInt]) -> Any:
    limit = sys.get_int_max_str_digits()

    def parse_int(text: str) -> int | _LongInt:
        if limit and len(text) - text.startswith("-") > limit:
            marker = _LongInt()
            found.append(marker)
            return marker
        return int(text)

    return parse_int


def loads(text: str | bytes, *, max_depth: int | None = None) -> Any:
    """The JSON value of `text`, else `JsonFieldError` (a repeated key, an integer too long) or
    json.JSONDecodeError / RecursionError. `max_depth`: a text with a repeated key is looked at for
    nesting deeper than that first (RecursionError), as a caller checking depth after parsing would."""
    found: list[_LongInt] = []
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_int=_int_parser(found))
    except _Repeated:
        raise JsonFieldError(_repeated_key(text, max_depth), REPEATED) from None
    if found:
        digits = sys.get_int_max_str_digits()
        raise JsonFieldError(
            _path_of(value, lambda v: isinstance(v, _LongInt)),
            f"is an integer of more than {digits:,} digits, too large to read",
        )
    return value


_KEY_END = re.compile(r'"\s*:')


def loads_fast(text: str) -> Any:
    """`loads`, by orjson when it can tell no key is repeated and no integer is past 64 bits (which
    orjson reads as a float, rounded): about 2× faster for a file of events."""
    if _LONG_DIGITS.search(text):  # an integer past 2^64 or below -2^63 (or such text in a string)
        return loads(text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, an integer past a double, lone surrogates: the stdlib
        return loads(text)
    if type(value) in (dict, list) and _keys(value) != _key_ends(text):
        return loads(text)  # a key may be repeated (or a string holds `":`): the strict parser tells
    return value


_LONG_DIGITS = re.compile(r"\d{20}|-\d{19}")


def _key_ends(text: str) -> int:
    """How many `"` are followed by `:` (after any whitespace) in `text`: at least its keys."""
    if '" ' in text or '"\t' in text or '"\r' in text or '"\n' in text:
        return len(_KEY_END.findall(text))
    return text.count('":')


def _keys(value: Any) -> int:
    """How many keys the objects in `value` hold, all levels."""
    count = 0
    stack = [value]
    if type(value) is dict:  # the usual line: a flat object, perhaps with one object inside
        count = len(value)
        stack = [v for v in value.values() if type(v) is dict or type(v) is list]
        if not stack:
            return count
    while stack:
        here = stack.pop()
        if type(here) is dict:
            count += len(here)
            stack.extend(v for v in here.values() if type(v) in (dict, list))
        else:
            stack.extend(v for v in here if type(v) in (dict, list))
    return count


def _repeated_key(text: str | bytes, max_depth: int | None) -> str:
    """The path of a key given twice in one object of `text` (valid JSON, parsed before)."""
    stack: list[tuple[Any, str, int]] = [
        (json.loads(text, object_pairs_hook=_Pairs, parse_int=_int_parser([])), "", 0)
    ]
    while stack:
        value, path, depth = stack.pop()
        if max_depth is not None and isinstance(value, list) and depth == max_depth:
            raise RecursionError("nested too deeply")
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for key, inner in value:
                here = f"{path}.{key}" if path else key
                if key in seen:
                    return here
                seen.add(key)
                stack.append((inner, here, depth + 1))
        elif isinstance(value, list):
            stack.extend((inner, f"{path}[{index}]", depth + 1) for index, inner in enumerate(value))
    return ""


def _path_of(value: Any, wanted: Any) -> str:
    """The path of the first value (in document order) for which `wanted` is true, else ""."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        here, path = stack.pop()
        if wanted(here):
            return path
        if isinstance(here, dict):
            stack.extend(reversed([(v, f"{path}.{k}" if path else str(k)) for k, v in here.items()]))
        elif isinstance(here, list):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(here)]))
    return ""


def under(name: str, path: str) -> str:
    """`path` inside the field `name`: `context` + `a[0]` → `context.a[0]`."""
    if not path:
        return name
    return f"{name}{path}" if path.startswith("[") else f"{name}.{path}"
