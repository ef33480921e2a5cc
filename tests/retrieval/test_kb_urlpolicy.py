"""The knowledge base refuses to fetch internal addresses (SSRF), and says why."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
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
