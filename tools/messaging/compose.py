"""Message copy from templates: a title naming the picks and a body with the reason. Item titles
and tag names are data, inserted as text and never interpreted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Copy:
    title: str
    body: str
    template: str


def _join(names: Sequence[str]) -> str:
    names = [n for n in names if n]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def compose_discovery(item_titles: Sequence[str], top_tags: Sequence[str]) -> Copy:
    """A discovery-mix notification: 'New for you: A, B and more' with the tag reason."""
    shown = list(item_titles[:3])
    more = " and more" if len(item_titles) > 3 else ""
    title = f"New for you: {', '.join(shown)}{more}"
    reason = f"Because you play a lot of {_join(list(top_tags[:2]))}" if top_tags else "Picked for you"
    body = f"{reason}: {_join(list(item_titles[:5]))}."
    return Copy(title=title[:200], body=body[:1000], template="discovery-v1")
