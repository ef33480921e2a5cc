"""The admin web pages: the console at ``/admin/`` and the API reference at ``/admin/api``.

The console (``static/console.html`` + ``console.js`` + ``accounts.js`` + ``analytics.js``
+ ``console.css``,
shipped as package data) is a client of the JSON API only: a person signed in with
e-mail and password rides on the session cookie (:mod:`mtdesk.admin.sessions`), an API
key or the operator token is held in the tab's sessionStorage; it asks the API for
everything, so these routes serve files, show no tenant data and need no token. The API reference lists every route of the admin sub-app
(so routes other parts add show up too), rendered on the server.

Every page is answered with a Content-Security-Policy that allows only this origin's
script, style and API calls (no inline script or style, no other host), no framing, and
no referrer (so nothing in the page's URL leaks to other sites).
"""

from __future__ import annotations

import functools
import html
from importlib import resources

from aiohttp import web

from mtdesk.admin.app import ADMIN_PREFIX, API_BASE, admin_routes
from mtdesk.core.appkeys import SETTINGS

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MT Desk admin API</title>
<link rel="stylesheet" href="console.css"></head>
<body>
<h1>MT Desk admin API</h1>
<p><a href="./">Back to the console</a></p>
<p>AI answers on Messenger, Instagram and WhatsApp. This page lists the admin API;
every call takes <code>Authorization: Bearer &lt;token&gt;</code>: the operator token
(<code>MTDESK_ADMIN_TOKEN</code>) creates tenants, each tenant's API key
(<code>mtd_…</code>) sees only that tenant's data. JSON in, JSON out; errors are
<code>{{"error": {{"field": …, "message": …}}}}</code>.</p>
<h2>Endpoints</h2>
<table><thead><tr><th>method</th><th>path</th></tr></thead><tbody>
{rows}
</tbody></table>
<h2>Getting started</h2>
<pre>curl -X POST {base}{api}/tenants -H "Authorization: Bearer $MTDESK_ADMIN_TOKEN" \\
     -d '{{"name": "Acme", "email": "owner@acme.example"}}'
curl -X POST {base}{api}/channels -H "Authorization: Bearer $API_KEY" \\
     -d '{{"channel": "messenger", "account_id": "PAGE_ID", "access_token": "…"}}'
curl -X PUT {base}{api}/bot -H "Authorization: Bearer $API_KEY" \\
     -d '{{"provider": "extractive"}}'</pre>
<p>The same verbs exist on the command line: <code>mtdesk tenant|channel|bot|keys --help</code>.</p>
</body></html>
"""


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# file name -> content type of the console's static files
STATIC = {
    "console.html": "text/html",
    "console.js": "text/javascript",
    "accounts.js": "text/javascript",
    "inbox.js": "text/javascript",
    "analytics.js": "text/javascript",
    "console.css": "text/css",
}


@functools.cache
def static_text(name: str) -> str:
    """A console file's text, read once from the package."""
    return (resources.files("mtdesk.admin") / "static" / name).read_text("utf-8")


def _page(text: str, content_type: str) -> web.Response:
    response = web.Response(text=text, content_type=content_type, headers=_SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    return response


async def console(request: web.Request) -> web.Response:
    return _page(static_text("console.html"), STATIC["console.html"])


async def console_script(request: web.Request) -> web.Response:
    return _page(static_text("console.js"), STATIC["console.js"])


async def accounts_script(request: web.Request) -> web.Response:
    return _page(static_text("accounts.js"), STATIC["accounts.js"])


async def analytics_script(request: web.Request) -> web.Response:
    return _page(static_text("analytics.js"), STATIC["analytics.js"])


async def inbox_script(request: web.Request) -> web.Response:
    return _page(static_text("inbox.js"), STATIC["inbox.js"])


async def console_style(request: web.Request) -> web.Response:
    return _page(static_text("console.css"), STATIC["console.css"])


async def api_reference(request: web.Request) -> web.Response:
    rows = []
    seen: set[tuple[str, str]] = set()
    for route in request.app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not info.startswith(ADMIN_PREFIX + API_BASE):
            continue
        if (route.method, info) in seen:
            continue
        seen.add((route.method, info))
        rows.append(
            f'<tr><td class="m">{html.escape(route.method)}</td>'
            f"<td><code>{html.escape(info)}</code></td></tr>"
        )
    settings = request.config_dict[SETTINGS]
    page = _PAGE.format(
        rows="\n".join(sorted(rows, key=lambda r: r.split("<code>")[1])),
        base=html.escape(settings.base_url),
        api=ADMIN_PREFIX + API_BASE,
    )
    return _page(page, "text/html")


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound(ADMIN_PREFIX + "/")


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get("/", console)
    r.add_get("", to_index)
    r.add_get("/console.js", console_script)
    r.add_get("/accounts.js", accounts_script)
    r.add_get("/inbox.js", inbox_script)
    r.add_get("/analytics.js", analytics_script)
    r.add_get("/console.css", console_style)
    r.add_get("/api", api_reference)
