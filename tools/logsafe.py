"""What of a user may appear in logs: their id as a short stable hash (structured logs carry no
personal data, yet one user's lines can still be followed)."""

from __future__ import annotations

import hashlib


def hashed(user_id: str) -> str:
    """A user id as it may appear in logs."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:12]
