"""JSON request bodies: every route that takes a body decodes it here, so they all refuse the same
things with the same 422 naming the place: bytes that are not UTF-8 or not JSON, nesting deeper than
`MAX_DEPTH` (checked level by level, without recursion: a deep body is a 422, not a RecursionError),
a key given twice in one object (the sender meant one of the values; which one is not ours to guess),
an integer too long to read (over 4,300 digits) and strings holding NUL, which PostgreSQL text cannot
store. The parsing is tools/ingest/jsontext.py's, shared with file imports.

The stdlib parser keeps integers exact (orjson turns those beyond 64 bits into floats); its
object_pairs_hook sees every pair, so a repeated key costs no second pass unless there is one."""

from __future__ import annotations

import json
from typing import Any

from tagloop.agent.http.problems import FieldErrors
from tagloop.tools.ingest import jsontext

MAX_DEPTH = 100  # levels of arrays/objects; `{}` is one
_CONTAINERS = (dict, list)
_DEEP = f"is nested deeper than {MAX_DEPTH} levels"


def decode(body: bytes) -> Any:
    """The JSON value of `body`, else FieldErrors naming `body` (or the key at fault)."""
    try:
        payload = jsontext.loads(body.decode("utf-8"), max_depth=MAX_DEPTH)
    except UnicodeDecodeError as bad:
        reason = f"is not valid UTF-8 (byte 0x{body[bad.start]:02x} at offset {bad.start})"
        raise FieldErrors([("body", reason)]) from None
    except json.JSONDecodeError as exc:
        raise FieldErrors([("body", f"is not valid JSON: {exc}")]) from None
    except RecursionError:  # some hundreds of levels: past MAX_DEPTH anyway
        raise FieldErrors([("body", _DEEP)]) from None
    except jsontext.JsonFieldError as exc:  # a key given twice, an integer too long to read
        raise FieldErrors([(exc.path or "body", exc.reason)]) from None
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH:  # else it cannot nest that deep
        _within_depth(payload)
    if b"\\u0000" in body:  # a raw NUL byte is not valid JSON: the parser refused it
        nul = _nul_at(payload)
        if nul is not None:
            raise FieldErrors([(nul or "body", "contains a NUL character (\\u0000): cannot be stored")])
    return payload


def _within_depth(payload: Any) -> None:
    """FieldErrors when `payload` nests deeper than MAX_DEPTH (looked at level by level)."""
    level = [payload] if type(payload) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise FieldErrors([("body", _DEEP)])
        below: list[Any] = []
        for value in level:
            if type(value) is dict:
                below += [v for v in value.values() if type(v) in _CONTAINERS]
            else:
                below += [v for v in value if type(v) in _CONTAINERS]
        level = below


def _nul_at(payload: Any) -> str | None:
    """The path of the first string or key holding NUL ("" for the body itself), else None."""
    stack: list[tuple[Any, str]] = [(payload, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, inner in value.items():
                here = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return here
                stack.append((inner, here))
        elif isinstance(value, list):
            stack.extend((inner, f"{path}[{index}]") for index, inner in enumerate(value))
    return None
