"""The SSRF guard: IPv6 forms carrying a private IPv4 address (6to4, NAT64, IPv4-compatible,
Teredo) and the IETF protocol assignments block are refused; and a host name that resolves to a
public address for the check and to a private one for the connection (DNS rebinding) never gets a
request: connections go only to the addresses just checked."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from msg_support import SECRET, Receiver, webhook_message

from tagloop.tools.messaging import ssrf
from tagloop.tools.messaging.channels import DeliveryError
from tagloop.tools.messaging.ssrf import UnsafeURL, check_url, is_public
from tagloop.tools.messaging.webhook import WebhookChannel

MESSAGE = webhook_message("9")


@pytest.mark.parametrize(
    "url",
    [
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254 (cloud metadata)
        "http://192.0.0.8/",  # IETF protocol assignments 192.0.0.0/24
        "http://[::ffff:192.0.0.8]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[64:ff9b:1::a00:1]/",  # local-use NAT64
        "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
        "http://[2001:0:808:808::80ff:fffe]/",  # Teredo, client 127.0.0.1
        "http://[fec0::1]/",  # site-local
    ],
)
def test_ssrf_guard_refuses_ipv4_carried_in_ipv6_and_protocol_assignments(url: str) -> None:
    with pytest.raises(UnsafeURL, match="private or loopback"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "2002:808:808::", "64:ff9b::808:808", "::ffff:8.8.8.8"]
)
def test_ssrf_guard_allows_public_addresses_in_every_form(address: str) -> None:
    assert is_public(address)


def _fake_dns(monkeypatch: pytest.MonkeyPatch, name: str, answers: list[str]) -> list[str]:
    """`name` resolves to answers[0], then answers[1], …, the last one ever after; other names (and
    numeric hosts) as usual. Returns the log of answers given."""
    real = socket.getaddrinfo
    given: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers[min(len(given), len(answers) - 1)]
        given.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return given


def test_a_name_rebinding_to_loopback_after_the_check_gets_no_request(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    given = _fake_dns(monkeypatch, "rebind.test", ["93.184.216.34", "127.0.0.1"])
    channel = WebhookChannel(f"http://rebind.test:{port}/hook", SECRET, allow_private=False, timeout=3)
    with pytest.raises(DeliveryError, match="private or loopback") as refused:
        channel.send(MESSAGE)
    channel.close()
    assert not refused.value.retryable
    assert given == ["93.184.216.34", "127.0.0.1"] and not receiver.seen


def test_the_pinned_connection_goes_to_the_checked_address_with_the_host_name_kept(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for a public receiver: here loopback counts as public, and the name resolves there."""
    monkeypatch.setattr(ssrf, "is_public", lambda address: address == "127.0.0.1")
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    given = _fake_dns(monkeypatch, "hook.test", ["127.0.0.1"])
    channel = WebhookChannel(f"http://hook.test:{port}/hook", SECRET, allow_private=False, timeout=3)
    channel.send(MESSAGE)
    channel.close()
    assert len(given) == 2  # the check, then the connection's own resolution (checked too)
    (request,) = receiver.seen
    assert request["headers"]["host"] == f"hook.test:{port}"
    assert request["headers"]["webhook-id"] == MESSAGE.message_id


def test_a_deployments_egress_proxy_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the only way out is a proxy (HTTP(S)_PROXY), webhooks go through it, as before the
    connections were pinned; the URL is still checked before each send."""
    import socketserver
    import threading

    seen: list[bytes] = []

    class Proxy(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(65536).split(b"\r\n")[0])
            self.request.sendall(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")

    with socketserver.TCPServer(("127.0.0.1", 0), Proxy) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        given = _fake_dns(monkeypatch, "hooks.example.org", ["93.184.216.34"])
        channel = WebhookChannel("http://hooks.example.org/hook", SECRET, allow_private=False, timeout=3)
        channel.send(MESSAGE)
        channel.close()
        proxy.shutdown()
    assert seen == [b"POST http://hooks.example.org/hook HTTP/1.1"]
    assert given  # checked
