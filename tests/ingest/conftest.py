"""Shared by the ingest tests: a store holding one user (u1) and one item (i1, provider p)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tagloop.tools.ingest.loader import import_file


@pytest.fixture
def catalogue(db: psycopg.Connection[Any], tmp_path: Path) -> psycopg.Connection[Any]:
    """u1 and i1 (test_import.py has a richer catalogue of its own)."""
    (tmp_path / "u.jsonl").write_text('{"id": "u1"}\n', encoding="utf-8")
    (tmp_path / "i.jsonl").write_text('{"id": "i1", "title": "One", "provider": "p"}\n', encoding="utf-8")
    import_file(db, "users", tmp_path / "u.jsonl")
    import_file(db, "items", tmp_path / "i.jsonl")
    return db
