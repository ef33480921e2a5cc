"""Typed aiohttp application state shared by the gateway and admin routes."""

from __future__ import annotations

from aiohttp import web

from mtdesk.core.clock import Clock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
CLOCK = web.AppKey("clock", Clock)
