"""Requests to URLs that callers give (audio_url downloads, webhook callbacks), safe from SSRF.

A caller-supplied URL could point the server at its own network: a cloud metadata endpoint
(169.254.169.254), an admin page on localhost, a database on 10.0.0.5. `GuardedTransport`
resolves every request's host itself, refuses it unless each address the name resolves to is
public, and then connects to the address it checked, with the name kept in the Host header and
in TLS (SNI and the certificate check). A name that resolves to another address a moment later
(DNS rebinding) cannot slip past, because nothing resolves it a second time. Each redirect hop is
a new request through the same transport, so it is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


class TargetRefused(Exception):
    """The URL may not be used; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class Target:
    """Whose URL this is, for messages: the form field, and the setting that allows private addresses."""

    field: str
    allow_setting: str


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, whatever its spelling
    return ip.is_global and not ip.is_multicast


def check_url(url: str, target: Target) -> tuple[str, str, int]:
    """The scheme, host and port of an absolute http(s) URL; TargetRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise TargetRefused(f"{target.field}: not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"{target.field}: give an absolute http:// or https:// URL")
    return parts.scheme, parts.hostname, port


async def public_addresses(host: str, port: int, target: Target) -> list[str]:
    """Every address the host resolves to, when all of them are public; TargetRefused otherwise."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise TargetRefused(f"{target.field}: the host {host!r} could not be resolved") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses or not all(is_public(address) for address in addresses):
        raise TargetRefused(
            f"{target.field}: {host!r} is a loopback, private, link-local or otherwise non-public address; "
            f"this server only connects to public addresses (its operator can allow others with "
            f"{target.allow_setting}=true)"
        )
    return addresses


async def check_target(url: str, allow_private: bool, target: Target) -> None:
    """Refuse, before any work is queued, a URL that the transport would refuse later."""
    _, host, port = check_url(url, target)
    if not allow_private:
        await public_addresses(host, port, target)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to public addresses (unless private ones are allowed)."""

    def __init__(self, allow_private: bool, target: Target, verify: ssl.SSLContext | bool = True) -> None:
        """`verify` as httpx takes it: True checks certificates against the usual CA bundle."""
        self._allow_private = allow_private
        self._target = target
        self._inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        check_url(str(url), self._target)
        if self._allow_private:
            return await self._inner.handle_async_request(request)
        addresses = await public_addresses(url.host, url.port or (443 if url.scheme == "https" else 80), self._target)
        # Connect to the checked address; the Host header (set from the URL when the request was
        # built) and, for https, SNI and the certificate check keep using the name.
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=addresses[0]),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()
