"""The address policy for URLs a user gives (audio_url, callback_url, their redirects): one row a range."""

from __future__ import annotations

import asyncio

import pytest

from app.outbound.guard import Target, TargetRefused, check_target, is_public

# (address, why it is refused); each row is one range, with an address in it that matters.
REFUSED = [
    ("127.0.0.1", "IPv4 loopback"),
    ("10.1.2.3", "private 10/8"),
    ("172.16.5.4", "private 172.16/12"),
    ("192.168.0.10", "private 192.168/16"),
    ("169.254.169.254", "link-local: the cloud metadata service"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation TEST-NET-1"),
    ("198.51.100.1", "documentation TEST-NET-2"),
    ("203.0.113.1", "documentation TEST-NET-3"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("198.18.0.1", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast (SSDP)"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::1", "IPv6 loopback"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:a9fe:a9fe", "IPv4-mapped metadata service"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::127.0.0.1", "IPv4-compatible, private inside"),
    ("::8.8.8.8", "IPv4-compatible, public inside (deprecated form, refused whole)"),
    ("::ffff:0:a9fe:a9fe", "IPv4-translated, metadata service inside"),
    ("::ffff:0:8.8.8.8", "IPv4-translated, public inside"),
    ("64:ff9b::a9fe:a9fe", "NAT64 well-known prefix, metadata service inside"),
    ("64:ff9b::7f00:1", "NAT64 well-known prefix, loopback inside"),
    ("64:ff9b::808:808", "NAT64 well-known prefix, public inside"),
    ("64:ff9b:1::a9fe:a9fe", "NAT64 local-use prefix"),
    ("2002:a9fe:a9fe::1", "6to4, metadata service inside"),
    ("2002:c0a8:1::1", "6to4, private inside"),
    ("2002:808:808::1", "6to4, public inside"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "benchmarking"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation (2024)"),
    ("100::1", "discard-only"),
    ("5f00::1", "SRv6 identifiers"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local with a zone id"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "::ffff:8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::200e"]


@pytest.mark.parametrize(("address", "why"), REFUSED, ids=[row[0] for row in REFUSED])
def test_non_global_ranges_are_refused(address: str, why: str) -> None:
    assert not is_public(address), why


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_allowed(address: str) -> None:
    assert is_public(address)


TARGET = Target(field="audio_url", allow_setting="AUDIO_URL_ALLOW_PRIVATE")


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::ffff:0:a9fe:a9fe", "::a9fe:a9fe"])
def test_a_url_to_a_translated_address_is_refused_with_a_reason(address: str) -> None:
    with pytest.raises(TargetRefused, match=r"non-public address.*AUDIO_URL_ALLOW_PRIVATE=true"):
        asyncio.run(check_target(f"http://[{address}]/a.wav", False, TARGET))


def test_the_operator_setting_lets_private_targets_through() -> None:
    asyncio.run(check_target("http://[64:ff9b::a9fe:a9fe]/a.wav", True, TARGET))
