"""SSRF guard: user-supplied URLs (webhooks, image sources) may only reach public addresses
unless configured otherwise.

Checked when a job is submitted (a clear error) and again at connect time, where the checked
address is the one connected to, so DNS rebinding cannot swap in a private address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowPrivate = bool | Sequence[IPNetwork]
"""True allows every address, a list allows those ranges besides the public internet."""


class RefusedURL(ValueError):
    """The URL is malformed, does not resolve, or reaches a refused address."""


class RefusedAddress(RefusedURL):
    """The host resolves to a loopback, private, link-local or otherwise non-public address."""

    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(
            f"webhook host {host!r} resolves to {address}, a non-public address"
            " (allow it with allow_private_webhooks)"
        )
        self.host = host
        self.address = address


def redact(url: str) -> str:
    """`url` as it may be shown: no query (presigned URLs carry signatures there), fragment
    or user:password. Plain text work, so even a URL httpx cannot parse is safe to print."""
    head = re.split(r"[?#]", url, maxsplit=1)[0]
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@", r"\1", head)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address reached."""

_NEVER_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"),)
"""RFC 8215 local-use NAT64, which older Pythons count as global."""


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d)
    address is: the socket connects to it, so it alone decides."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if int(address) >> 32 == 0 and int(address) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(address))
    return address


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that traffic to a NAT64, 6to4 or Teredo address is forwarded to."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def address_allowed(address: IPAddress, allow: AllowPrivate) -> bool:
    if allow is True:
        return True
    address = _unwrapped(address)  # ::ffff:127.0.0.1 is loopback in disguise
    if not isinstance(allow, bool) and any(address in network for network in allow):
        return True  # an explicitly allowed range, embedded IPv4 or not
    if not address.is_global or address.is_multicast:
        return False
    if any(address in network for network in _NEVER_PUBLIC):
        return False
    # 64:ff9b::7f00:1 or 2002:7f00:1:: reach 127.0.0.1 through a translator or relay.
    return all(address_allowed(inner, allow) for inner in _embedded_ipv4(address))


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RefusedURL(f"cannot resolve {host!r}: {error}") from error
    # Drop an IPv6 zone ("fe80::1%eth0"): the address itself decides.
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


def checked_address(url: httpx.URL, allow: AllowPrivate) -> IPAddress:
    """The address to connect to for `url`, after checking all the host resolves to."""
    if url.scheme not in ("http", "https") or not url.host:
        raise RefusedURL(f"URL must be http(s)://host/...: {redact(str(url))}")
    addresses = resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
    refused = [address for address in addresses if not address_allowed(address, allow)]
    if refused:
        raise RefusedAddress(url.host, refused[0])
    return addresses[0]


def check_url(url: str, allow: AllowPrivate) -> None:
    """Raise RefusedURL unless `url` is an http(s) URL reaching allowed addresses."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise RefusedURL(f"invalid URL: {error}") from error
    checked_address(parsed, allow)


class GuardedTransport(httpx.HTTPTransport):
    """Connects to the checked IP while keeping the Host header and the TLS name (SNI and
    certificate check) of the original host."""

    def __init__(self, allow: AllowPrivate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._allow = allow

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = checked_address(request.url, self._allow)
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = request.url.host
        # A copy, not the request itself: httpx resolves a relative redirect against
        # request.url, and the next hop must keep the host name (Host, SNI, allow-lists).
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return super().handle_request(pinned)
