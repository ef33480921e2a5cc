"""The admin web page at ``/admin/``: what the API offers, rendered on the server.

It lists every route of the admin sub-app (so routes other parts add show up too) with
how to authenticate; it shows no tenant data and needs no token.
"""

from __future__ import annotations

import html

from aiohttp import web

from mtdesk.admin.app import ADMIN_PREFIX, API_BASE, admin_routes
from mtdesk.core.appkeys import SETTINGS

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MT Desk admin</title>
<style>
 body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
        padding: 0 1rem; color: #1b1f24; }}
 h1 {{ font-size: 1.6rem; }} code, pre {{ background: #f3f4f6; border-radius: 4px; }}
 pre {{ padding: .8rem; overflow-x: auto; }} table {{ border-collapse: collapse; width: 100%; }}
 th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e5e7eb; }}
 .m {{ font-weight: 600; font-family: monospace; }}
</style></head>
<body>
<h1>MT Desk admin</h1>
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


async def index(request: web.Request) -> web.Response:
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
    return web.Response(text=page, content_type="text/html")


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound(ADMIN_PREFIX + "/")


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get("/", index)
    r.add_get("", to_index)
