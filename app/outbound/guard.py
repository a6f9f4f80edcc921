"""Requests to URLs that callers give (audio_url downloads, webhook callbacks), safe from SSRF.

A caller-supplied URL could point the server at its own network: a cloud metadata endpoint
(169.254.169.254), an admin page on localhost, a database on 10.0.0.5. `GuardedTransport`
resolves every request's host itself, refuses it unless each address the name resolves to is
public, and then connects to the address it checked, with the name kept in the Host header and
in TLS (SNI and the certificate check). A name that resolves to another address a moment later
(DNS rebinding) cannot slip past, because nothing resolves it a second time. Each redirect hop is
a new request through the same transport, so it is checked the same way.

This is the one address policy for every connection a user's input chooses (audio_url,
callback_url and their redirects). Endpoints the operator configures (HF_ENDPOINT, REDIS_URL)
are not user input and do not pass through it.
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


# Ranges refused beyond what `is_global` already excludes (its answer also changes between Python
# releases): each either lies outside the public internet or carries an IPv4 address that a
# gateway, a tunnel or the host's own stack may turn into a connection to it, such as NAT64
# `64:ff9b::a9fe:a9fe` to the metadata service at 169.254.169.254. None is a place a public file
# or webhook receiver lives, so each is refused whole, whatever IPv4 address it carries.
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # IPv4-compatible ::a.b.c.d (deprecated), with :: and ::1
        "::ffff:0:0:0/96",  # IPv4-translated ::ffff:0:a.b.c.d (SIIT)
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/48",  # NAT64, local-use prefix
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing (SRv6) identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)


def is_public(address: str) -> bool:
    """Whether a user's URL may lead here: a global unicast address outside every refused range."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d itself on a dual-stack socket: judge that
    return ip.is_global and not any(ip in network for network in _REFUSED_NETWORKS)


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
