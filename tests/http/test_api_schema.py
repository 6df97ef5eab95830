"""Property test of the whole API against its own OpenAPI document (schemathesis): for generated
requests, authenticated, no 5xx and no status, content type or body outside the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from api_support import AUTH, make_settings, seed
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tagloop.agent.http import create_app

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    app = create_app(make_settings(db_url, tmp_path), pool_size=4)
    with TestClient(app) as client:  # runs the lifespan: pool opened, schema migrated
        seed(client)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 11
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def conforms(case: Any) -> None:
                case.call_and_validate(headers=AUTH, checks=CHECKS)

            conforms()


def test_the_openapi_document_needs_a_key_unless_docs_are_public(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """SPEC §4: no endpoint but /healthz is open, the schema included; `public_docs` opens it and /docs."""
    with TestClient(create_app(make_settings(db_url, tmp_path), pool_size=2)) as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers={"authorization": "Bearer wrong"}).status_code == 401
        document = client.get("/openapi.json", headers=AUTH)
        assert document.status_code == 200 and "/v1/events" in document.json()["paths"]
        assert "/openapi.json" not in document.json()["paths"]
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    with TestClient(create_app(make_settings(db_url, tmp_path, public_docs=True), pool_size=2)) as client:
        assert client.get("/openapi.json").json() == document.json()
        assert client.get("/docs").status_code == 200
