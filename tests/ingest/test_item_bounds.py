"""An item's title and tags have documented bounds (records.MAX_TITLE, MAX_TITLE_ID_BYTES,
fields.MAX_TAGS) below what PostgreSQL can index: past them a line is bad, naming the field (it was a
ProgramLimitExceeded traceback: the title is in a btree entry capped at 2,704 bytes, and pgvector's
sparsevec holds at most 16,000 tags). Up to them, even with the longest id and provider of
incompressible text, the item is stored."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.errors import InvalidInput
from tagloop.tools.ingest.fields import MAX_TAGS
from tagloop.tools.ingest.loader import import_file
from tagloop.tools.ingest.records import MAX_ID, MAX_TITLE, MAX_TITLE_ID_BYTES

RANDOM = random.Random(7)


def _noise(n: int, low: int = 0x21, high: int = 0x7E) -> str:
    """`n` incompressible characters between code points `low` and `high`."""
    return "".join(chr(RANDOM.randint(low, high)) for _ in range(n))


def _items(tmp_path: Path, *rows: dict[str, Any]) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"id": "i2", "title": _noise(MAX_TITLE + 1)}, f"title: is longer than {MAX_TITLE:,} characters"),
        (
            {"id": "i2", "title": _noise(800, 0x4E00, 0x9FFF)},  # 800 characters, 2,400 bytes
            f"title: is longer than {MAX_TITLE_ID_BYTES:,} bytes of UTF-8 together with the item id",
        ),
        ({"id": "i2", "tags": [f"t{n}" for n in range(MAX_TAGS + 1)]}, f"tags: has more than {MAX_TAGS:,}"),
        ({"id": "i2", "tags": {f"t{n}": 0.5 for n in range(16_001)}}, f"tags: has more than {MAX_TAGS:,}"),
    ],
)
def test_titles_and_tags_past_the_bounds_are_bad_lines(
    catalogue: psycopg.Connection[Any], tmp_path: Path, row: dict[str, Any], needle: str
) -> None:
    path = _items(tmp_path, {"id": "i3", "title": "Three"}, row)
    with pytest.raises(InvalidInput, match=f"items.jsonl:2: {needle}"):
        import_file(catalogue, "items", path)
    result = import_file(catalogue, "items", path, skip_bad=True)
    assert (result.stored, [e.line for e in result.skipped]) == (1, [2])


def test_items_at_the_bounds_are_stored(catalogue: psycopg.Connection[Any], tmp_path: Path) -> None:
    """The worst case the bounds allow: id and provider of 256 four-byte characters, the rest of
    the title budget in incompressible text; and an item with MAX_TAGS tags."""
    item_id = _noise(MAX_ID, 0x1F300, 0x1FAFF)
    provider = _noise(MAX_ID, 0x1F300, 0x1FAFF)
    title = _noise(MAX_TITLE_ID_BYTES - len(item_id.encode()))
    wide = {"id": item_id, "title": title, "provider": provider, "created_at": "2024-01-01T00:00:00Z"}
    long_title = {"id": "i4", "title": _noise(MAX_TITLE), "provider": provider}
    tagged = {"id": "i5", "title": "Five", "tags": [f"t{n}" for n in range(MAX_TAGS)]}
    assert import_file(catalogue, "items", _items(tmp_path, wide, long_title, tagged)).stored == 3
    row = catalogue.execute("select title, provider_id from items where id = %s", (item_id,)).fetchone()
    assert (row["title"], row["provider_id"]) == (title, provider)
    tags = catalogue.execute("select count(*) as n from item_tags where item_id = 'i5'").fetchone()
    assert tags["n"] == MAX_TAGS
