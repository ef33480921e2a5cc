"""Lua scripts run by their SHA: the one way every module runs a script on Redis.

A :class:`LuaScript` is made once, at import, from a string or from a file shipped in a
package (:meth:`LuaScript.from_file`), or from several files composed by
:func:`lua_source` (shared ``local function`` files first, then the script that calls
them: no global state in Redis); its SHA1 is computed here, so nothing has to be loaded
before the first call. What a caller may rely on:

- :meth:`LuaScript.run` sends ``EVALSHA``; when Redis answers ``NOSCRIPT`` (first use on
  that server, after a restart or a ``SCRIPT FLUSH``) it sends ``EVAL`` with the text,
  which runs the script and caches it for the next ``EVALSHA``. An ``EVALSHA`` that got
  ``NOSCRIPT`` ran nothing, so the retry never runs a script twice.
- :meth:`LuaScript.bind` gives a callable with redis-py's ``register_script`` shape
  (``await script(keys=[...], args=[...])``), on any client, the shards' pipelined one
  included (where both commands go out on its shared connection).
- In a pipeline: :meth:`LuaScript.load` queues ``SCRIPT LOAD`` and :meth:`LuaScript.queue`
  an ``EVALSHA``; commands of a pipeline run in order on one connection, so the
  ``EVALSHA`` calls after the load always find the script.
- On a lean link (:class:`mtdesk.core.resp.Link`): :meth:`LuaScript.evalsha` and
  :meth:`LuaScript.load_command` build the commands; :func:`is_noscript` reads a reply.

Every call names its keys (``KEYS``) apart from its arguments (``ARGV``), as a Redis
Cluster needs to route a script (all keys of one call in one hash slot).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import hiredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

from mtdesk.core.redis import Redis
from mtdesk.core.resp import Arg

Key = str | bytes


@cache
def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def lua_source(package: str, *names: str, prelude: str = "") -> str:
    """The script made of the files ``names`` (paths inside ``package``) joined in
    order, after ``prelude`` (e.g. constants generated from Python)."""
    return prelude + "\n".join(_read(package, name) for name in names)


class LuaScript:
    """One Lua script: its text, its SHA1 and the ways to run it."""

    __slots__ = ("name", "source", "sha")

    _registry: dict[str, LuaScript] = {}

    def __init__(self, source: str | bytes, *, name: str = "script") -> None:
        self.source: bytes = source.encode() if isinstance(source, str) else source
        self.sha: str = hashlib.sha1(self.source).hexdigest()
        self.name = name  # for messages and reprs; never sent to Redis
        LuaScript._registry.setdefault(self.sha, self)

    @classmethod
    def registered(cls) -> list[LuaScript]:
        """Every script made so far in this process (one per text)."""
        return list(cls._registry.values())

    @classmethod
    def from_file(cls, package: str, filename: str) -> LuaScript:
        """The script in ``filename`` shipped with ``package`` (e.g.
        ``LuaScript.from_file("mtdesk.gateway", "ingest.lua")``); read once, now."""
        return cls(lua_source(package, filename), name=filename)

    def __repr__(self) -> str:
        return f"LuaScript({self.name}, sha={self.sha[:12]})"

    async def run(self, redis: Redis, keys: Sequence[Key] = (), args: Sequence[Arg] = ()) -> Any:
        """The script's reply (redis-py's conversion of it); Redis errors raised as
        redis-py raises them."""
        try:
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.execute_command("EVAL", self.source, len(keys), *keys, *args)

    def bind(self, redis: Redis) -> BoundScript:
        """This script on ``redis``: ``await bound(keys=[...], args=[...])``."""
        return BoundScript(self, redis)

    # --- pipelines ----------------------------------------------------------------------

    def load(self, pipe: Pipeline | ClusterPipeline) -> None:
        """Queue ``SCRIPT LOAD`` in ``pipe`` (its reply is the SHA): put it before the
        :meth:`queue` calls of a pipeline so they never meet ``NOSCRIPT``. A cluster's
        pipeline spreads over masters (a load cannot precede every call on its master):
        there the reply is the SHA still (an ``ECHO``) and :meth:`queue` sends ``EVAL``."""
        if isinstance(pipe, ClusterPipeline):
            pipe.execute_command("ECHO", self.sha, target_nodes=pipe.cluster_client.get_default_node())
            return
        pipe.execute_command("SCRIPT LOAD", self.source)

    def queue(self, pipe: Pipeline | ClusterPipeline, keys: Sequence[Key] = (), args: Sequence[Arg] = ()) -> None:
        """Queue one ``EVALSHA`` of this script in ``pipe`` (``EVAL`` in a cluster's)."""
        if isinstance(pipe, ClusterPipeline):
            pipe.execute_command(*self.eval(keys, args))
            return
        pipe.execute_command(*self.evalsha(keys, args))

    # --- lean links ---------------------------------------------------------------------

    def evalsha(self, keys: Sequence[Key], args: Sequence[Arg]) -> tuple[Arg, ...]:
        """The ``EVALSHA`` command as a tuple of arguments, for a lean link."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def eval(self, keys: Sequence[Key], args: Sequence[Arg]) -> tuple[Arg, ...]:
        """The ``EVAL`` command (the source itself: never NOSCRIPT) as a tuple of
        arguments."""
        return ("EVAL", self.source, len(keys), *keys, *args)

    def load_command(self) -> tuple[Arg, ...]:
        """The ``SCRIPT LOAD`` command for a lean link (send it before the ``EVALSHA``
        commands in the same write: one round trip reloads and runs)."""
        return ("SCRIPT", "LOAD", self.source)


class BoundScript:
    """A :class:`LuaScript` on one client, called like redis-py's registered scripts."""

    __slots__ = ("script", "_redis")

    def __init__(self, script: LuaScript, redis: Redis) -> None:
        self.script = script
        self._redis = redis

    async def __call__(self, keys: Sequence[Key] = (), args: Sequence[Arg] = ()) -> Any:
        return await self.script.run(self._redis, keys, args)

    def __repr__(self) -> str:
        return f"BoundScript({self.script.name})"


def is_noscript(reply: object) -> bool:
    """Whether a raw reply read from a lean link is Redis' ``NOSCRIPT`` error."""
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
