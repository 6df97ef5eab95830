"""Outbound endpoint URLs checked before use, without resolving them: the webhook channel's URL and
the LLM server's base URL (agent/settings.py) must be http(s)://host… with a valid host and port,
and hold no space or control character. The SSRF guard (tools/messaging/ssrf.py) checks the
addresses a host resolves to at send time. Messages never echo the URL: it may hold credentials."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from tagloop.tools.errors import ConfigError

_LABELS = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")


def http_url_problem(url: str) -> str | None:
    """What is wrong with `url` as an http(s) endpoint ("must be an http(s)://host/… URL…"), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be an http(s)://host/… URL; its host or port is not valid"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        got = f"scheme {parts.scheme!r}" if parts.scheme not in ("http", "https") else "no host"
        return f"must be an http(s)://host/… URL, got {got}"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "must be an http(s)://host/… URL; it holds a space or control character"
    if parts.port == 0 or not _host_name(parts.hostname):
        return "must be an http(s)://host/… URL; its host or port is not valid"
    return None


def check_endpoint(url: str, setting: str) -> None:
    """A `ConfigError` naming `setting` unless `url` is a usable http(s) endpoint (`http_url_problem`)."""
    problem = http_url_problem(url)
    if problem:
        raise ConfigError(f"{setting} {problem}")


def _host_name(host: str) -> bool:
    """An IP address, or a DNS name (internationalized ones in their IDNA form) of valid labels."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(ascii_host) <= 253 and bool(_LABELS.match(ascii_host))
