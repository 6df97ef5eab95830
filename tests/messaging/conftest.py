"""Delivery test fixtures (defined in msg_support)."""

from msg_support import receiver

__all__ = ["receiver"]
