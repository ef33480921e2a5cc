"""Typed aiohttp application state shared by the gateway and admin routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aiohttp import web

from mtdesk.core.clock import Clock
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
CLOCK = web.AppKey("clock", Clock)

CIPHER = web.AppKey("tenant_cipher", TenantCipher)



def cipher_of(state: web.Application | Mapping[Any, Any]) -> TenantCipher:
    """The tenant data keys of an app (or a request's ``config_dict``): app[CIPHER] when
    the composition set it, else one made from app[REDIS] and app[SETTINGS] (kept on an
    application that is still being set up, so its routes share one cache)."""
    found = state.get(CIPHER)
    if found is not None:
        return cast(TenantCipher, found)
    made = TenantCipher.from_settings(state[REDIS], state[SETTINGS])
    if isinstance(state, web.Application) and not state.frozen:
        state[CIPHER] = made
    return made
