"""The admin sub-app: JSON API under ``/admin/api/v1/`` and a web page at ``/admin/``.

The composition root calls :func:`setup_admin` on the one aiohttp application after
setting ``app[REDIS]``, ``app[SETTINGS]`` and ``app[CLOCK]`` (and optionally ``app[VAULT]``;
when absent it is built from ``MTDESK_ENCRYPTION_KEYS`` when first needed).

Other parts add their routes by naming a module in :data:`ROUTE_MODULES`; each offers
``add_routes(admin: web.Application) -> None`` and registers paths relative to
``/admin`` (e.g. ``/api/v1/knowledge``) through :func:`admin_routes`. Inside a handler, use
``mtdesk.admin.auth.tenant_scope(request)`` for the tenant acted for,
``mtdesk.admin.decode.read_body`` for the body (a Struct of :mod:`mtdesk.admin.bodies`), ``mtdesk.admin.http.json_response`` to answer,
and raise the errors of :mod:`mtdesk.core.errors` (:func:`guarded` maps them).

No aiohttp middleware: a sub-app with middlewares makes aiohttp wrap EVERY request of
the whole application (webhooks included) in its middleware chain, ~2 µs per webhook
POST. So each admin handler is wrapped once, at registration, with the same two steps a
middleware did (authentication under ``/admin/api/``, errors → JSON answers), and
:func:`build_admin` refuses to start with a route that was added without them.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from aiohttp import web

from mtdesk.admin.auth import API_PREFIX, authenticate
from mtdesk.admin.http import Handler, answer_errors
from mtdesk.core.appkeys import SETTINGS
from mtdesk.core.errors import ConfigError
from mtdesk.policy.vault import VAULT, TokenVault

ROUTE_MODULES: tuple[str, ...] = (
    "mtdesk.admin.provisioning",
    "mtdesk.admin.conversations",
    "mtdesk.admin.inbox",
    "mtdesk.admin.live",
    "mtdesk.admin.analytics",
    "mtdesk.admin.knowledge",
    "mtdesk.admin.privacy",
    "mtdesk.admin.billing",
    "mtdesk.admin.cluster",
    "mtdesk.admin.accounts",
    "mtdesk.admin.apikeys",
    "mtdesk.admin.connect",
    "mtdesk.admin.ui",
)

ADMIN_PREFIX = "/admin"
API_BASE = "/api/v1"  # relative to the admin sub-app


def vault_of(request: web.Request) -> TokenVault:
    """The token vault of the app (ConfigError naming MTDESK_ENCRYPTION_KEYS if none)."""
    vault = request.config_dict.get(VAULT)
    if vault is not None:
        return vault
    return TokenVault.from_settings(request.config_dict[SETTINGS])


def guarded(handler: Handler) -> Handler:
    """``handler`` with the admin's authentication (paths under ``/admin/api/``) and its
    error answers (:func:`mtdesk.admin.http.answer_errors`)."""

    open_to_all = getattr(handler, "__mtdesk_public__", False)

    async def authenticated(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX) and not open_to_all:
            await authenticate(request)
        return await handler(request)

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        return await answer_errors(request, authenticated)

    guard.__mtdesk_guarded__ = True  # type: ignore[attr-defined]
    return guard


class AdminRoutes:
    """``admin.router``'s ``add_*`` methods, each handler :func:`guarded`."""

    def __init__(self, admin: web.Application) -> None:
        self._router = admin.router

    def add_get(self, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_get(path, guarded(handler), **kw)

    def add_post(self, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_post(path, guarded(handler), **kw)

    def add_put(self, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_put(path, guarded(handler), **kw)

    def add_patch(self, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_patch(path, guarded(handler), **kw)

    def add_delete(self, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_delete(path, guarded(handler), **kw)

    def add_route(self, method: str, path: str, handler: Handler, **kw: Any) -> web.AbstractRoute:
        return self._router.add_route(method, path, guarded(handler), **kw)


def admin_routes(admin: web.Application) -> AdminRoutes:
    return AdminRoutes(admin)


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """Any other path under ``/admin``: 405 (with Allow) when another method takes it,
    else 404 — as JSON errors, like every admin answer."""
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def build_admin(route_modules: tuple[str, ...] = ROUTE_MODULES) -> web.Application:
    admin = web.Application()
    for name in route_modules:
        importlib.import_module(name).add_routes(admin)
    admin_routes(admin).add_route("*", "/{_unmatched:.*}", _unmatched)
    for route in admin.router.routes():
        if not getattr(route.handler, "__mtdesk_guarded__", False):
            raise RuntimeError(
                f"admin route {route.method} {route.resource and route.resource.canonical} "
                "was added without mtdesk.admin.app.admin_routes (no authentication)"
            )
    return admin


def setup_admin(app: web.Application) -> web.Application:
    """Mount the admin sub-app at ``/admin``; returns it."""
    if VAULT not in app and SETTINGS in app:
        try:
            app[VAULT] = TokenVault.from_settings(app[SETTINGS])
        except ConfigError:
            pass  # admin still serves reads; connecting a channel answers 503 naming the key
    admin = build_admin()
    app.add_subapp(ADMIN_PREFIX, admin)
    return admin
