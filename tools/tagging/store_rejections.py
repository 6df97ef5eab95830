"""Tags the catalogue owner takes off an item by hand (table `item_tag_rejections`, migration 0080).

An import's `tags` replace the catalogue's own tags of an item (source `import`); the tags tagloop
proposed (`tagloop tag items`) or behaviour confirmed stay, so a nightly catalogue export does not
wipe what tagloop learned. `remove_item_tag(conn, item, tag)` is how the owner takes one of either
kind off for good: the item's row of the tag is deleted whatever its source, the pair is recorded so
that `store_autotag.store_proposals` never proposes it for that item again (`catalogue.NOT_REJECTED`) and
imports and PUTs that still give it do not write it back (`catalogue.replace_item_tags`), and tag
counts and the item's tag vector are refreshed. `restore_item_tag` lifts the rejection: the next
import, PUT or `tag items` run may give the tag again. Profiles keep what past events taught them.
Functions take a connection and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from tagloop.tools.errors import NotFound
from tagloop.tools.store.catalogue import refresh_item_vectors, refresh_tag_counts
from tagloop.tools.tagging.store import find_tag

_DELETE = "delete from item_tags where item_id = %(item)s and tag_id = %(tag)s returning source"
_REJECT = """
    insert into item_tag_rejections (item_id, tag_id) values (%(item)s, %(tag)s)
    on conflict (item_id, tag_id) do update set rejected_at = now()
"""


@dataclass(frozen=True)
class RemovedTag:
    item: str
    tag: str  # the stored name `raw` resolved to
    removed: str | None  # the source of the row deleted; None when the item did not carry the tag
    rejected: bool = True  # never proposed for the item again


def remove_item_tag(conn: psycopg.Connection[Any], item_id: str, raw: str) -> RemovedTag:
    """Take the tag `raw` (any spelling of a stored tag) off `item_id` for good."""
    tag_id, name = _item_and_tag(conn, item_id, raw)
    params = {"item": item_id, "tag": tag_id}
    row = conn.execute(_DELETE, params).fetchone()
    conn.execute(_REJECT, params)
    if row is not None:
        refresh_tag_counts(conn)
        refresh_item_vectors(conn, [item_id])
    return RemovedTag(item_id, name, None if row is None else str(row["source"]))


_RESTORE = "delete from item_tag_rejections where item_id = %(item)s and tag_id = %(tag)s returning 1"


@dataclass(frozen=True)
class RestoredTag:
    item: str
    tag: str  # the stored name `raw` resolved to
    restored: bool  # False when the tag had not been taken off the item


def restore_item_tag(conn: psycopg.Connection[Any], item_id: str, raw: str) -> RestoredTag:
    """Lift `remove_item_tag`'s rejection of `raw` (any spelling of a stored tag) for `item_id`: the
    tag is not put back here; the next import, PUT or `tag items` run that gives it writes it."""
    tag_id, name = _item_and_tag(conn, item_id, raw)
    row = conn.execute(_RESTORE, {"item": item_id, "tag": tag_id}).fetchone()
    return RestoredTag(item_id, name, row is not None)


def _item_and_tag(conn: psycopg.Connection[Any], item_id: str, raw: str) -> tuple[int, str]:
    """The id and stored name of the tag `raw` names; NotFound for an unknown item or tag."""
    if conn.execute("select 1 from items where id = %(i)s", {"i": item_id}).fetchone() is None:
        raise NotFound(f"unknown item {item_id!r}")
    found = find_tag(conn, raw)
    if found is None:
        raise NotFound(f"unknown tag {raw!r}: see `tagloop tag vocab`")
    return found
