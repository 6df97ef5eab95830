"""Delivery test fixtures (defined in msg_support)."""

from msg_support import receiver, smtp

__all__ = ["receiver", "smtp"]
