"""Fixtures of the HTTP API tests: a TestClient on an app bound to the session's test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_support import make_settings
from fastapi.testclient import TestClient

from tagloop.agent.http import create_app


@pytest.fixture
def client(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(db_url, tmp_path), pool_size=4)) as c:
        yield c
