"""SSRF guard: user-supplied URLs may only reach public addresses unless configured otherwise.

Checked when a job is submitted (a clear error) and again at connect time, where the checked
address is the one connected to, so DNS rebinding cannot swap in a private address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowPrivate = bool | Sequence[IPNetwork]
"""True allows every address, a list allows those ranges besides the public internet."""


class InvalidWebhookURL(ValueError):
    """The webhook URL is malformed, does not resolve, or reaches a refused address."""


class RefusedAddress(InvalidWebhookURL):
    """The host resolves to a loopback, private, link-local or otherwise non-public address."""


def address_allowed(address: IPAddress, allow: AllowPrivate) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback in disguise
    if address.is_global and not address.is_multicast:
        return True
    if isinstance(allow, bool):
        return allow
    return any(address in network for network in allow)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise InvalidWebhookURL(f"cannot resolve {host!r}: {error}") from error
    # Drop an IPv6 zone ("fe80::1%eth0"): the address itself decides.
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def checked_address(url: httpx.URL, allow: AllowPrivate) -> IPAddress:
    """The address to connect to for `url`, after checking all the host resolves to."""
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidWebhookURL(f"webhook URL must be http(s)://host/...: {url}")
    addresses = resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
    refused = [address for address in addresses if not address_allowed(address, allow)]
    if refused:
        raise RefusedAddress(
            f"webhook host {url.host!r} resolves to {refused[0]}, a non-public address"
            " (allow it with allow_private_webhooks)"
        )
    return addresses[0]


def check_url(url: str, allow: AllowPrivate) -> None:
    """Raise InvalidWebhookURL unless `url` is an http(s) URL reaching allowed addresses."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise InvalidWebhookURL(f"invalid webhook URL: {error}") from error
    checked_address(parsed, allow)


class GuardedTransport(httpx.HTTPTransport):
    """Connects to the checked IP while keeping the Host header and the TLS name (SNI and
    certificate check) of the original host."""

    def __init__(self, allow: AllowPrivate, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._allow = allow

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        address = checked_address(request.url, self._allow)
        request.url = request.url.copy_with(host=str(address))
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return super().handle_request(request)
