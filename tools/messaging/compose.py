"""Message copy: templates by default, optionally an LLM with a validated structured reply.

Templates: a title naming the picks and a body with the reason. Item titles and tag names are
data, inserted as text and never interpreted.

LLM copy (`compose_with_llm`): the facts (item titles, top tags, the user's locale) are sent as one
JSON document in the user turn, and the system prompt says they are data, never instructions. The
reply must parse as `Draft` (pydantic, extra fields forbidden, bounded lengths); every link a mail
client or browser could make of it must point at an allowed host (`links_allowed`); names it puts
in quotes must be among the items or top tags it was given (`quoted_names_known`), and it must
name one of them at all (`names_something_given`); it must not be empty after control characters
are stripped. A valid `link` (http(s), allowed host) is put at the end of the body. On a timeout,
an HTTP error, an invalid reply, a rejected link or name, or when the run's `LLMBreaker` says the
LLM is not to be asked any more, the template copy is returned with the reason
(`Copy.fallback_reason`, 'llm: timeout', 'llm: circuit open', …) and one log line naming the class
of failure (no user id, titles, copy or key) — the LLM can only ever make the copy
better, never block or break a send.

Links (`links_allowed`), checked on the NFKC form of the text (fullwidth letters and dots, U+FF0E,
U+FF61, become ASCII), with backslashes read as slashes (as browsers do):
- whatever follows `//` (or `http:`/`https:`/`ftp:`/`ws:` with any number of slashes) is an
  authority: its host (after any `user@`, before any port) must be allowed, whatever it looks like
  (`localhost`, an IP address, a bare word);
- any dotted name whose last label looks like a top-level domain (two or more letters, any script,
  or `xn--…`) is a host name, any dotted quad an IPv4 address, any `[…:…]` an IPv6 address: each
  must be allowed; `evil。com` (ideographic full stop) counts when the last label is ASCII (Chinese
  and Japanese sentences end with 。 too, so `…です。お楽しみに` is prose);
- `javascript:`, `data:`, `vbscript:`, `file:`, `blob:` and `intent:` links are never allowed.
Allowed: a host in the allowlist or a subdomain of one. Prose keeps its dots: "Mr. Smith", "feat.",
"P.S.", "t.A.T.u.", "2.5" (a space after the dot, a one-letter or numeric last label); a missing
space after a full stop ("great.Enjoy") reads as a host and falls back to the template.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from tagloop.tools.errors import TagloopError
from tagloop.tools.llm import LLM, LLMBreaker
from tagloop.tools.messaging.channels import flat
from tagloop.tools.tagging_names import display_tag
from tagloop.tools.wording import LISTEN, Habit

log = logging.getLogger(__name__)


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


# on the NFKC text, backslashes made slashes: see the module docstring
_AUTHORITY = re.compile(r"(?:\b(?:https?|ftps?|wss?):/*|/{2,})([^/?#\s]*)", re.IGNORECASE)
_DOTTED = re.compile(r"(?<![\w-])[\w-]+(?:[.\u3002][\w-]+)+")
_IPV6 = re.compile(r"\[[0-9a-f.%]*:[0-9a-f:.%]*\]", re.IGNORECASE)
_SCRIPT_LINK = re.compile(r"\b(?:javascript|vbscript|data|file|blob|intent):\S", re.IGNORECASE)
_HTTP_LINK = re.compile(r"https?://", re.IGNORECASE)
_TRAILING = ".,;:!?)]}>'\"\u3002"
# quoted spans: "…", “…”, «…», „…“, 「…」, ‘…’ (not '…': apostrophes)
_QUOTED = re.compile(
    r'"([^"]{1,200})"|\u201c([^\u201d]{1,200})\u201d|\u00ab([^\u00bb]{1,200})\u00bb'
    r"|\u201e([^\u201c\u201d]{1,200})[\u201c\u201d]|\u300c([^\u300d]{1,200})\u300d|\u2018([^\u2019]{1,200})\u2019"
)


def _join(names: Sequence[str]) -> str:
    names = [n for n in names if n]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


TITLE_LIMIT = 200  # characters of a notification title (mail Subject)


def compose_discovery(
    item_titles: Sequence[str],
    top_tags: Sequence[str],
    tagged: Sequence[bool] | None = None,
    *,
    declared: bool = False,
    words: Habit = LISTEN,
) -> Copy:
    """A discovery-mix notification: 'New for you: A, B and more' with the tag reason. Titles are
    shortened at a word (with '…'), and the title names as many picks as fit in `TITLE_LIMIT`.
    `tagged`: per pick, whether it carries one of the (first two) tags the reason names (default:
    all); the reason lists those picks, the others follow under "Also for you". `declared`: the
    tags are the user's declared interests, not their plays ("Because you like X"). `words`: those
    of the picks' kind (tools/wording.py: "Because you read a lot of X" for articles)."""
    shown = [_clean(t, 80) for t in item_titles[:3]]
    title = "New for you: "
    for n, name in enumerate(shown):
        more = " and more" if len(item_titles) > n + 1 else ""
        candidate = f"{title}{', ' if n else ''}{name}"
        if n and len(candidate) + len(more) > TITLE_LIMIT:
            title += " and more"
            break
        title = candidate
    else:
        title += " and more" if len(item_titles) > len(shown) else ""
    tags = [_clean(display_tag(t), 40) for t in top_tags[:2]]
    flags = list(tagged) if tagged is not None else [True] * len(item_titles)
    because = [t for t, ok in zip(item_titles, flags, strict=True) if ok][:5] if tags else []
    if because:
        others = [t for t, ok in zip(item_titles, flags, strict=True) if not ok][: 5 - len(because)]
        habit = "you like" if declared else words.often
        body = f"Because {habit} {_join(tags)}: {_join([_clean(t, 80) for t in because])}."
        if others:
            body += f" Also for you: {_join([_clean(t, 80) for t in others])}."
    else:
        body = f"Picked for you: {_join([_clean(t, 80) for t in item_titles[:5]])}."
    return Copy(title=_shorten(title, TITLE_LIMIT), body=_shorten(body, 1000), template="discovery-v1")


def _clean(text: str, limit: int) -> str:
    """Text without control characters (newlines become spaces), at most `limit` characters, cut
    at a word with '…' when longer."""
    return _shorten(flat(text), limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary not too far back
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def _normalised(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("\\", "/")


def _tld_like(label: str, separator: str) -> bool:
    if label.isascii():
        return (len(label) >= 2 and label.isalpha()) or label.lower().startswith("xn--")
    # an internationalised TLD (letters and combining marks of any script) after an ASCII dot
    return separator == "." and all(unicodedata.category(ch)[0] in "LM" for ch in label)


def _link_hosts(text: str) -> Iterator[str]:
    """Every host a mail client or browser could link to from `text` (already NFKC, slashes made of
    backslashes); '' for a link that has no allowable host (`javascript:`, an IPv6 address)."""
    if _SCRIPT_LINK.search(text) or _IPV6.search(text):
        yield ""
    for m in _AUTHORITY.finditer(text):
        host = m.group(1).rpartition("@")[2].partition(":")[0].rstrip(_TRAILING)
        if host:
            yield unquote(host)
    for m in _DOTTED.finditer(text):
        labels = re.split(r"[.\u3002]", m.group(0))
        separator = m.group(0)[-len(labels[-1]) - 1]
        if _tld_like(labels[-1], separator) or (len(labels) == 4 and all(x.isdigit() for x in labels)):
            yield ".".join(labels)


def _host_allowed(host: str, allowed: Collection[str]) -> bool:
    h = host.lower().strip(".")
    return bool(h) and any(h == a or h.endswith("." + a) for a in allowed)


def links_allowed(text: str, allowed_hosts: Collection[str]) -> bool:
    """Every link a mail client or browser could make of `text` (scheme URLs, `//host`, bare host
    names with any TLD-like suffix, IP addresses; NFKC, backslashes as slashes) points at an
    allowed host or a subdomain of one (see the module docstring)."""
    allowed = {_normalised(a).lower().strip(".") for a in allowed_hosts} - {""}
    return all(_host_allowed(h, allowed) for h in _link_hosts(_normalised(text)))


_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-") | {"\u2019": "'"})


def _fold(text: str) -> str:
    """Case, width, dashes, apostrophes and spacing aside."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_DASHES)
    return " ".join(folded.split()).strip(_TRAILING + " ")


def quoted_names_known(text: str, names: Iterable[str]) -> bool:
    """Every span of `text` in quotes is (part of) one of `names` (case, width and spacing aside):
    a quoted title the model made up is not, even when it contains a known name ("Best of
    {tag} - Remastered Deluxe")."""
    known = [n for n in map(_fold, names) if n]
    for m in _QUOTED.finditer(text):
        span = _fold(next(g for g in m.groups() if g is not None))
        if span and not any(span in n for n in known):
            return False
    return True


_TITLE_PARTS = re.compile(r"\s[-\u2010-\u2015:/|]\s|\s*[(\[]")  # "Artist - Track (Remastered)"


def names_something_given(text: str, titles: Iterable[str], tags: Iterable[str]) -> bool:
    """`text` names one of the items (a title, or a part of one of 3+ characters: the artist or
    the track of "Artist - Track") or one of the top tags: copy about something else (an
    injected "your account is locked") is not about the picks."""
    folded = _fold(text)
    parts = [p for t in titles for p in (t, *_TITLE_PARTS.split(t))] + list(tags)
    return any(len(p) >= 3 and p in folded for p in map(_fold, parts))


def compose_with_llm(
    llm: LLM,
    system_prompt: str,
    facts: dict[str, Any],
    fallback: Copy,
    allowed_hosts: Collection[str] = (),
    *,
    breaker: LLMBreaker | None = None,
    ref: str | None = None,
) -> Copy:
    """LLM copy for `facts` (sent as JSON data), or `fallback` with the reason it was used.

    `breaker`: the run's guard (not asked when it is open; told how the call went). `ref`: an opaque
    reference for the log line (the decision id; never the user id)."""
    blocked = breaker.blocked() if breaker is not None else None
    if blocked is not None:
        return _fallback(fallback, blocked.replace(" ", "_"), blocked, ref, logging.INFO)
    start = time.monotonic()
    try:
        draft = llm.structured(system_prompt, json.dumps({"data": facts}, ensure_ascii=False), Draft)
    except TagloopError as exc:
        kind = str(getattr(exc, "kind", type(exc).__name__))
        if breaker is not None:  # an answer it could not use is no unavailable LLM
            breaker.record(time.monotonic() - start, ok=kind in _ANSWERED)
        return _fallback(fallback, kind, str(getattr(exc, "reason", kind)), ref)
    if breaker is not None:
        breaker.record(time.monotonic() - start, ok=True)
    title, body = _clean(draft.title, 120), _clean(draft.body, 600)
    if not title or not body:
        return _fallback(fallback, "empty_copy", "empty copy", ref)
    link = _clean(draft.link, 500) if draft.link else None
    if (link and not _HTTP_LINK.match(_normalised(link))) or not links_allowed(
        " ".join([title, body, link or ""]), allowed_hosts
    ):
        return _fallback(fallback, "disallowed_link", "disallowed link", ref)
    items = [n for n in facts.get("items") or () if isinstance(n, str)]
    tags = [n for n in facts.get("top_tags") or () if isinstance(n, str)]
    if items + tags and not quoted_names_known(f"{title} {body}", items + tags):
        return _fallback(fallback, "unknown_item", "unknown item named", ref)
    if items and not names_something_given(f"{title} {body}", items, tags):
        return _fallback(fallback, "off_topic", "names none of the items", ref)
    if link:  # the outbound formats have no link field: it goes at the end of the text
        body = f"{body} {link}"
    return Copy(title=title, body=body, template="llm-v1", link=link)


_ANSWERED = frozenset({"empty", "invalid_json", "schema"})  # the LLM answered, badly


def _fallback(copy: Copy, kind: str, reason: str, ref: str | None, level: int = logging.WARNING) -> Copy:
    """The template copy with its reason, and one log line: the class of failure, the template and
    the caller's opaque reference — no user id, titles, copy or key."""
    log.log(
        level,
        "llm copy fallback kind=%s reason=%r template=%s ref=%s",
        kind,
        reason,
        copy.template,
        ref or "-",
        extra={"llm_fallback": {"kind": kind, "reason": reason, "template": copy.template, "ref": ref}},
    )
    return Copy(copy.title, copy.body, copy.template, copy.link, fallback_reason=f"llm: {reason}")
