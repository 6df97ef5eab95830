"""SSRF guard for outbound URLs: only http(s), and every address the host resolves to must be a
public one unless private targets are allowed in settings (`TAGLOOP_OUTBOUND_ALLOW_PRIVATE=1`).

Private, loopback, link-local (cloud metadata at 169.254.169.254), shared (100.64.0.0/10), IETF
protocol assignments (192.0.0.0/24), documentation, benchmarking, reserved, multicast and unspecified
addresses are refused, for IPv4 and IPv6 — whatever this Python's `ipaddress` tables say. An IPv6
address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64
64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32 server and client) is refused
when that IPv4 address is. The check runs at send time, right before each request, and
`pinned_transport` closes the DNS-rebinding gap: its connections resolve the host once, check those
addresses and connect to one of them (the URL's host name still goes in the Host header and, for
https, in SNI and the certificate check), so a name cannot resolve to a public address for the check
and to a private one for the connection.

A host name that does not resolve (a resolver outage, `EAI_AGAIN`, or a name not found right now)
is no refusal: it raises `UnresolvedHost`, which a delivery retries like a connection error."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from tagloop.tools.errors import TagloopError


class UnsafeURL(TagloopError):
    """An outbound URL that tagloop refuses to call."""

    status = 422
    title = "outbound URL refused"


class UnresolvedHost(TagloopError):
    """An outbound host whose name did not resolve: nothing was refused, a later attempt may work."""

    status = 502
    title = "outbound host not resolved"


def unresolved(host: str, exc: socket.gaierror) -> UnresolvedHost:
    return UnresolvedHost(f"cannot resolve outbound host {host!r}: {exc.strerror or exc}")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",  # multicast, reserved, broadcast
    )
)
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/8",  # unspecified, loopback, IPv4-compatible (deprecated) and the rest of ::/8
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the IPv4 address, translated
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, compatible, 6to4, Teredo)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # (server, client)
    return found


def _flags_public(ip: IPAddress) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or getattr(ip, "is_site_local", False)
    )


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _flags_public(ip) and not any(ip in net for net in _V4_NOT_PUBLIC)
    inner = embedded_ipv4(ip)
    if ip.ipv4_mapped is not None or ip in _NAT64:  # that IPv4 address, mapped or translated
        return is_public(str(inner[0]))
    return (
        all(is_public(str(v4)) for v4 in inner)
        and _flags_public(ip)
        and not any(ip in net for net in _V6_NOT_PUBLIC)
    )


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order; `UnresolvedHost` when it does not
    resolve, `UnsafeURL` unless every one of them is public."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise unresolved(host, exc) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    bad = sorted(a for a in addresses if not is_public(a))
    if bad or not addresses:
        raise UnsafeURL(
            f"outbound host {host!r} resolves to a private or loopback address ({', '.join(bad)}); "
            "set TAGLOOP_OUTBOUND_ALLOW_PRIVATE=1 to allow it"
        )
    return addresses


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise `UnsafeURL` unless `url` is http(s) and (all of) its host's addresses are public
    (`UnresolvedHost` when, private targets not allowed, its host does not resolve)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(f"outbound URL must be http(s)://host/…, got scheme {parts.scheme!r}")
    if allow_private:
        return
    public_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


class _PinnedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to addresses `public_addresses` has just checked."""

    def __init__(self) -> None:
        self._sync = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in public_addresses(host.strip("[]"), port):
            try:
                return self._sync.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # public_addresses returns at least one address
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise UnsafeURL("outbound requests go over TCP only")

    def sleep(self, seconds: float) -> None:
        self._sync.sleep(seconds)


def pinned_transport() -> httpx.HTTPTransport:
    """An httpx transport whose connections go only to the public addresses checked for them (see
    the module docstring). Not for a URL that goes through a proxy (which resolves the name itself):
    the webhook channel then uses httpx's own transport with the environment's proxy."""
    transport = httpx.HTTPTransport()
    # httpx builds its pool without a way to pass a network backend: same pool, our backend
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=_PinnedBackend(),
        max_connections=100,  # httpx's own limits (httpcore's defaults keep idle connections for ever)
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
    )
    return transport
