"""The one root error type of tagloop and its family.

Every error a user can cause (bad input, unknown ids, a database without pgvector) is a
`TagloopError` subclass whose message says what to fix. The CLI prints the message without a
traceback; the HTTP app maps each class once to an RFC 9457 problem+json response.
"""

from __future__ import annotations


class TagloopError(Exception):
    """Root of every error tagloop raises on purpose."""

    status = 400
    title = "tagloop error"


class InvalidInput(TagloopError):
    """Input that does not meet the contract; the message names file/line/field or index/field."""

    status = 422
    title = "invalid input"


class NotFound(TagloopError):
    status = 404
    title = "not found"


class Conflict(TagloopError):
    status = 409
    title = "conflict"


class DatabaseError(TagloopError):
    """The database cannot be reached or lacks what tagloop needs (e.g. pgvector)."""

    status = 503
    title = "database unavailable"


class ConfigError(TagloopError):
    status = 500
    title = "configuration error"
