"""SSRF guard for outbound URLs: only http(s), and every address the host resolves to must be a
public one unless private targets are allowed in settings (`TAGLOOP_OUTBOUND_ALLOW_PRIVATE=1`).

Private, loopback, link-local (cloud metadata at 169.254.169.254), shared, reserved, multicast and
unspecified addresses are refused, for IPv4 and IPv6 (IPv4-mapped IPv6 checked as IPv4). The check
runs at send time, right before each request."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from tagloop.tools.errors import TagloopError


class UnsafeURL(TagloopError):
    """An outbound URL that tagloop refuses to call."""

    status = 422
    title = "outbound URL refused"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED)
    )


_SHARED = ipaddress.ip_network("100.64.0.0/10")


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise `UnsafeURL` unless `url` is http(s) and (all of) its host's addresses are public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(f"outbound URL must be http(s)://host/…, got scheme {parts.scheme!r}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise UnsafeURL(f"cannot resolve outbound host {parts.hostname!r}: {exc.strerror}") from None
    addresses = {str(info[4][0]) for info in infos}
    bad = sorted(a for a in addresses if not is_public(a))
    if bad or not addresses:
        raise UnsafeURL(
            f"outbound host {parts.hostname!r} resolves to a private or loopback address ({', '.join(bad)}); "
            "set TAGLOOP_OUTBOUND_ALLOW_PRIVATE=1 to allow it"
        )
