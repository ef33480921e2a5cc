"""The knowledge base refuses to fetch internal addresses (SSRF), and says why."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kb_harness import local_site

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.crawl import Fetcher, fetch_page
from mtdesk.retrieval.urlpolicy import AddressPolicy


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.1.2.3/admin", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:8080/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://100.64.0.1/", "private"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://localhost:9/", "loopback"),  # a name that resolves to loopback
        ("ftp://example.com/", "http"),
        ("http://user:pw@example.com/", "password"),
    ],
)
async def test_default_policy_refuses_internal_addresses(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as err:
        await AddressPolicy().check(url)
    assert err.value.field == "url" and why in err.value.problem


async def test_a_redirect_to_loopback_is_refused() -> None:
    async with local_site({"/": (200, "text/html", "<p>internal secret</p>")}) as inner:
        async with local_site({}, redirects={"/go": inner + "/"}) as redirector:
            # Only the redirecting site is let through (by exact host:port), not its target.
            policy = AddressPolicy(allow=frozenset({urlsplit(redirector).netloc}))
            async with Fetcher(policy) as fetcher:
                with pytest.raises(ValidationError) as err:
                    await fetcher.get(redirector + "/go", max_bytes=10_000)
    assert err.value.field == "url" and "loopback" in err.value.problem


async def test_the_resolver_itself_refuses_a_name_that_resolves_to_loopback() -> None:
    # "localhost:PORT" is not on the allow list even though 127.0.0.1:PORT is.
    async with local_site({"/": (200, "text/html", "<p>hello</p>")}) as site:
        port = urlsplit(site).port
        policy = AddressPolicy(allow=frozenset({f"127.0.0.1:{port}"}))
        with pytest.raises(ValidationError, match="loopback"):
            await fetch_page(f"http://localhost:{port}/", policy)
        page = await fetch_page(site + "/", policy)
    assert "hello" in page.document.sections[0].text


async def test_allow_private_lets_a_local_site_through() -> None:
    async with local_site({"/": (200, "text/html", "<title>Local</title><p>hello</p>")}) as site:
        page = await fetch_page(site + "/", AddressPolicy(allow_private=True))
    assert page.document.title == "Local"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[2002:7f00:1::]/", "127.0.0.1"),  # 6to4 of loopback
        ("http://[2002:a00:1::]/", "10.0.0.1"),  # 6to4 of RFC 1918
        ("http://[2002:a9fe:a9fe::]/latest/", "169.254.169.254"),  # 6to4 of the metadata service
        ("http://[fec0::1]/", "site-local"),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
        ("http://[64:ff9b::a00:1]/", "10.0.0.1"),  # NAT64 of RFC 1918
        ("http://[64:ff9b:1::a00:1]/", "NAT64"),
        ("http://[::127.0.0.1]/", "127.0.0.1"),  # IPv4-compatible
    ],
)
def test_ipv6_forms_that_tunnel_to_private_ipv4_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as err:
        AddressPolicy().check_url(url)
    assert err.value.field == "url" and why in err.value.problem


_PRIVATE_V4 = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "127.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
              "100.64.0.0/10", "0.0.0.0/8")
]


@st.composite
def private_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    net = draw(st.sampled_from(_PRIVATE_V4))
    return net[draw(st.integers(0, net.num_addresses - 1))]


def _embeddings(v4: ipaddress.IPv4Address, low: int) -> list[ipaddress.IPv6Address]:
    n = int(v4)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # IPv4-mapped
        ipaddress.IPv6Address(n),  # IPv4-compatible
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | low),  # 6to4, any subnet/host part
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # NAT64 well-known prefix
        ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | low),  # Teredo (server = v4)
        ipaddress.IPv6Address((0x0064FF9B0001 << 80) | n),  # local-use NAT64
    ]


@given(v4=private_v4(), low=st.integers(0, (1 << 64) - 1), form=st.sampled_from(["compressed", "exploded"]),
       upper=st.booleans(), port=st.sampled_from(["", ":80", ":8080"]))
def test_no_textual_form_of_a_private_ipv4_inside_ipv6_gets_through(
    v4: ipaddress.IPv4Address, low: int, form: str, upper: bool, port: str
) -> None:
    for addr in _embeddings(v4, low):
        text = getattr(addr, form)
        url = f"http://[{text.upper() if upper else text}]{port}/"
        with pytest.raises(ValidationError) as err:
            AddressPolicy().check_url(url)
        assert err.value.field == "url" and "refused" in err.value.problem


@given(low=st.integers(0, (1 << 80) - 1))
def test_every_site_local_address_is_refused(low: int) -> None:
    addr = ipaddress.IPv6Address((0xFEC0 << 112) | (low & ((1 << 118) - 1)))
    with pytest.raises(ValidationError):
        AddressPolicy().check_url(f"http://[{addr}]/")
