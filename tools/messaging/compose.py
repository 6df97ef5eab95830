"""Message copy: templates by default, optionally an LLM with a validated structured reply.

Templates: a title naming the picks and a body with the reason. Item titles and tag names are
data, inserted as text and never interpreted.

LLM copy (`compose_with_llm`): the facts (item titles, top tags, the user's locale) are sent as one
JSON document in the user turn, and the system prompt says they are data, never instructions. The
reply must parse as `Draft` (pydantic, extra fields forbidden, bounded lengths); any URL in it must
point at an allowed host; it must not be empty after control characters are stripped. On a timeout,
an HTTP error, an invalid reply or a rejected link the template copy is returned — the LLM can only
ever make the copy better, never block or break a send.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from tagloop.tools.errors import TagloopError
from tagloop.tools.llm import LLM


@dataclass(frozen=True)
class Copy:
    title: str
    body: str
    template: str
    link: str | None = None
    fallback_reason: str | None = None


class Draft(BaseModel):
    """What the LLM must return."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=600)
    link: str | None = Field(default=None, max_length=500)


_URL = re.compile(r"https?://[^\s)>\]\"']+", re.IGNORECASE)
_BARE_HOST = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|ru|cn|xyz|info|biz|co|me|ly|app|dev)\b", re.I)


def _join(names: Sequence[str]) -> str:
    names = [n for n in names if n]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def compose_discovery(item_titles: Sequence[str], top_tags: Sequence[str]) -> Copy:
    """A discovery-mix notification: 'New for you: A, B and more' with the tag reason."""
    shown = [_clean(t, 80) for t in item_titles[:3]]
    more = " and more" if len(item_titles) > 3 else ""
    title = f"New for you: {', '.join(shown)}{more}"
    tags = [_clean(t, 40) for t in top_tags[:2]]
    reason = f"Because you play a lot of {_join(tags)}" if tags else "Picked for you"
    body = f"{reason}: {_join([_clean(t, 80) for t in item_titles[:5]])}."
    return Copy(title=title[:200], body=body[:1000], template="discovery-v1")


def _clean(text: str, limit: int) -> str:
    """Text without control characters (newlines become spaces), at most `limit` characters."""
    flat = str(text)
    if not flat.isprintable():  # printable: no category C character (the common case, no loop)
        flat = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in flat)
    return " ".join(flat.split())[:limit]


def links_allowed(text: str, allowed_hosts: Collection[str]) -> bool:
    """Every URL (and bare domain) in `text` points at an allowed host or a subdomain of one."""
    hosts = [urlsplit(u).hostname or "" for u in _URL.findall(text)]
    hosts += [m.group(0) for m in _BARE_HOST.finditer(_URL.sub(" ", text))]
    return all(any(h.lower() == a or h.lower().endswith("." + a) for a in allowed_hosts) for h in hosts)


def compose_with_llm(
    llm: LLM,
    system_prompt: str,
    facts: dict[str, Any],
    fallback: Copy,
    allowed_hosts: Collection[str] = (),
) -> Copy:
    """LLM copy for `facts` (sent as JSON data), or `fallback` with the reason it was used."""
    allowed = {h.lower() for h in allowed_hosts}
    try:
        draft = llm.structured(system_prompt, json.dumps({"data": facts}, ensure_ascii=False), Draft)
    except TagloopError as exc:
        return _fallback(fallback, f"llm: {type(exc).__name__}")
    title, body = _clean(draft.title, 120), _clean(draft.body, 600)
    if not title or not body:
        return _fallback(fallback, "llm: empty copy")
    link = draft.link.strip() if draft.link else None
    if not links_allowed(" ".join([title, body, link or ""]), allowed):
        return _fallback(fallback, "llm: link to a host that is not allowed")
    return Copy(title=title, body=body, template="llm-v1", link=link)


def _fallback(copy: Copy, reason: str) -> Copy:
    return Copy(copy.title, copy.body, copy.template, copy.link, fallback_reason=reason)
