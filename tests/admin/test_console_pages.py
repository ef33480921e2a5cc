"""The web console's files as a browser gets them: the right content types, and a
Content-Security-Policy that lets the page run only its own script (no inline code,
no other host), with no token needed to load them."""

from __future__ import annotations

import re

import pytest
from admin_harness import client_fixture  # noqa: F401 - the `client` fixture
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


def _directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


async def test_the_console_files_are_served_with_their_content_types(client: Client) -> None:
    for path, ctype in (("/admin/", "text/html"), ("/admin/console.js", "text/javascript"),
                        ("/admin/analytics.js", "text/javascript"),
                        ("/admin/console.css", "text/css"), ("/admin/api", "text/html")):
        r = await client.get(path)
        assert r.status == 200, path
        assert r.content_type == ctype, path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/admin", allow_redirects=False)).headers["Location"] == "/admin/"


async def test_the_console_page_loads_only_its_own_script_and_style(client: Client) -> None:
    r = await client.get("/admin/")
    page = await r.text()
    csp = _directives(r.headers["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no other host
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    # the page itself obeys it: external scripts of ours, no inline script or handler
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert sorted(scripts) == sorted([(' src="console.js" defer', ""),
                                      (' src="accounts.js" defer', ""),
                                      (' src="inbox.js" defer', ""),
                                      (' src="analytics.js" defer', "")])
    assert not re.search(r"\son[a-z]+\s*=", page)
    assert "<style" not in page and "style=" not in page
    assert "http://" not in page and "https://" not in page.replace('placeholder="https://…"', "")


@pytest.mark.parametrize("name", ["console.js", "accounts.js", "analytics.js", "inbox.js"])
async def test_the_console_script_never_writes_html_from_data(client: Client, name: str) -> None:
    script = await (await client.get(f"/admin/{name}")).text()
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script
    assert "localStorage" not in script and "document.cookie" not in script
    if name == "console.js":
        assert "sessionStorage" in script
        # downloads (the export) are made from the fetched answer, never a URL with the token
        assert "URL.createObjectURL" in script and "revokeObjectURL" in script
    assert not re.search(r"[?&](token|access_token|api_key)=", script)


async def test_the_api_reference_stays_reachable_and_lists_the_routes(client: Client) -> None:
    r = await client.get("/admin/api")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    page = await r.text()
    assert "<style" not in page
    for path in ("/admin/api/v1/tenants", "/admin/api/v1/knowledge", "/admin/api/v1/bot"):
        assert path in page
    console = await (await client.get("/admin/")).text()
    assert 'href="api"' in console
