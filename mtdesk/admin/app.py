"""The admin sub-app: JSON API under ``/admin/api/v1/`` and a web page at ``/admin/``.

The composition root calls :func:`setup_admin` on the one aiohttp application after
setting ``app[REDIS]``, ``app[SETTINGS]`` and ``app[CLOCK]`` (and optionally ``app[VAULT]``;
when absent it is built from ``MTDESK_ENCRYPTION_KEYS`` when first needed).

Other parts add their routes by naming a module in :data:`ROUTE_MODULES`; each offers
``add_routes(admin: web.Application) -> None`` and registers paths relative to
``/admin`` (e.g. ``/api/v1/knowledge``). Inside a handler, use
``mtdesk.admin.auth.tenant_scope(request)`` for the tenant acted for,
``mtdesk.admin.http.read_json`` for the body, ``mtdesk.admin.http.json_response`` to answer,
and raise the errors of :mod:`mtdesk.core.errors` (the middleware maps them).
"""

from __future__ import annotations

import importlib

from aiohttp import web

from mtdesk.admin.auth import auth_middleware
from mtdesk.admin.http import error_middleware
from mtdesk.core.appkeys import SETTINGS
from mtdesk.core.errors import ConfigError
from mtdesk.policy.vault import VAULT, TokenVault

ROUTE_MODULES: tuple[str, ...] = (
    "mtdesk.admin.provisioning",
    "mtdesk.admin.conversations",
    "mtdesk.admin.knowledge",
    "mtdesk.admin.privacy",
    "mtdesk.admin.billing",
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


def build_admin() -> web.Application:
    admin = web.Application(middlewares=[error_middleware, auth_middleware])
    for name in ROUTE_MODULES:
        importlib.import_module(name).add_routes(admin)
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
