"""Messaging: composing message copy and delivering it through channels."""
