"""Lua scripts kept as package data files, composed into one script text.

``lua_source("mtdesk.core", "lua/history_append.lua", "lua/append.lua")`` is the files'
texts joined in order (functions first, then the script that calls them), after an
optional ``prelude`` (e.g. constants generated from Python). The text is what
``redis.register_script`` takes; a script's functions are ``local function``s, so one
file may be shared by several scripts without any global state in Redis.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def _read(package: str, name: str) -> str:
    return files(package).joinpath(name).read_text(encoding="utf-8")


def lua_source(package: str, *names: str, prelude: str = "") -> str:
    """The script made of ``names`` (paths inside ``package``), in order."""
    return prelude + "\n".join(_read(package, name) for name in names)
