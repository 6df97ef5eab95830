"""tagloop's HTTP API (SPEC §4): `create_app(settings)` builds the FastAPI app."""

from tagloop.agent.http.app import create_app

__all__ = ["create_app"]
